//! The cross-customer feed as a personalization engine uses it: resuming from its cursor while writers record
//! touchpoints concurrently, it must serve every committed touchpoint exactly once.
use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{reader, touchpoint, writer},
};

const RECORD: &str = "mutation($t: [TouchpointInput!]!) { recordTouchpoints(touchpoints: $t) {
    results { status touchpointId } } }";
const FEED: &str = "query($after: String) { touchpoints(first: 50, after: $after) {
    resumeCursor edges { node { id } } pageInfo { hasNextPage } } }";

const ROUNDS: usize = 5;
const WRITERS: usize = 6;
const BATCHES: usize = 8;
const BATCH_SIZE: usize = 3;

/// One page from the cursor: the ids served, the cursor to resume from (kept when the page is empty), whether
/// the feed says more is waiting.
async fn poll(app: &TestApp, token: &str, after: &mut Value, seen: &mut Vec<String>) -> bool {
    let data = app.data(token, FEED, json!({ "after": after })).await;
    let feed = &data["touchpoints"];
    for edge in feed["edges"].as_array().expect("edges") {
        seen.push(edge["node"]["id"].as_str().expect("id").to_owned());
    }
    if !feed["resumeCursor"].is_null() {
        *after = feed["resumeCursor"].clone();
    }
    feed["pageInfo"]["hasNextPage"] == true
}

async fn a_polling_engine_sees_every_committed_touchpoint_exactly_once(app: TestApp) {
    let token = reader(&app, "support");
    let mut after = Value::Null;
    let mut seen: Vec<String> = Vec::new();
    let mut acknowledged: HashSet<String> = HashSet::new();
    for round in 0..ROUNDS {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, url, token) = (app.client.clone(), app.url("/graphql"), writer(&app));
                tokio::spawn(async move {
                    let person = json!([{ "kind": "EMAIL", "value": format!("r{round}w{w}@example.com") }]);
                    let mut ids = Vec::new();
                    for b in 0..BATCHES {
                        let items: Vec<Value> = (0..BATCH_SIZE)
                            .map(|i| touchpoint(&format!("r{round}-w{w}-b{b}-{i}"), person.clone(), "PAGE_VIEW", 5))
                            .collect();
                        let body: Value = client
                            .post(&url)
                            .bearer_auth(&token)
                            .json(&json!({ "query": RECORD, "variables": { "t": items } }))
                            .send()
                            .await
                            .expect("request")
                            .json()
                            .await
                            .expect("json");
                        for result in body["data"]["recordTouchpoints"]["results"].as_array().expect("results") {
                            assert_eq!(result["status"], "CREATED", "{body}");
                            ids.push(result["touchpointId"].as_str().expect("id").to_owned());
                        }
                    }
                    ids
                })
            })
            .collect();
        // The engine polls while the writers write…
        while !writers.iter().all(|w| w.is_finished()) {
            poll(&app, &token, &mut after, &mut seen).await;
        }
        for w in writers {
            acknowledged.extend(w.await.expect("writer"));
        }
        // …then drains: everything acknowledged must arrive (waiting out transactions still in flight elsewhere).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let more = poll(&app, &token, &mut after, &mut seen).await;
            let served: HashSet<&String> = seen.iter().collect();
            if !more && acknowledged.iter().all(|id| served.contains(id)) {
                break;
            }
            if Instant::now() > deadline {
                break;
            }
            if !more {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let served: HashSet<&String> = seen.iter().collect();
        let missed = acknowledged.iter().filter(|id| !served.contains(id)).count();
        assert_eq!(
            missed,
            0,
            "round {round}: {missed} of {} acknowledged touchpoints were never served",
            acknowledged.len()
        );
        assert_eq!(served.len(), seen.len(), "round {round}: a touchpoint was served twice");
        assert_eq!(served.len(), acknowledged.len(), "round {round}: served something never acknowledged");
    }
    assert_eq!(acknowledged.len(), ROUNDS * WRITERS * BATCHES * BATCH_SIZE);
}

async fn a_cursor_from_before_commit_positions_still_resumes(app: TestApp) {
    let person = json!([{ "kind": "EMAIL", "value": "legacy@example.com" }]);
    let items: Vec<Value> =
        (0..3).map(|i| touchpoint(&format!("legacy-{i}"), person.clone(), "PAGE_VIEW", 5)).collect();
    let recorded = app.data(&writer(&app), RECORD, json!({ "t": items })).await;
    let ids: Vec<String> = recorded["recordTouchpoints"]["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["touchpointId"].as_str().expect("id").to_owned())
        .collect();
    let token = reader(&app, "support");
    // What the feed handed out when it paged by id alone.
    let old = kontakt::pagination::encode_cursor(ids[0].parse().expect("uuid"));
    let mut after = json!(old);
    let mut seen = Vec::new();
    assert!(!poll(&app, &token, &mut after, &mut seen).await);
    assert_eq!(seen, ids[1..].to_vec(), "resumes right after the touchpoint the old cursor names");

    let gone = kontakt::pagination::encode_cursor(uuid::Uuid::now_v7());
    let (_, body) = app.gql(&token, FEED, json!({ "after": gone })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    let (_, body) = app.gql(&token, FEED, json!({ "after": "bm90LWEtY3Vyc29y" })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
}

on_every_backend!(
    a_polling_engine_sees_every_committed_touchpoint_exactly_once,
    a_cursor_from_before_commit_positions_still_resumes,
);
