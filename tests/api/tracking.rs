//! The Segment-compatible tracking API: write keys, batches with per-event errors, idempotency on messageId,
//! identity resolution, `context.consent` and Global Privacy Control.
use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_with};

const KEY: &str = "test-write-key-0123456789";

async fn app_with_key(backend: Backend) -> Option<TestApp> {
    spawn_with(backend, |c| c.write_keys = Some(format!("{KEY}=acme/web"))).await
}

async fn send(app: &TestApp, path: &str, body: &Value, gpc: bool) -> (StatusCode, Value) {
    let mut req = app.client.post(app.url(path)).basic_auth(KEY, Some("")).json(body);
    if gpc {
        req = req.header("Sec-GPC", "1");
    }
    let response = req.send().await.expect("request");
    (response.status(), response.json().await.expect("json"))
}

fn batch() -> Value {
    json!({ "batch": [
        { "type": "page", "messageId": "m1", "anonymousId": "anon-7", "name": "Home", "timestamp": "2026-11-01T10:00:00Z",
          "context": { "page": { "url": "https://shop.example/" } } },
        { "type": "track", "messageId": "m2", "anonymousId": "anon-7", "userId": "user-7", "event": "Order Completed",
          "timestamp": "2026-11-01T10:05:00Z", "properties": { "revenue": 80.0, "currency": "EUR" },
          "context": { "traits": { "email": "Shopper@Example.com" } } },
        { "type": "identify", "messageId": "m3", "userId": "user-7", "traits": { "email": "shopper@example.com", "firstName": "Sam" } },
        { "type": "track", "messageId": "m4", "event": "No Identity" },
        { "type": "track", "messageId": "m5", "anonymousId": "anon-7", "event": "Product Viewed", "timestamp": "yesterday" }
    ] })
}

async fn a_segment_batch_lands_on_one_customer_and_replays_are_harmless(app: TestApp) {
    let (status, summary) = send(&app, "/v1/batch", &batch(), false).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!((summary["stored"].as_i64(), summary["identified"].as_i64()), (Some(2), Some(1)), "{summary}");
    let rejected = summary["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["messageId"], "m4");
    assert_eq!(rejected[0]["field"], "userId");
    assert_eq!(rejected[1]["field"], "timestamp");

    let (_, replay) = send(&app, "/v1/batch", &batch(), false).await;
    assert_eq!((replay["stored"].as_i64(), replay["duplicates"].as_i64()), (Some(0), Some(2)), "{replay}");

    let token = app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "support");
    let data = app
        .data(
            &token,
            r#"{ customerByIdentity(identity: {kind: EMAIL, value: "shopper@example.com"}) {
                givenName identities { kind value source } touchpoints { totalCount edges { node { type channel value currency source } } } } }"#,
            json!({}),
        )
        .await;
    let customer = &data["customerByIdentity"];
    assert_eq!(customer["givenName"], "Sam");
    assert_eq!(customer["touchpoints"]["totalCount"], 2);
    assert_eq!(
        customer["touchpoints"]["edges"][0]["node"],
        json!({ "type": "PURCHASE", "channel": "WEB", "value": 80.0, "currency": "EUR", "source": "web" })
    );
    let kinds: Vec<&str> =
        customer["identities"].as_array().expect("ids").iter().filter_map(|i| i["kind"].as_str()).collect();
    assert!(kinds.contains(&"ANONYMOUS_ID") && kinds.contains(&"EXTERNAL_ID") && kinds.contains(&"EMAIL"), "{kinds:?}");
}

async fn consent_context_and_global_privacy_control_become_consents(app: TestApp) {
    let event = json!({ "userId": "gpc-user", "event": "Product Viewed", "messageId": "g1",
        "context": { "consent": { "categoryPreferences": { "Analytics": true, "Advertising": false } } } });
    let (status, body) = send(&app, "/v1/track", &event, true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut again = event.clone();
    again["messageId"] = json!("g2");
    send(&app, "/v1/track", &again, true).await;

    let token = app.token("acme", &["profiles:read"], "support");
    let data = app
        .data(
            &token,
            r#"{ customerByIdentity(identity: {kind: EXTERNAL_ID, value: "gpc-user", source: "user_id"}) {
                consents { purpose status source } consentHistory(first: 50) { edges { cursor } } } }"#,
            json!({}),
        )
        .await;
    let consents = &data["customerByIdentity"]["consents"];
    assert_eq!(
        consents,
        &json!([
            { "purpose": "analytics", "status": "GRANTED", "source": "web" },
            { "purpose": "marketing", "status": "DENIED", "source": "web" },
            { "purpose": "sharing", "status": "DENIED", "source": "global_privacy_control" }
        ])
    );
    let ledger = data["customerByIdentity"]["consentHistory"]["edges"].as_array().map(Vec::len);
    assert_eq!(ledger, Some(3), "a repeated signal does not grow the ledger");
}

async fn write_keys_and_single_endpoints_answer_clearly(app: TestApp) {
    let response = app
        .client
        .post(app.url("/v1/track"))
        .basic_auth("wrong-key", Some(""))
        .json(&json!({ "userId": "u", "event": "x" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) =
        send(&app, "/v1/identify", &json!({ "userId": "u1", "traits": { "email": "not-an-email" } }), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["field"], "traits.email");
    let (status, _) = send(&app, "/v1/alias", &json!({ "previousId": "anon-x", "userId": "u1" }), false).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        send(&app, "/v1/screen", &json!({ "anonymousId": "anon-x", "name": "Home", "messageId": "s1" }), false).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, "/v1/nonsense", &json!({ "userId": "u1" }), false).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // SDKs may gzip their batches.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(
        json!({ "batch": [{ "type": "track", "userId": "u1", "event": "Zipped", "messageId": "z1" }] })
            .to_string()
            .as_bytes(),
    )
    .expect("gzip");
    let response = app
        .client
        .post(app.url("/v1/batch"))
        .basic_auth(KEY, Some(""))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["stored"], 1, "{body}");
    // The alias linked the anonymous screen view to user u1.
    let token = app.token("acme", &["profiles:read", "touchpoints:read"], "support");
    let data = app
        .data(
            &token,
            r#"{ customerByIdentity(identity: {kind: ANONYMOUS_ID, value: "anon-x"}) { touchpoints { totalCount } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(data["customerByIdentity"]["touchpoints"]["totalCount"], 2, "screen view + zipped event");
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_batch_lands_on_one_customer_and_replays_are_harmless() {
        super::a_segment_batch_lands_on_one_customer_and_replays_are_harmless(
            app_with_key(Backend::Sqlite).await.expect("sqlite"),
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consent_context_and_global_privacy_control_become_consents() {
        super::consent_context_and_global_privacy_control_become_consents(
            app_with_key(Backend::Sqlite).await.expect("sqlite"),
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_keys_and_single_endpoints_answer_clearly() {
        super::write_keys_and_single_endpoints_answer_clearly(app_with_key(Backend::Sqlite).await.expect("sqlite"))
            .await;
    }
}

mod postgres {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_batch_lands_on_one_customer_and_replays_are_harmless() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::a_segment_batch_lands_on_one_customer_and_replays_are_harmless(app).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consent_context_and_global_privacy_control_become_consents() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::consent_context_and_global_privacy_control_become_consents(app).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_keys_and_single_endpoints_answer_clearly() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::write_keys_and_single_endpoints_answer_clearly(app).await;
        }
    }
}
