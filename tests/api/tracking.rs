//! The Segment-compatible tracking API: write keys, batches with per-event errors, idempotency on messageId,
//! identity resolution, `context.consent` and Global Privacy Control.
use std::io::Write;

use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::common::{Backend, TestApp, spawn_with};

const KEY: &str = "test-write-key-0123456789";
/// A write key whose source names no channel, as most real sources are named.
const SHOP_KEY: &str = "test-write-key-webshop-0123";

async fn app_with_key(backend: Backend) -> Option<TestApp> {
    spawn_with(backend, |c| c.write_keys = Some(format!("{KEY}=acme/web,{SHOP_KEY}=acme/webshop").into())).await
}

async fn send(app: &TestApp, path: &str, body: &Value, gpc: bool) -> (StatusCode, Value) {
    let (status, _, body) = send_as(app, KEY, path, body, gpc).await;
    (status, body)
}

/// Sends with `key`; also returns the `Retry-After` header.
async fn send_as(app: &TestApp, key: &str, path: &str, body: &Value, gpc: bool) -> (StatusCode, Option<String>, Value) {
    let mut req = app.client.post(app.url(path)).basic_auth(key, Some("")).json(body);
    if gpc {
        req = req.header("Sec-GPC", "1");
    }
    let response = req.send().await.expect("request");
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (response.status(), retry_after, response.json().await.expect("json"))
}

/// The touchpoints of the customer holding `userId`, oldest first.
async fn touchpoints_of_user(app: &TestApp, user_id: &str) -> Vec<Value> {
    let token = app.token("acme", &["profiles:read", "touchpoints:read"], "support");
    let data = app
        .data(
            &token,
            r#"query($id: String!) { customerByIdentity(identity: {kind: EXTERNAL_ID, value: $id, source: "user_id"}) {
                touchpoints(first: 100) { edges { node { idempotencyKey type channel stage source properties } } } } }"#,
            json!({ "id": user_id }),
        )
        .await;
    let mut nodes: Vec<Value> = data["customerByIdentity"]["touchpoints"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    nodes.sort_by(|a, b| a["idempotencyKey"].as_str().cmp(&b["idempotencyKey"].as_str()));
    nodes
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

/// SDKs on servers (Node, Python, RudderStack) send `page` and `screen` without `context.page`/`context.app`: the
/// call itself says web page or app screen, whatever the write key's source is called.
async fn page_and_screen_calls_take_their_channel_whatever_the_source_is_called(app: TestApp) {
    let events = json!({ "batch": [
        { "type": "page", "messageId": "c1", "userId": "chan-1", "name": "Checkout",
          "properties": { "url": "https://shop.example/checkout" }, "context": { "library": { "name": "analytics-node" } } },
        { "type": "screen", "messageId": "c2", "userId": "chan-1", "name": "Basket",
          "context": { "library": { "name": "analytics-python" } } },
        { "type": "track", "messageId": "c3", "userId": "chan-1", "event": "Signed In", "context": { "page": { "path": "/" } } },
        { "type": "track", "messageId": "c4", "userId": "chan-1", "event": "Signed In",
          "context": { "device": { "id": "dev-1", "type": "ios" } } },
        { "type": "track", "messageId": "c5", "userId": "chan-1", "event": "Signed In" }
    ] });
    let (status, _, summary) = send_as(&app, SHOP_KEY, "/v1/batch", &events, false).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["stored"], 5, "{summary}");
    let touchpoints = touchpoints_of_user(&app, "chan-1").await;
    let channels: Vec<Value> =
        touchpoints.iter().map(|tp| json!([tp["idempotencyKey"], tp["type"], tp["channel"]])).collect();
    assert_eq!(
        channels,
        vec![
            json!(["c1", "PAGE_VIEW", "WEB"]),
            json!(["c2", "SCREEN_VIEW", "MOBILE_APP"]),
            json!(["c3", "CUSTOM", "WEB"]),
            json!(["c4", "CUSTOM", "MOBILE_APP"]),
            // Nothing says where: the source `webshop` names no channel.
            json!(["c5", "CUSTOM", "OTHER"]),
        ]
    );
    assert!(touchpoints.iter().all(|tp| tp["source"] == "webshop"), "{touchpoints:?}");
}

/// Segment's e-commerce spec events take a type and a journey stage from one table, and keep their name.
async fn e_commerce_events_take_their_type_and_stage_and_keep_their_name(app: TestApp) {
    let event = |id: &str, name: &str, properties: Value| json!({ "type": "track", "messageId": id, "userId": "shopper-9", "event": name, "properties": properties });
    let events = json!({ "batch": [
        event("e1", "Promotion Viewed", json!({ "promotion_id": "spring" })),
        event("e2", "Product Viewed", json!({ "product_id": "SKU-1" })),
        event("e3", "product_added", json!({ "product_id": "SKU-1" })),
        event("e4", "Checkout Started", json!({ "order_id": "o-1" })),
        event("e5", "Order Completed", json!({ "order_id": "o-1", "revenue": 25.0, "currency": "DKK" })),
        event("e6", "Product Shared", json!({ "share_via": "email" })),
        event("e7", "Trial Extended", json!({}))
    ] });
    let (status, _, summary) = send_as(&app, SHOP_KEY, "/v1/batch", &events, false).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    assert_eq!(summary["stored"], 7, "{summary}");
    let got: Vec<Value> = touchpoints_of_user(&app, "shopper-9")
        .await
        .iter()
        .map(|tp| json!([tp["idempotencyKey"], tp["type"], tp["stage"], tp["properties"]["event"]]))
        .collect();
    assert_eq!(
        got,
        vec![
            json!(["e1", "AD_IMPRESSION", "AWARENESS", "Promotion Viewed"]),
            json!(["e2", "CUSTOM", "CONSIDERATION", "Product Viewed"]),
            json!(["e3", "CUSTOM", "CONSIDERATION", "product_added"]),
            json!(["e4", "CUSTOM", "PURCHASE", "Checkout Started"]),
            json!(["e5", "PURCHASE", "PURCHASE", "Order Completed"]),
            json!(["e6", "CUSTOM", "RENEWAL", "Product Shared"]),
            // Not in the table: a custom event in the usage stage, its name kept.
            json!(["e7", "CUSTOM", "USAGE", "Trial Extended"]),
        ]
    );
}

/// Makes every insert of the touchpoint with idempotency key `key` fail with a database error.
async fn break_inserts_of(app: &TestApp, key: &str) {
    let db = app.db().await;
    let statements: Vec<String> = match app.backend {
        Backend::Sqlite => vec![format!(
            "CREATE TRIGGER break_insert BEFORE INSERT ON touchpoints WHEN NEW.idempotency_key = '{key}' \
             BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END"
        )],
        Backend::Postgres => vec![
            "CREATE FUNCTION break_insert() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'the disk is on fire'; END $$"
                .to_owned(),
            format!(
                "CREATE TRIGGER break_insert BEFORE INSERT ON touchpoints FOR EACH ROW \
                 WHEN (NEW.idempotency_key = '{key}') EXECUTE FUNCTION break_insert()"
            ),
        ],
    };
    for sql in statements {
        db.execute_unprepared(&sql).await.expect("install the failing trigger");
    }
}

async fn mend_inserts(app: &TestApp) {
    let sql = match app.backend {
        Backend::Sqlite => "DROP TRIGGER break_insert",
        Backend::Postgres => "DROP TRIGGER break_insert ON touchpoints",
    };
    app.db().await.execute_unprepared(sql).await.expect("drop the failing trigger");
}

/// An event that failed for a reason a retry can fix makes the batch answer 5xx, so SDKs retry it instead of
/// dropping it; the retry stores what was missing and replays the rest harmlessly. Events that will never be valid
/// are still answered 200 with `rejected`.
async fn a_batch_with_a_retryable_failure_answers_5xx_and_its_retry_is_safe(app: TestApp) {
    let events = json!({ "batch": [
        { "type": "track", "messageId": "r1", "userId": "retry-1", "event": "Product Viewed" },
        { "type": "identify", "messageId": "r2", "userId": "retry-1", "traits": { "email": "retry@example.com" } },
        { "type": "track", "messageId": "r3", "userId": "retry-1", "event": "Order Completed",
          "properties": { "revenue": 10.0, "currency": "EUR" } },
        { "type": "track", "messageId": "r4", "event": "No Identity" }
    ] });
    break_inserts_of(&app, "r3").await;
    let (status, _, summary) = send_as(&app, KEY, "/v1/batch", &events, false).await;
    assert!(status.is_server_error(), "a database failure must be retried, got {status}: {summary}");
    assert_eq!(summary["success"], false, "{summary}");
    assert_eq!(summary["stored"], 1, "{summary}");
    let codes: Vec<(Value, Value)> = summary["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| (r["messageId"].clone(), r["code"].clone()))
        .collect();
    assert_eq!(codes, vec![(json!("r3"), json!("INTERNAL")), (json!("r4"), json!("VALIDATION"))], "{summary}");

    mend_inserts(&app).await;
    let (status, _, retry) = send_as(&app, KEY, "/v1/batch", &events, false).await;
    assert_eq!(status, StatusCode::OK, "{retry}");
    assert_eq!(retry["success"], true);
    assert_eq!((retry["stored"].as_i64(), retry["duplicates"].as_i64()), (Some(1), Some(1)), "{retry}");
    assert_eq!(retry["identified"], 1, "{retry}");
    let rejected = retry["rejected"].as_array().expect("rejected");
    assert_eq!(rejected.len(), 1, "only the event that will never be valid: {retry}");
    assert_eq!((&rejected[0]["messageId"], &rejected[0]["field"]), (&json!("r4"), &json!("userId")));
    let keys: Vec<Value> =
        touchpoints_of_user(&app, "retry-1").await.iter().map(|tp| tp["idempotencyKey"].clone()).collect();
    assert_eq!(keys, vec![json!("r1"), json!("r3")], "each event stored once");
}

/// A batch is one domain call: the batch limit applies, and a replay looks its keys up once, not once per event.
async fn a_batch_is_one_domain_call(app: TestApp) {
    let too_many: Vec<Value> = (0..5001).map(|_| json!({ "type": "nonsense" })).collect();
    let (status, _, body) = send_as(&app, KEY, "/v1/batch", &json!({ "batch": too_many }), false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "VALIDATION", "{body}");
    assert_eq!(body["error"]["field"], "batch", "{body}");

    let events: Vec<Value> = (0..40)
        .map(|i| json!({ "type": "track", "messageId": format!("one-{i}"), "userId": "one-call", "event": "Product Viewed" }))
        .collect();
    let events = json!({ "batch": events });
    let (status, _, first) = send_as(&app, KEY, "/v1/batch", &events, false).await;
    assert_eq!((status, first["stored"].as_i64()), (StatusCode::OK, Some(40)), "{first}");
    let before = app.statements().await;
    let (_, _, replay) = send_as(&app, KEY, "/v1/batch", &events, false).await;
    let spent = app.statements().await - before;
    assert_eq!(replay["duplicates"], 40, "{replay}");
    assert!(spent <= 2, "a replayed batch of 40 looks its keys up once, ran {spent} statements");
}

mod sqlite {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn page_and_screen_calls_take_their_channel_whatever_the_source_is_called() {
        super::page_and_screen_calls_take_their_channel_whatever_the_source_is_called(
            app_with_key(Backend::Sqlite).await.expect("sqlite"),
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn e_commerce_events_take_their_type_and_stage_and_keep_their_name() {
        super::e_commerce_events_take_their_type_and_stage_and_keep_their_name(
            app_with_key(Backend::Sqlite).await.expect("sqlite"),
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_with_a_retryable_failure_answers_5xx_and_its_retry_is_safe() {
        super::a_batch_with_a_retryable_failure_answers_5xx_and_its_retry_is_safe(
            app_with_key(Backend::Sqlite).await.expect("sqlite"),
        )
        .await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_one_domain_call() {
        super::a_batch_is_one_domain_call(app_with_key(Backend::Sqlite).await.expect("sqlite")).await;
    }

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
    async fn page_and_screen_calls_take_their_channel_whatever_the_source_is_called() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::page_and_screen_calls_take_their_channel_whatever_the_source_is_called(app).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn e_commerce_events_take_their_type_and_stage_and_keep_their_name() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::e_commerce_events_take_their_type_and_stage_and_keep_their_name(app).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_with_a_retryable_failure_answers_5xx_and_its_retry_is_safe() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::a_batch_with_a_retryable_failure_answers_5xx_and_its_retry_is_safe(app).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_one_domain_call() {
        if let Some(app) = app_with_key(Backend::Postgres).await {
            super::a_batch_is_one_domain_call(app).await;
        }
    }

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
