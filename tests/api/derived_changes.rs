//! Derived changes pushed over HTTP and WebSocket (issue 10): a segment entered with a touchpoint and left by the
//! window's expiry, a computed trait recomputed on both sides of a merge and of its unmerge, a withdrawal that
//! refuses every derived field on the next read and sends a revocation, a profiling denial that deletes the derived
//! state in its own transaction, a definition change backfilled while the old version answers, and webhooks that
//! are signed, retried and deduplicated.
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, http::HeaderMap, routing::post};
use chrono::Utc;
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    subscriptions::{Socket, next_json, ready_socket, send},
    touchpoints::{grant, record},
};

fn definer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "profiles:write"], "support")
}

fn engine(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], "personalization")
}

pub(crate) const SEGMENT: &str = "mutation($i: DefineSegmentInput!) { defineSegment(input: $i) { key version } }";
const TRAIT: &str = "mutation($i: DefineComputedTraitInput!) { defineComputedTrait(input: $i) { key version } }";
const CHANGES: &str = "subscription($after: String) { derivedChanges(after: $after) {
    position kind customerId key purpose cause value previous reason at } }";

pub(crate) fn purchase(email: &str, key: &str, at: chrono::DateTime<Utc>, value: f64) -> Value {
    json!({ "identities": [{ "kind": "EMAIL", "value": email }], "channel": "WEB", "type": "PURCHASE",
            "source": "shop", "occurredAt": at.to_rfc3339(), "idempotencyKey": key, "value": value, "currency": "DKK" })
}

/// A customer known by `email` who consented to personalization before anything else happened (and whose
/// derived state the worker has computed since).
pub(crate) async fn consenting(app: &TestApp, email: &str) -> String {
    let id = app.upsert(&app.admin(), json!([{ "kind": "EMAIL", "value": email }]), None).await;
    grant(app, &id, "personalization", "GRANTED").await;
    settle(app).await;
    id
}

/// Waits until the worker has taken every queued customer (and no backfill job is pending), so that the next
/// write's events carry its own cause.
pub(crate) async fn settle(app: &TestApp) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.db().await;
    let backend = db.get_database_backend();
    for _ in 0..400 {
        let row = db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT (SELECT COUNT(*) FROM derived_dirty) + (SELECT COUNT(*) FROM jobs WHERE state IN ('QUEUED', 'RUNNING')) AS n",
            ))
            .await
            .expect("count")
            .expect("a row");
        if row.try_get::<i64>("", "n").expect("n") == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the derived-state queue did not drain in 10 s");
}

pub(crate) async fn define(app: &TestApp, mutation: &str, input: Value) {
    app.data(&definer(app), mutation, json!({ "i": input })).await;
}

pub(crate) fn within_days(days: u32) -> Value {
    json!({ "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] }, "window": { "lastDays": days } },
            "op": "GTE", "value": 1 })
}

/// A subscription to the tenant's derived changes for `token`, replaying from the start of the outbox.
async fn subscribe(app: &TestApp, token: &str) -> Socket {
    let mut socket = ready_socket(app, token).await;
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "d", "payload": { "query": CHANGES, "variables": { "after": "0" } } }),
    )
    .await;
    socket
}

/// Reads events until `done` holds for the events so far (or fails after `within`).
async fn until(socket: &mut Socket, within: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&seen) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = tokio::time::timeout(left, next_json(socket)).await.ok().flatten();
        let Some(message) = message else { panic!("no more events; so far: {seen:?}") };
        assert_eq!(message["type"], "next", "{message}");
        seen.push(message["payload"]["data"]["derivedChanges"].clone());
    }
    seen
}

fn has(events: &[Value], customer: &str, kind: &str, key: Option<&str>, cause: &str) -> bool {
    events.iter().any(|e| {
        e["customerId"] == customer && e["kind"] == kind && e["cause"] == cause && key.is_none_or(|k| e["key"] == k)
    })
}

async fn a_segment_is_entered_with_a_touchpoint_and_left_when_its_window_passes(app: TestApp) {
    define(&app, SEGMENT, json!({ "key": "recent_buyer", "purpose": "personalization", "condition": within_days(7) }))
        .await;
    let id = consenting(&app, "edge@example.com").await;
    let mut socket = subscribe(&app, &engine(&app)).await;
    // In the segment for 4 more seconds.
    let at = Utc::now() - chrono::Duration::days(7) + chrono::Duration::seconds(4);
    record(&app, json!([purchase("edge@example.com", "e1", at, 10.0)])).await;
    let entered = until(&mut socket, Duration::from_secs(10), |seen| {
        has(seen, &id, "SEGMENT_ENTERED", Some("recent_buyer"), "TOUCHPOINT")
    })
    .await;
    let entered_at = Utc::now();
    assert!(entered_at < at + chrono::Duration::days(7), "entered before the edge: {entered:?}");
    let exited = until(&mut socket, Duration::from_secs(15), |seen| {
        has(seen, &id, "SEGMENT_EXITED", Some("recent_buyer"), "WINDOW_EXPIRY")
    })
    .await;
    // The exit is announced within seconds of the edge, never before it.
    let edge = at + chrono::Duration::days(7);
    let announced = Utc::now();
    assert!(announced >= edge, "exit announced before the window passed: {exited:?}");
    assert!(
        (announced - edge).num_milliseconds() < 3000,
        "exit {} ms after the edge",
        (announced - edge).num_milliseconds()
    );
    let exit = exited.iter().find(|e| e["kind"] == "SEGMENT_EXITED").expect("exit");
    let enter = entered.iter().find(|e| e["kind"] == "SEGMENT_ENTERED").expect("enter");
    let position = |e: &Value| e["position"].as_str().and_then(|p| p.parse::<i64>().ok()).expect("position");
    assert!(position(exit) > position(enter), "positions follow commit order");
    assert_eq!(exit["purpose"], "personalization");
}

async fn a_merge_and_its_unmerge_recompute_both_sides_at_once(app: TestApp) {
    define(
        &app,
        TRAIT,
        json!({ "key": "spend", "purpose": "personalization",
                "aggregation": { "aggregate": "SUM", "of": "value", "filter": { "types": ["PURCHASE"] } } }),
    )
    .await;
    let a = consenting(&app, "ma@example.com").await;
    let b = consenting(&app, "mb@example.com").await;
    record(&app, json!([purchase("ma@example.com", "m1", Utc::now() - chrono::Duration::days(1), 100.0)])).await;
    record(&app, json!([purchase("mb@example.com", "m2", Utc::now() - chrono::Duration::days(2), 50.0)])).await;
    settle(&app).await;
    let mut socket = subscribe(&app, &engine(&app)).await;
    let trait_is = |seen: &[Value], who: &str, value: Value, cause: &str| {
        seen.iter().any(|e| {
            e["customerId"] == who && e["kind"] == "TRAIT_CHANGED" && e["value"] == value && e["cause"] == cause
        })
    };
    until(&mut socket, Duration::from_secs(10), |seen| {
        trait_is(seen, &a, json!(100.0), "TOUCHPOINT") && trait_is(seen, &b, json!(50.0), "TOUCHPOINT")
    })
    .await;
    let officer = app.token("acme", &["profiles:read", "profiles:write"], "support");
    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    let merged = app.data(&officer, merge, json!({ "s": a, "m": b })).await["mergeCustomers"]["id"].clone();
    let seen = until(&mut socket, Duration::from_secs(10), |seen| {
        trait_is(seen, &a, json!(150.0), "MERGE") && trait_is(seen, &b, Value::Null, "MERGE")
    })
    .await;
    let survivor = seen.iter().rev().find(|e| e["customerId"] == a && e["cause"] == "MERGE").expect("survivor");
    assert_eq!(survivor["previous"], json!(100.0), "{survivor}");
    let unmerge = "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }";
    app.data(&officer, unmerge, json!({ "id": merged })).await;
    until(&mut socket, Duration::from_secs(10), |seen| {
        trait_is(seen, &a, json!(100.0), "UNMERGE") && trait_is(seen, &b, json!(50.0), "UNMERGE")
    })
    .await;
}

async fn a_withdrawal_refuses_every_derived_field_and_sends_a_revocation(app: TestApp) {
    define(&app, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": within_days(30) })).await;
    let id = consenting(&app, "wd@example.com").await;
    record(&app, json!([purchase("wd@example.com", "w1", Utc::now() - chrono::Duration::days(1), 20.0)])).await;
    let mut socket = subscribe(&app, &engine(&app)).await;
    until(&mut socket, Duration::from_secs(10), |seen| has(seen, &id, "SEGMENT_ENTERED", Some("buyer"), "TOUCHPOINT"))
        .await;
    grant(&app, &id, "personalization", "WITHDRAWN").await;
    let seen = until(&mut socket, Duration::from_secs(10), |seen| has(seen, &id, "REVOKED", None, "CONSENT")).await;
    let revoked = seen.iter().find(|e| e["kind"] == "REVOKED").expect("revocation");
    assert_eq!(revoked["reason"], "WITHDRAWN", "{revoked}");
    assert_eq!((revoked["key"].clone(), revoked["value"].clone()), (Value::Null, Value::Null), "no payload");
    // The very next read refuses every derived field.
    let read = "query($id: UUID!) { customer(id: $id) { id segments { key } computedTraits { key }
        scores { rfm { code } } affinities(dimension: \"category\") { __typename } preferredChannel { channel } } }";
    let (_, body) = app.gql(&engine(&app), read, json!({ "id": id })).await;
    let customer = &body["data"]["customer"];
    assert_eq!(customer["id"], id.as_str(), "{body}");
    for field in ["segments", "computedTraits", "scores", "affinities", "preferredChannel"] {
        assert_eq!(customer[field], Value::Null, "{field} refused: {body}");
    }
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
}

async fn derived_rows(app: &TestApp, id: &str) -> (i64, i64) {
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.db().await;
    let backend = db.get_database_backend();
    let mut counts = Vec::new();
    for table in ["derived_values", "derived_subjects"] {
        let sql = match backend {
            sea_orm::DbBackend::Postgres => format!("SELECT COUNT(*) AS n FROM {table} WHERE customer_id = $1"),
            _ => format!("SELECT COUNT(*) AS n FROM {table} WHERE customer_id = ?"),
        };
        let uuid: uuid::Uuid = id.parse().expect("uuid");
        let row = db
            .query_one_raw(Statement::from_sql_and_values(backend, sql, [uuid.into()]))
            .await
            .expect("count")
            .expect("a row");
        counts.push(row.try_get::<i64>("", "n").expect("n"));
    }
    (counts[0], counts[1])
}

async fn a_profiling_denial_deletes_the_derived_state_in_its_own_transaction(app: TestApp) {
    define(&app, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": within_days(30) })).await;
    let id = consenting(&app, "pd@example.com").await;
    record(&app, json!([purchase("pd@example.com", "p1", Utc::now() - chrono::Duration::days(1), 20.0)])).await;
    let mut kept = (0, 0);
    for _ in 0..100 {
        kept = derived_rows(&app, &id).await;
        if kept == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(kept, (1, 1), "the membership and its due time are kept");
    grant(&app, &id, "profiling", "DENIED").await;
    assert_eq!(derived_rows(&app, &id).await, (0, 0), "deleted when the denial committed");
    // And the worker does not compute them again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(derived_rows(&app, &id).await, (0, 0));
    // A new touchpoint does not profile them either.
    record(&app, json!([purchase("pd@example.com", "p2", Utc::now(), 5.0)])).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(derived_rows(&app, &id).await, (0, 0));
}

async fn export_and_erasure_cover_the_derived_data(app: TestApp) {
    define(&app, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": within_days(30) })).await;
    let id = consenting(&app, "ee@example.com").await;
    record(&app, json!([purchase("ee@example.com", "x1", Utc::now() - chrono::Duration::days(1), 20.0)])).await;
    for _ in 0..100 {
        if derived_rows(&app, &id).await == (1, 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let officer =
        app.token("acme", &["profiles:read", "touchpoints:read", "privacy:admin", "pii:read"], "privacy_admin");
    let doc = app.data(&officer, "query($id: UUID!) { exportCustomer(id: $id) }", json!({ "id": id })).await;
    let doc = &doc["exportCustomer"];
    assert_eq!(doc["derived"][0]["key"], "buyer", "{doc}");
    assert_eq!(doc["derived"][0]["value"], true, "{doc}");
    let kinds: Vec<&str> =
        doc["derivedChanges"].as_array().expect("changes").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"SEGMENT_ENTERED"), "{doc}");
    app.data(&officer, "mutation($id: UUID!) { eraseCustomer(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(derived_rows(&app, &id).await, (0, 0), "derived state erased");
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.db().await;
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "SELECT COUNT(*) AS n FROM derived_events WHERE customer_id = $1",
        _ => "SELECT COUNT(*) AS n FROM derived_events WHERE customer_id = ?",
    };
    let uuid: uuid::Uuid = id.parse().expect("uuid");
    let row =
        db.query_one_raw(Statement::from_sql_and_values(backend, sql, [uuid.into()])).await.expect("q").expect("row");
    assert_eq!(row.try_get::<i64>("", "n").expect("n"), 0, "the change events that named them are gone");
}

fn frequent_refits(config: &mut kontakt::config::Config) {
    config.score_refit_secs = 2;
}

async fn score_bands_are_announced_and_the_model_is_refitted_on_schedule(app: TestApp) {
    // 300 CDNOW buyers (enough for both models to fit); a repeat buyer silent for months is the one a
    // personalization engine watches.
    let sample: Vec<(u32, u32, f64, f64, f64)> = crate::scores::cdnow().into_iter().take(300).collect();
    let (watched_id, ..) =
        *sample.iter().find(|(_, x, t_x, t, _)| *x >= 2 && t - t_x >= 20.0).expect("a lapsed repeat buyer");
    let watched_email = format!("cdnow{watched_id}@example.com");
    let watched = consenting(&app, &watched_email).await;
    let now = Utc::now() - chrono::Duration::minutes(1);
    let week = |w: f64| chrono::Duration::seconds((w * 7.0 * 86_400.0).round() as i64);
    let mut items = Vec::new();
    for (id, x, t_x, t, zbar) in &sample {
        let email = format!("cdnow{id}@example.com");
        let first = now - week(*t);
        items.push(purchase(&email, &format!("cd{id}-0"), first, zbar.max(1.0)));
        for i in 1..=*x {
            items.push(purchase(
                &email,
                &format!("cd{id}-{i}"),
                first + week(t_x * f64::from(i) / f64::from(*x)),
                *zbar,
            ));
        }
    }
    for chunk in items.chunks(250) {
        let result = record(&app, json!(chunk)).await;
        assert_eq!(result["rejected"], 0, "{}", result["results"]);
    }
    settle(&app).await;
    let mut socket = subscribe(&app, &engine(&app)).await;

    // The tenant's first fit is on demand; it announces the bands of every buyer under the new model.
    let job = app.run_job(&definer(&app), "mutation { fitScoreModel { id } }").await;
    assert_eq!(job["result"]["purchaseModel"]["fitted"], true, "{job}");
    assert_ne!(job["requestedBy"], "kontakt:schedule");
    let banded = until(&mut socket, Duration::from_secs(10), |seen| {
        has(seen, &watched, "SCORE_BAND_CHANGED", Some("rfm"), "SCORE_MODEL")
            && has(seen, &watched, "SCORE_BAND_CHANGED", Some("churnRisk"), "SCORE_MODEL")
    })
    .await;
    let band = |events: &[Value], key: &str| {
        events
            .iter()
            .rev()
            .find(|e| e["customerId"] == watched.as_str() && e["key"] == key)
            .map(|e| (e["value"].clone(), e["previous"].clone()))
            .expect("a band event")
    };
    let (rfm, previous) = band(&banded, "rfm");
    assert!(previous.is_null(), "the first band has no previous: {banded:?}");
    let scores = app
        .data(
            &engine(&app),
            "query($id: UUID!) { customer(id: $id) { scores { rfm { segment } churnRisk { band } } } }",
            json!({ "id": watched }),
        )
        .await;
    assert_eq!(scores["customer"]["scores"]["rfm"]["segment"], rfm, "the event carries the band a read serves");
    assert_eq!(scores["customer"]["scores"]["churnRisk"]["band"], band(&banded, "churnRisk").0);
    // Only the buyer who consented to the receiver's purpose is sent a band; the others only a payload-free
    // revocation.
    for event in &banded {
        if event["customerId"] != watched.as_str() {
            assert_eq!(event["kind"], "REVOKED", "{event}");
            assert!(event["value"].is_null(), "{event}");
        }
    }

    // Buying again today moves the watched buyer to the top band, announced with the touchpoint as its cause.
    let today: Vec<Value> =
        (0..5).map(|n| purchase(&watched_email, &format!("today-{n}"), Utc::now(), 500.0)).collect();
    record(&app, json!(today)).await;
    let moved = until(&mut socket, Duration::from_secs(10), |seen| {
        has(seen, &watched, "SCORE_BAND_CHANGED", Some("rfm"), "TOUCHPOINT")
    })
    .await;
    let (now_band, was) = band(&moved, "rfm");
    assert_eq!(now_band, "CHAMPIONS", "{moved:?}");
    assert_eq!(was, rfm, "the previous band is the one announced before");

    // The schedule fits the model again once it is older than KONTAKT_SCORE_REFIT_SECS (2 s here), once, as
    // `kontakt:schedule`.
    let admin = definer(&app);
    let mut scheduled = Vec::new();
    for _ in 0..100 {
        let data =
            app.data(&admin, "{ jobs(first: 20) { edges { node { kind state requestedBy } } } }", json!({})).await;
        scheduled = data["jobs"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"].clone())
            .filter(|n| n["requestedBy"] == "kontakt:schedule")
            .collect();
        if scheduled.iter().any(|n| n["state"] == "SUCCEEDED") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = scheduled.iter().find(|n| n["state"] == "SUCCEEDED").unwrap_or_else(|| panic!("{scheduled:?}"));
    assert_eq!(done["kind"], "FIT_SCORE_MODEL");
}

fn slow_jobs(config: &mut kontakt::config::Config) {
    // The backfill job starts at the runner's next look, seconds after the definition changes.
    config.job_poll_ms = 4_000;
}

async fn a_definition_change_is_backfilled_while_the_old_version_answers(app: TestApp) {
    define(&app, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": within_days(30) })).await;
    let once = consenting(&app, "once@example.com").await;
    let twice = consenting(&app, "twice@example.com").await;
    record(&app, json!([purchase("once@example.com", "o1", Utc::now() - chrono::Duration::days(1), 5.0)])).await;
    record(
        &app,
        json!([
            purchase("twice@example.com", "t1", Utc::now() - chrono::Duration::days(1), 5.0),
            purchase("twice@example.com", "t2", Utc::now() - chrono::Duration::days(2), 5.0)
        ]),
    )
    .await;
    let mut socket = subscribe(&app, &engine(&app)).await;
    until(&mut socket, Duration::from_secs(10), |seen| {
        has(seen, &once, "SEGMENT_ENTERED", Some("buyer"), "TOUCHPOINT")
            && has(seen, &twice, "SEGMENT_ENTERED", Some("buyer"), "TOUCHPOINT")
    })
    .await;
    let two_purchases =
        json!({ "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] } }, "op": "GTE", "value": 2 });
    define(&app, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": two_purchases })).await;
    // Version 2 is stored and not yet active: version 1 answers, in the same operation.
    let both =
        "query($id: UUID!) { definitions { key version activatedAt } customer(id: $id) { segments { key version } } }";
    let now = app.data(&engine(&app), both, json!({ "id": once })).await;
    assert_eq!(now["definitions"][0]["version"], 2, "{now}");
    assert_eq!(now["definitions"][0]["activatedAt"], Value::Null, "{now}");
    assert_eq!(now["customer"]["segments"], json!([{ "key": "buyer", "version": 1 }]), "the old version answers");
    // The backfill runs as a job with progress, announces what the new version changes, then activates it.
    let jobs = "{ jobs(first: 5) { nodes { id kind } } }";
    let listed = app.data(&definer(&app), jobs, json!({})).await;
    let job = listed["jobs"]["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|j| j["kind"] == "BACKFILL_DEFINITIONS"))
        .cloned()
        .expect("a backfill job");
    let done = app.wait_for_job(&definer(&app), job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    assert_eq!(done["progress"]["done"], done["progress"]["total"], "{done}");
    let seen = until(&mut socket, Duration::from_secs(10), |seen| {
        has(seen, &once, "SEGMENT_EXITED", Some("buyer"), "DEFINITION_CHANGE")
    })
    .await;
    assert!(!has(&seen, &twice, "SEGMENT_EXITED", Some("buyer"), "DEFINITION_CHANGE"), "still in: {seen:?}");
    let after = app.data(&engine(&app), both, json!({ "id": once })).await;
    assert!(after["definitions"][0]["activatedAt"].is_string(), "{after}");
    assert_eq!(after["customer"]["segments"], json!([]), "version 2 answers once activated");
    let other = app.data(&engine(&app), both, json!({ "id": twice })).await;
    assert_eq!(other["customer"]["segments"], json!([{ "key": "buyer", "version": 2 }]));
}

/// What the test endpoint received: headers and body per request.
type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A local endpoint that fails the first `failures` requests with 500 and accepts the rest.
async fn endpoint(failures: usize) -> (String, Received) {
    let received: Received = Arc::default();
    let state = received.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut list = state.lock().expect("lock");
                list.push((headers, body));
                if list.len() <= failures {
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), received)
}

fn fast_retries(config: &mut kontakt::config::Config) {
    config.webhook_retry_ms = 100;
}

fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let Some(header) = headers.get("kontakt-signature").and_then(|v| v.to_str().ok()) else { return false };
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else { return false };
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let Ok(tag) =
        (0..v1.len()).step_by(2).map(|i| u8::from_str_radix(&v1[i..i + 2], 16)).collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    aws_lc_rs::hmac::verify(&key, format!("{t}.{body}").as_bytes(), &tag).is_ok()
}

async fn webhooks_are_signed_retried_deduplicated_and_revoked(app: TestApp) {
    define(&app, SEGMENT, json!({ "key": "buyer", "purpose": "personalization", "condition": within_days(30) })).await;
    let (url, received) = endpoint(2).await;
    let register =
        "mutation($i: RegisterWebhookInput!) { registerWebhook(input: $i) { secret webhook { id cursor } } }";
    let registered = app
        .data(&definer(&app), register, json!({ "i": { "url": url, "purpose": "personalization" } }))
        .await["registerWebhook"]
        .clone();
    let secret = registered["secret"].as_str().expect("secret").to_owned();
    let hook = registered["webhook"]["id"].as_str().expect("id").to_owned();
    let id = consenting(&app, "hook@example.com").await;
    record(&app, json!([purchase("hook@example.com", "h1", Utc::now() - chrono::Duration::days(1), 5.0)])).await;
    // Two failures, then delivered: three requests for one event, all with the same idempotency key.
    let mut requests = Vec::new();
    for _ in 0..100 {
        requests = received.lock().expect("lock").clone();
        if requests.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(requests.len(), 3, "two failed attempts and one delivery");
    let keys: Vec<&str> =
        requests.iter().map(|(h, _)| h.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("")).collect();
    assert!(keys[0].starts_with(&format!("{hook}:")), "{keys:?}");
    assert!(keys.iter().all(|k| *k == keys[0]), "the same key on every retry: {keys:?}");
    for (headers, body) in &requests {
        assert!(verify(&secret, headers, body), "signed with the webhook's secret: {body}");
        assert!(!verify("whsec_other", headers, body), "a wrong secret does not verify");
    }
    let event: Value = serde_json::from_str(&requests[2].1).expect("json");
    assert_eq!((event["kind"].clone(), event["key"].clone()), (json!("SEGMENT_ENTERED"), json!("buyer")), "{event}");
    assert_eq!(event["customerId"], id.as_str());
    assert_eq!(event["id"], keys[0]);
    let state = "{ webhooks { id delivered attempts lastStatus cursor } }";
    let listed = app.data(&definer(&app), state, json!({})).await;
    assert_eq!(listed["webhooks"][0]["delivered"], 1, "{listed}");
    assert_eq!(listed["webhooks"][0]["attempts"], 0, "{listed}");
    assert_eq!(listed["webhooks"][0]["lastStatus"], 200, "{listed}");
    // Nothing more is sent for that event: delivered once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.lock().expect("lock").len(), 3, "not sent again once acknowledged");

    // A withdrawal reaches the webhook as a revocation without payload.
    grant(&app, &id, "personalization", "WITHDRAWN").await;
    let mut revoked = None;
    for _ in 0..100 {
        revoked = received
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|(_, body)| serde_json::from_str::<Value>(body).ok())
            .find(|e| e["kind"] == "REVOKED");
        if revoked.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revoked = revoked.expect("a revocation");
    assert_eq!((revoked["customerId"].clone(), revoked["reason"].clone()), (json!(id), json!("WITHDRAWN")));
    assert_eq!((revoked["key"].clone(), revoked["value"].clone()), (Value::Null, Value::Null), "{revoked}");

    // Replay from the first event's position: sent again with the same key, consent applied as it stands now
    // (withdrawn: a revocation, not the membership).
    let position = event["position"].as_i64().expect("position").to_string();
    let before = received.lock().expect("lock").len();
    let replay = "mutation($id: UUID!, $p: String!) { replayWebhook(id: $id, fromPosition: $p) { cursor } }";
    app.data(&definer(&app), replay, json!({ "id": hook, "p": position })).await;
    let mut again = None;
    for _ in 0..100 {
        again = received.lock().expect("lock")[before..]
            .iter()
            .find(|(h, _)| h.get("idempotency-key").and_then(|v| v.to_str().ok()) == Some(keys[0]))
            .cloned();
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = again.expect("replayed with the same idempotency key");
    let replayed: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(replayed["kind"], "REVOKED", "consent is applied at send: {replayed}");

    // A production-style refusal: no scheme other than http(s).
    let (_, body) = app
        .gql(&definer(&app), register, json!({ "i": { "url": "ftp://example.com/x", "purpose": "personalization" } }))
        .await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "url", "{body}");
}

on_every_backend!(
    a_segment_is_entered_with_a_touchpoint_and_left_when_its_window_passes,
    a_merge_and_its_unmerge_recompute_both_sides_at_once,
    a_withdrawal_refuses_every_derived_field_and_sends_a_revocation,
    a_profiling_denial_deletes_the_derived_state_in_its_own_transaction,
    export_and_erasure_cover_the_derived_data,
    a_definition_change_is_backfilled_while_the_old_version_answers with slow_jobs,
    score_bands_are_announced_and_the_model_is_refitted_on_schedule with frequent_refits,
    webhooks_are_signed_retried_deduplicated_and_revoked with fast_retries,
);
