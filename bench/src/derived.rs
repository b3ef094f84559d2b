//! Derived-data scenarios (issue 10): ingestion while 100 definitions are kept up to date (`ingest-derived`), the
//! time from a write to its change event on a `derivedChanges` subscription (`derived-events`), and the backfill of
//! a new definition version over every customer (`backfill`).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use uuid::Uuid;

use crate::{
    Shared,
    scenarios::{ClientState, Judged, define_hundred, graphql, rfc3339},
};

const DEFINITIONS: &str = "{ definitions { key version } }";
const JOBS: &str = "{ jobs(first: 20) { nodes { id kind state progress { done total } startedAt finishedAt } } }";

/// Defines the 100 benchmark definitions unless they exist, then waits for their backfill to end (so that it does
/// not run during a measurement).
pub async fn ensure_hundred(shared: &Shared) -> anyhow::Result<()> {
    let body = graphql(shared, DEFINITIONS, json!({})).await.map_err(|e| anyhow::anyhow!("definitions: {e}"))?;
    let defined = body["data"]["definitions"]
        .as_array()
        .map_or(0, |list| list.iter().filter(|d| d["key"].as_str().is_some_and(|k| k.starts_with("bench_"))).count());
    if defined < 100 {
        define_hundred(shared).await?;
    }
    wait_for_backfills(shared, Duration::from_secs(1800)).await.map(|_| ())
}

/// Waits until no backfill job is queued or running; the last one finished, if any.
async fn wait_for_backfills(shared: &Shared, within: Duration) -> anyhow::Result<Option<Value>> {
    let deadline = Instant::now() + within;
    loop {
        let body = graphql(shared, JOBS, json!({})).await.map_err(|e| anyhow::anyhow!("jobs: {e}"))?;
        let jobs: Vec<Value> = body["data"]["jobs"]["nodes"]
            .as_array()
            .map(|l| l.iter().filter(|j| j["kind"] == "BACKFILL_DEFINITIONS").cloned().collect())
            .unwrap_or_default();
        if jobs.iter().all(|j| j["state"] != "QUEUED" && j["state"] != "RUNNING") {
            return Ok(jobs.into_iter().next());
        }
        if Instant::now() > deadline {
            anyhow::bail!("backfill jobs did not finish in {} s", within.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// When the subscription saw an event for each customer (the first one after the scenario started).
#[derive(Default)]
pub struct Arrivals {
    seen: Mutex<HashMap<Uuid, Instant>>,
    notify: Notify,
}

/// Subscribes to `derivedChanges` over WebSocket and records arrivals in the background.
pub async fn subscribe(shared: &Shared) -> anyhow::Result<Arc<Arrivals>> {
    let url = format!("{}/graphql/ws", shared.base.replacen("http", "ws", 1));
    let mut request = url.as_str().into_client_request().context("the WebSocket URL")?;
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.context("connecting the WebSocket")?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", shared.token) } });
    socket.send(Message::Text(init.to_string().into())).await?;
    let ack = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.context("no connection_ack")?;
    anyhow::ensure!(matches!(ack, Some(Ok(Message::Text(ref t))) if t.contains("connection_ack")), "no connection_ack");
    let subscribe = json!({ "type": "subscribe", "id": "bench", "payload": {
        "query": "subscription { derivedChanges { customerId kind } }" } });
    socket.send(Message::Text(subscribe.to_string().into())).await?;
    let arrivals = Arc::new(Arrivals::default());
    let sink = arrivals.clone();
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            let Ok(value) = serde_json::from_str::<Value>(&text) else { continue };
            let id = value["payload"]["data"]["derivedChanges"]["customerId"].as_str().and_then(|s| s.parse().ok());
            if let Some(id) = id {
                let now = Instant::now();
                sink.seen.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_insert(now);
                sink.notify.notify_waiters();
            }
        }
    });
    // The subscription becomes active asynchronously: give it a moment before the first write.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(arrivals)
}

/// One purchase by a new customer, then the wait for the first change event about them. The request's latency is
/// from sending the write to the event's arrival.
pub async fn one_event(shared: &Shared, state: &mut ClientState, arrivals: &Arrivals) -> Judged {
    let email = format!("bench-{}-{}-{}@events.example", shared.run_id, state.client, state.sent);
    let item = json!({
        "identities": [{ "kind": "EMAIL", "value": email }], "channel": "WEB", "type": "PURCHASE",
        "occurredAt": rfc3339(Utc::now()), "source": "kontakt-bench", "value": 42.0, "currency": "DKK",
        "idempotencyKey": format!("bench-{}-ev-{}-{}", shared.run_id, state.client, state.sent),
    });
    const RECORD_ID: &str = "mutation($tps: [TouchpointInput!]!) { recordTouchpoints(touchpoints: $tps) \
        { results { customerId } } }";
    let body = graphql(shared, RECORD_ID, json!({ "tps": [item] })).await?;
    let id: Uuid = body["data"]["recordTouchpoints"]["results"][0]["customerId"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("no customer id")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let notified = arrivals.notify.notified();
        if arrivals.seen.lock().unwrap_or_else(|p| p.into_inner()).remove(&id).is_some() {
            return Ok((1, 0));
        }
        if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
            return Err("no event within 10 s".to_owned());
        }
    }
}

/// A new version of `bench_segment_0` (alternating between two conditions), then the wait for its backfill. Items:
/// the customers the job computed.
pub async fn backfill(shared: &Shared, state: &mut ClientState) -> Judged {
    let threshold = 1 + (state.sent % 2);
    let condition = json!({ "all": [
        { "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] }, "window": { "lastDays": 30 } },
          "op": "GTE", "value": threshold },
        { "hasIdentity": "EMAIL" },
    ] });
    let define = "mutation($i: DefineSegmentInput!) { defineSegment(input: $i) { version } }";
    graphql(
        shared,
        define,
        json!({ "i": { "key": "bench_segment_0", "purpose": "personalization", "condition": condition } }),
    )
    .await?;
    let job = wait_for_backfills(shared, Duration::from_secs(600)).await.map_err(|e| e.to_string())?;
    let job = job.ok_or("no backfill job")?;
    if job["state"] != "SUCCEEDED" {
        return Err(format!("backfill {}", job["state"]));
    }
    Ok((job["progress"]["total"].as_u64().unwrap_or(0), 0))
}
