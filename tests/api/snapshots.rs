//! Snapshots of the main responses a caller sees, so a change of the contract shows in review as a changed
//! `tests/api/snapshots/*.snap` file. The data is fixed (identities, occurred-at times, idempotency keys); what
//! the server makes up is redacted by [`redact`]: ids become `[id:N]` (numbered by first appearance, so the
//! snapshot still shows which ids are the same), times taken from the clock `[now]`, cursors `[cursor]`, request ids
//! `[request-id]`. Both backends compare against the same snapshot file: SQLite and PostgreSQL must answer alike.
//!
//! Review or update: `cargo insta review` (cargo-insta), or `INSTA_UPDATE=always cargo test --test api snapshots`
//! and `git diff tests/api/snapshots`.
use std::{collections::HashMap, sync::LazyLock, time::Duration};

use chrono::{DateTime, Utc};
use kontakt::storage::entities::access_log;
use regex::Regex;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Map, Value, json};

use crate::{
    common::{Backend, TestApp, spawn_with},
    touchpoints::writer,
};

static UUID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}").unwrap()
});
static TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$").unwrap());

const CURSOR_KEYS: [&str; 4] = ["cursor", "startCursor", "endCursor", "resumeCursor"];
/// Free-form JSON the server stores and serves back (the `JSON` scalar, the export's stored documents). PostgreSQL
/// keeps it as `jsonb`, which does not keep key order (shorter keys first), SQLite as the text it was given: the
/// keys of these values are sorted, the values compared as they are.
const FREE_FORM_KEYS: [&str; 4] = ["properties", "evidence", "consentContext", "custom"];
/// Under the export's `sourceRecords`, the stored `identities` and `traits` of each record are free-form too.
const STORED_RECORD_KEYS: [&str; 2] = ["identities", "traits"];

fn sort_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sort_keys(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sort_keys).collect()),
        other => other.clone(),
    }
}

/// Replaces what varies from run to run with placeholders; fixed data (the test's own times, keys, values) stays.
fn redact(value: &Value) -> Value {
    let mut ids = HashMap::new();
    redact_in(value, None, &mut ids)
}

fn redact_in(value: &Value, key: Option<&str>, ids: &mut HashMap<String, usize>) -> Value {
    match value {
        _ if key.is_some_and(|k| FREE_FORM_KEYS.contains(&k)) => redact_in(&sort_keys(value), None, ids),
        Value::Array(records) if key == Some("sourceRecords") => Value::Array(
            records
                .iter()
                .map(|record| match record {
                    Value::Object(map) => Value::Object(
                        map.iter()
                            .map(|(k, v)| {
                                let v = if STORED_RECORD_KEYS.contains(&k.as_str()) { sort_keys(v) } else { v.clone() };
                                (k.clone(), redact_in(&v, Some(k), ids))
                            })
                            .collect::<Map<_, _>>(),
                    ),
                    other => redact_in(other, None, ids),
                })
                .collect(),
        ),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), redact_in(v, Some(k), ids))).collect::<Map<_, _>>())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_in(v, key, ids)).collect()),
        Value::String(_) if key.is_some_and(|k| CURSOR_KEYS.contains(&k)) => json!("[cursor]"),
        Value::String(_) if key == Some("requestId") => json!("[request-id]"),
        Value::String(s) if TIME.is_match(s) => match DateTime::parse_from_rfc3339(s) {
            // Times from the server's clock (receivedAt, recordedAt, createdAt, …): within a day of now.
            Ok(t) if (Utc::now() - t.with_timezone(&Utc)).num_hours().abs() < 24 => json!("[now]"),
            _ => value.clone(),
        },
        Value::String(s) => {
            let replaced = UUID.replace_all(s, |c: &regex::Captures<'_>| {
                let next = ids.len() + 1;
                format!("[id:{}]", ids.entry(c[0].to_ascii_lowercase()).or_insert(next))
            });
            json!(replaced)
        }
        other => other.clone(),
    }
}

/// Asserts the redacted snapshot of `value` under `name`, the same file for both backends.
macro_rules! snapshot {
    ($name:expr, $value:expr) => {
        insta::assert_json_snapshot!($name, redact(&$value))
    };
}

const INGEST: &str = "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) {
    created updated unchanged rejected suppressed results { index status recordId customerId error { code field message } } } }";
const RECORD: &str = "mutation($t: [TouchpointInput!]!) { recordTouchpoints(touchpoints: $t) {
    created duplicates rejected suppressed results { index status touchpointId customerId error { code field message } } } }";
const CONSENT: &str = "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { id } }";

const TOUCHPOINT_FIELDS: &str = "id customerId channel type stage occurredAt receivedAt source idempotencyKey
    properties value currency feedback { metric score verbatim }";

fn profile_query() -> String {
    format!(
        "query($id: UUID!) {{ customer(id: $id) {{ id givenName familyName createdAt updatedAt mergedInto requestedId
        processingRestricted
        identities {{ kind source value createdAt }}
        traits {{ givenName familyName emails phones addresses locale country birthDate company custom }}
        consents {{ purpose channel status capturedAt recordedAt source policyVersion legalBasis expiresAt evidence effective }}
        touchpoints(first: 2) {{ totalCount pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
            edges {{ cursor node {{ {TOUCHPOINT_FIELDS} }} }} }}
        journey {{ currentStage stages {{ stage firstAt lastAt count channels {{ channel count }} }} }} }} }}"
    )
}

fn ada() -> Value {
    json!([{ "kind": "EMAIL", "value": "ada@example.com" }])
}

fn item(key: &str, identities: Value, kind: &str, occurred_at: &str) -> Value {
    json!({ "identities": identities, "channel": "WEB", "type": kind, "source": "web", "occurredAt": occurred_at,
            "idempotencyKey": key })
}

async fn ingest(app: &TestApp, records: Value) -> Value {
    app.data(&app.admin(), INGEST, json!({ "r": records })).await["ingestCustomerRecords"].clone()
}

async fn record(app: &TestApp, items: Value) -> Value {
    app.data(&writer(app), RECORD, json!({ "t": items })).await["recordTouchpoints"].clone()
}

async fn consent(app: &TestApp, customer: &str, purpose: &str, status: &str, captured_at: &str) {
    let input = json!({ "customerId": customer, "purpose": purpose, "status": status, "capturedAt": captured_at,
        "source": "web", "policyVersion": "2024-01", "legalBasis": "consent", "expiresAt": "2099-12-31T00:00:00Z",
        "evidence": { "form": "signup-v3" } });
    app.data(&writer(app), CONSENT, json!({ "i": input })).await;
}

/// Ada: a CRM record with names and contact data, three touchpoints (a page view with personal properties, a
/// purchase, a survey answer quoting her phone), consent to personalization, marketing by email denied.
async fn ada_with_history(app: &TestApp) -> String {
    let records = json!([{ "source": "crm", "sourceRecordId": "CRM-1",
        "identities": [{ "kind": "EMAIL", "value": "Ada@Example.com" }, { "kind": "PHONE", "value": "+4520998801" }],
        "traits": { "givenName": "Ada", "familyName": "Lovelace", "country": "dk", "birthDate": "1985-12-10" },
        "observedAt": "2024-03-01T09:00:00Z" }]);
    let customer = ingest(app, records).await["results"][0]["customerId"].as_str().expect("customer").to_owned();
    let mut page = item("ada-page", ada(), "PAGE_VIEW", "2024-03-02T10:00:00Z");
    page["properties"] = json!({ "url": "https://shop.example/shoes", "email": "ada@example.com", "sku": "SH-42" });
    let mut purchase = item("ada-buy", ada(), "PURCHASE", "2024-03-03T11:30:00.123456Z");
    purchase["value"] = json!(120.5);
    purchase["currency"] = json!("EUR");
    let mut survey = item("ada-nps", ada(), "SURVEY_RESPONSE", "2024-03-04T12:00:00Z");
    survey["feedback"] = json!({ "metric": "NPS", "score": 9, "verbatim": "Great, call me on +4520998801" });
    record(app, json!([page, purchase, survey])).await;
    consent(app, &customer, "personalization", "GRANTED", "2024-03-01T08:00:00Z").await;
    consent(app, &customer, "marketing:email", "DENIED", "2024-03-01T08:00:00Z").await;
    customer
}

async fn a_profile_read_with_and_without_pii_read(app: TestApp) {
    let id = ada_with_history(&app).await;
    let query = profile_query();
    let revealing = app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "personalization");
    let data = app.data(&revealing, &query, json!({ "id": id })).await;
    snapshot!("profile_with_pii_read", data);
    let masked = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let data = app.data(&masked, &query, json!({ "id": id })).await;
    snapshot!("profile_masked", data);
}

async fn a_profile_read_refused_for_history(app: TestApp) {
    let id = ada_with_history(&app).await;
    // Ada never decided about analytics: the profile is served, history and journey are not.
    let analyst = app.token("acme", &["profiles:read", "touchpoints:read"], "analytics");
    let (status, body) = app.gql(&analyst, &profile_query(), json!({ "id": id })).await;
    snapshot!("profile_history_refused", json!({ "status": status.as_u16(), "body": body }));
}

async fn the_feed_page(app: TestApp) {
    ada_with_history(&app).await;
    // Bob has not consented to personalization: his touchpoints are counted, not served.
    let bob = json!([{ "kind": "EMAIL", "value": "bob@example.com" }]);
    record(&app, json!([item("bob-page", bob, "PAGE_VIEW", "2024-03-05T09:00:00Z")])).await;
    let mut late = item("ada-late", ada(), "EMAIL_OPEN", "2024-03-06T09:00:00Z");
    late["channel"] = json!("EMAIL");
    record(&app, json!([late])).await;
    let engine = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let query = format!(
        "{{ touchpoints(first: 10) {{ excludedCount resumeCursor pageInfo {{ hasNextPage hasPreviousPage startCursor endCursor }}
            edges {{ cursor node {{ {TOUCHPOINT_FIELDS} }} }} }} }}"
    );
    let data = app.data(&engine, &query, json!({})).await;
    snapshot!("feed_page", data);
}

async fn record_touchpoints_results(app: TestApp) {
    let who = json!([{ "kind": "EMAIL", "value": "cy@example.com" }, { "kind": "ANONYMOUS_ID", "value": "anon-cy" }]);
    let mut bad_score = item("cy-nps", who.clone(), "SURVEY_RESPONSE", "2024-04-01T10:00:00Z");
    bad_score["feedback"] = json!({ "metric": "NPS", "score": 11 });
    let mut no_currency = item("cy-buy", who.clone(), "PURCHASE", "2024-04-01T10:05:00Z");
    no_currency["value"] = json!(10);
    let first = record(
        &app,
        json!([
            item("cy-1", who.clone(), "PAGE_VIEW", "2024-04-01T09:00:00Z"),
            item("cy-2", who.clone(), "AD_CLICK", "2024-04-01T09:01:00Z"),
            bad_score,
            no_currency,
            item("", who.clone(), "PAGE_VIEW", "2024-04-01T09:02:00Z"),
            item("cy-future", who.clone(), "PAGE_VIEW", "2099-01-01T00:00:00Z"),
        ]),
    )
    .await;
    // A replay of the first two with one new item.
    let replay = record(
        &app,
        json!([
            item("cy-1", who.clone(), "PAGE_VIEW", "2024-04-01T09:00:00Z"),
            item("cy-2", who.clone(), "AD_CLICK", "2024-04-01T09:01:00Z"),
            item("cy-3", who.clone(), "STORE_VISIT", "2024-04-02T09:00:00Z"),
        ]),
    )
    .await;
    snapshot!("record_touchpoints", json!({ "first": first, "replay": replay }));
}

async fn ingest_customer_records_results(app: TestApp) {
    let records = json!([
        { "source": "webshop", "sourceRecordId": "W-1", "identities": [{ "kind": "EMAIL", "value": "Dee@Example.com" }],
          "traits": { "givenName": "Dee", "country": "dk" }, "observedAt": "2024-05-01T10:00:00Z" },
        { "source": "pos", "sourceRecordId": "S-9",
          "identities": [{ "kind": "PHONE", "value": "+4520998802" }, { "kind": "EMAIL", "value": "dee@example.com" }],
          "traits": { "givenName": "Deirdre", "birthDate": "1990-04-30" }, "observedAt": "2024-05-02T10:00:00Z" },
        { "source": "pos", "sourceRecordId": "S-10", "identities": [{ "kind": "EMAIL", "value": "not-an-email" }] },
        { "source": "pos", "sourceRecordId": "S-11", "identities": [{ "kind": "EMAIL", "value": "eve@example.com" }],
          "customTraits": { "shoeSize": 38 } }
    ]);
    let first = ingest(&app, records.clone()).await;
    // Again: the first unchanged, the second observed later (updated).
    let mut again = records.as_array().expect("records")[..2].to_vec();
    again[1]["observedAt"] = json!("2024-05-03T10:00:00Z");
    let again = ingest(&app, json!(again)).await;
    snapshot!("ingest_customer_records", json!({ "first": first, "again": again }));
}

async fn merge_customers_and_identity_graph(app: TestApp) {
    let token = app.token("acme", &["profiles:read", "profiles:write", "pii:read"], "support");
    let device = json!({ "kind": "DEVICE_ID", "value": "tablet-1" });
    let a = record(
        &app,
        json!([item(
            "fay-1",
            json!([{ "kind": "EMAIL", "value": "fay@example.com" }, { "kind": "CRM_ID", "value": "crm-1" }, device]),
            "STORE_VISIT",
            "2024-06-01T10:00:00Z"
        )]),
    )
    .await["results"][0]["customerId"]
        .as_str()
        .expect("a")
        .to_owned();
    // A second CRM id on the same tablet: over CRM_ID's limit of one, so it gets a customer of its own, with conflicts.
    let b = record(
        &app,
        json!([item(
            "gus-1",
            json!([{ "kind": "CRM_ID", "value": "crm-2" }, device]),
            "STORE_VISIT",
            "2024-06-01T11:00:00Z"
        )]),
    )
    .await["results"][0]["customerId"]
        .as_str()
        .expect("b")
        .to_owned();
    let c = record(
        &app,
        json!([item(
            "fay-phone",
            json!([{ "kind": "PHONE", "value": "+4520998803" }]),
            "SUPPORT_CALL",
            "2024-06-02T10:00:00Z"
        )]),
    )
    .await["results"][0]["customerId"]
        .as_str()
        .expect("c")
        .to_owned();
    let merge = app
        .data(
            &token,
            "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m, note: \"same person, said on the phone\") {
                id survivorId mergedId reason evidence mergedBy createdAt undoneAt } }",
            json!({ "s": a, "m": c }),
        )
        .await;
    let graph = "query($id: UUID!) { customer(id: $id) { id identityGraph {
        identities { kind source value createdAt }
        merges { id survivorId mergedId reason evidence mergedBy createdAt undoneAt }
        conflicts { kind reason otherCustomerId at } } } }";
    let survivor = app.data(&token, graph, json!({ "id": a })).await;
    let with_conflicts = app.data(&token, graph, json!({ "id": b })).await;
    snapshot!(
        "merge_customers_and_identity_graph",
        json!({ "merge": merge, "survivor": survivor, "withConflicts": with_conflicts })
    );
}

async fn export_for_a_privacy_officer(app: TestApp) {
    let id = ada_with_history(&app).await;
    // One read by an agent (one category, so one access-log entry), waited for: the log is written in the background.
    let agent = app.token("acme", &["profiles:read"], "support");
    app.data(&agent, "query($id: UUID!) { customer(id: $id) { id givenName } }", json!({ "id": id })).await;
    // Counted in the database: reading the log through the API would log more reads.
    let db = app.db().await;
    let customer: uuid::Uuid = id.parse().expect("uuid");
    let mut logged = 0;
    for _ in 0..50 {
        logged = access_log::Entity::find()
            .filter(access_log::Column::CustomerId.eq(customer))
            .count(&db)
            .await
            .expect("access log");
        if logged > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logged, 1, "the agent's read reaches the access log, once");
    let officer = app.token("acme", &["profiles:read", "privacy:admin", "pii:read"], "privacy_admin");
    let data = app.data(&officer, "query($id: UUID!) { exportCustomer(id: $id) }", json!({ "id": id })).await;
    snapshot!("export_customer", data);
}

async fn request_errors(app: TestApp) {
    let token = app.admin();
    let (status, unknown_field) = app.gql(&token, "{ viewer { tenant nickname } }", json!({})).await;
    let (bad_status, bad_variable) =
        app.gql(&token, "query($id: UUID!) { customer(id: $id) { id } }", json!({ "id": "not-a-uuid" })).await;
    let (invalid_status, invalid_input) = app
        .gql(
            &token,
            "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { customer { id } } }",
            json!({ "input": { "identities": [{ "kind": "EMAIL", "value": "not-an-email" }] } }),
        )
        .await;
    snapshot!(
        "request_errors",
        json!({
            "unknownField": { "status": status.as_u16(), "body": unknown_field },
            "badVariable": { "status": bad_status.as_u16(), "body": bad_variable },
            "invalidInput": { "status": invalid_status.as_u16(), "body": invalid_input },
        })
    );
}

on_every_backend!(
    a_profile_read_with_and_without_pii_read,
    a_profile_read_refused_for_history,
    the_feed_page,
    record_touchpoints_results,
    ingest_customer_records_results,
    merge_customers_and_identity_graph,
    export_for_a_privacy_officer,
    request_errors,
);

const WRITE_KEY: &str = "snapshot-write-key-0123456789";

async fn tracking_batch_response(backend: Backend) {
    let Some(app) = spawn_with(backend, |c| c.write_keys = Some(format!("{WRITE_KEY}=acme/web").into())).await else {
        return;
    };
    let batch = json!({ "batch": [
        { "type": "page", "messageId": "m1", "anonymousId": "anon-7", "name": "Home", "timestamp": "2024-07-01T10:00:00Z",
          "context": { "page": { "url": "https://shop.example/" } } },
        { "type": "track", "messageId": "m2", "anonymousId": "anon-7", "userId": "user-7", "event": "Order Completed",
          "timestamp": "2024-07-01T10:05:00Z", "properties": { "revenue": 80.0, "currency": "EUR" } },
        { "type": "identify", "messageId": "m3", "userId": "user-7", "traits": { "email": "shopper@example.com" } },
        { "type": "track", "messageId": "m4", "event": "No Identity" },
        { "type": "track", "messageId": "m5", "anonymousId": "anon-7", "event": "Product Viewed", "timestamp": "yesterday" }
    ] });
    let send = || async {
        let response = app
            .client
            .post(app.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&batch)
            .send()
            .await
            .expect("request");
        let status: StatusCode = response.status();
        json!({ "status": status.as_u16(), "body": response.json::<Value>().await.expect("json") })
    };
    let first = send().await;
    let replay = send().await;
    snapshot!("tracking_batch", json!({ "first": first, "replay": replay }));
}

mod tracking_sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tracking_batch_response() {
        super::tracking_batch_response(crate::common::Backend::Sqlite).await;
    }
}

mod tracking_postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tracking_batch_response() {
        super::tracking_batch_response(crate::common::Backend::Postgres).await;
    }
}

#[test]
fn redaction_numbers_ids_and_keeps_fixed_times() {
    let now = Utc::now().to_rfc3339();
    let value = json!({ "id": "0192f0c2-1c2b-7d3e-8f40-0123456789ab", "other": "0192F0C2-1C2B-7D3E-8F40-0123456789AB",
        "message": "customer 0192f0c2-1c2b-7d3e-8f40-0123456789ac not found", "at": now,
        "occurredAt": "2024-03-02T10:00:00Z", "cursor": "abc", "requestId": "r" });
    assert_eq!(
        redact(&value),
        json!({ "id": "[id:1]", "other": "[id:1]", "message": "customer [id:2] not found", "at": "[now]",
            "occurredAt": "2024-03-02T10:00:00Z", "cursor": "[cursor]", "requestId": "[request-id]" })
    );
}
