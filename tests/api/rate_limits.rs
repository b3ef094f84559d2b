//! Rate limits: GraphQL operations per tenant and subject (HTTP and WebSocket alike), tracking events per write key.
//! A limited request gets 429 with `Retry-After` and `RATE_LIMITED`; others are unaffected; after the wait it is served.
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    subscriptions::{next_json, ready_socket, send},
};

const KEY: &str = "rate-write-key-0123456789";
const OTHER_KEY: &str = "rate-write-key-other-0123";
const QUERY: &str = "{ viewer { tenant } }";

/// One operation a second with a burst of two, per subject; two events a second with a burst of two, per write key
/// (a low rate, so a loaded test machine cannot refill a bucket between the requests of a burst).
fn tight(config: &mut kontakt::config::Config) {
    config.rate_limit_per_second = Some(1);
    config.rate_limit_burst = Some(2);
    config.tracking_rate_limit_per_second = Some(1);
    config.tracking_rate_limit_burst = Some(2);
    config.write_keys = Some(format!("{KEY}=acme/web,{OTHER_KEY}=acme/shop").into());
}

fn token_for(app: &TestApp, tenant: &str, subject: &str) -> String {
    let mut claims = app.claims(tenant, &["profiles:read"], "support");
    claims["sub"] = json!(subject);
    app.sign(&claims)
}

/// POSTs `QUERY`; answers the status, `Retry-After` and body.
async fn ask(app: &TestApp, token: &str) -> (StatusCode, Option<u64>, Value) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": QUERY }))
        .send()
        .await
        .expect("request");
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, retry_after, response.json().await.expect("JSON body"))
}

/// Sends until refused (at most `tries` times); answers how many were served first and the refusal.
async fn until_limited(app: &TestApp, token: &str, tenant: &str, tries: usize) -> (usize, u64, Value) {
    for served in 0..tries {
        let (status, retry_after, body) = ask(app, token).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return (served, retry_after.expect("429 carries Retry-After"), body);
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"]["viewer"]["tenant"], tenant, "{body}");
    }
    panic!("{tries} requests in a row were never limited");
}

async fn a_burst_over_the_limit_is_refused_for_that_subject_only(app: TestApp) {
    let alice = token_for(&app, "acme", "alice");
    let (served, retry_after, body) = until_limited(&app, &alice, "acme", 6).await;
    assert!(served >= 2, "the burst of 2 is served first, then refused; served {served}");
    assert!(retry_after >= 1, "Retry-After is at least 1 second");
    assert_eq!(first_code(&body), "RATE_LIMITED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["retryAfterSeconds"], json!(retry_after), "{body}");
    assert!(body.get("data").is_none(), "a refused request runs nothing: {body}");

    // Another subject of the same tenant and another tenant have their own buckets.
    let (status, _, body) = ask(&app, &token_for(&app, "acme", "bob")).await;
    assert_eq!(status, StatusCode::OK, "another subject is unaffected: {body}");
    let (status, _, body) = ask(&app, &token_for(&app, "globex", "alice")).await;
    assert_eq!(status, StatusCode::OK, "another tenant is unaffected: {body}");

    // After the wait it names, the subject is served again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, body) = ask(&app, &alice).await;
    assert_eq!(status, StatusCode::OK, "served again after Retry-After: {body}");

    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(text.contains("kontakt_rate_limited_total{kind=\"graphql\"}"), "the refusal is counted");
}

/// Sends a tracking request with `key`; answers the status, `Retry-After` and body.
async fn track(app: &TestApp, key: &str, path: &str, body: Value) -> (StatusCode, Option<u64>, Value) {
    let response = app.client.post(app.url(path)).basic_auth(key, Some("")).json(&body).send().await.expect("request");
    let status = response.status();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, retry_after, response.json().await.expect("json"))
}

fn event(id: &str) -> Value {
    json!({ "type": "track", "messageId": id, "anonymousId": "anon-rate", "event": "Viewed",
            "timestamp": "2026-11-01T10:00:00Z" })
}

async fn a_write_key_over_its_event_limit_gets_429(app: TestApp) {
    let round = uuid::Uuid::new_v4().simple().to_string();
    // A batch of two events spends the burst of two: events count, not requests.
    let batch = json!({ "batch": [event(&format!("a-{round}")), event(&format!("b-{round}"))] });
    let (status, _, body) = track(&app, KEY, "/v1/batch", batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], 2, "{body}");

    let mut refused = None;
    for i in 0..4 {
        let (status, retry_after, body) = track(&app, KEY, "/v1/track", event(&format!("c{i}-{round}"))).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some((retry_after.expect("429 carries Retry-After"), body));
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (retry_after, body) = refused.expect("the write key is limited");
    assert!(retry_after >= 1, "Retry-After is at least 1 second");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");

    // Another write key of the same tenant has its own bucket.
    let (status, _, body) = track(&app, OTHER_KEY, "/v1/track", event(&format!("o-{round}"))).await;
    assert_eq!(status, StatusCode::OK, "another write key is unaffected: {body}");

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, _, body) = track(&app, KEY, "/v1/track", event(&format!("d-{round}"))).await;
    assert_eq!(status, StatusCode::OK, "served again after Retry-After: {body}");

    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(text.contains("kontakt_rate_limited_total{kind=\"tracking\"}"), "the refusal is counted");
}

/// The next `next` or `error` message for operation `id` (skipping `complete`s of earlier operations).
async fn answer_to(socket: &mut crate::subscriptions::Socket, id: &str) -> Value {
    loop {
        let message = next_json(socket).await.expect("the socket stays open and answers");
        if message["id"] == id && (message["type"] == "next" || message["type"] == "error") {
            return message;
        }
    }
}

async fn the_socket_is_limited_by_the_same_bucket(app: TestApp) {
    let carol = token_for(&app, "acme", "carol");
    let mut socket = ready_socket(&app, &carol).await;
    let mut limited = None;
    for i in 0..6 {
        let id = format!("q{i}");
        send(&mut socket, json!({ "type": "subscribe", "id": id, "payload": { "query": QUERY } })).await;
        let answer = answer_to(&mut socket, &id).await;
        let errors =
            if answer["type"] == "error" { answer["payload"].clone() } else { answer["payload"]["errors"].clone() };
        if errors.is_array() {
            limited = Some((i, errors[0].clone()));
            break;
        }
        assert_eq!(answer["payload"]["data"]["viewer"]["tenant"], "acme", "{answer}");
    }
    let (served, error) = limited.expect("the socket's operations are limited");
    assert!(served >= 2, "the burst of 2 is served first; served {served}");
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
    let retry_after = error["extensions"]["retryAfterSeconds"].as_u64().expect("retryAfterSeconds");
    assert!(retry_after >= 1, "{error}");

    // HTTP and the socket share the subject's bucket: HTTP is refused too, right now.
    let (status, _, body) = ask(&app, &carol).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");

    // The connection stays open: after the wait, the next operation is served on it.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    send(&mut socket, json!({ "type": "subscribe", "id": "again", "payload": { "query": QUERY } })).await;
    let answer = answer_to(&mut socket, "again").await;
    assert_eq!(answer["payload"]["data"]["viewer"]["tenant"], "acme", "{answer}");
}

on_every_backend!(
    a_burst_over_the_limit_is_refused_for_that_subject_only with tight,
    a_write_key_over_its_event_limit_gets_429 with tight,
    the_socket_is_limited_by_the_same_bucket with tight,
);
