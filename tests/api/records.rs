//! Source records: upsert by (source, id), resolution into customers, traits with survivorship and provenance,
//! declared custom traits, and masking.
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::common::{TestApp, first_code};

const INGEST: &str = "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) {
    created updated unchanged rejected results { status customerId recordId error { field code } } } }";

async fn ingest(app: &TestApp, records: Value) -> Value {
    app.data(&app.admin(), INGEST, json!({ "r": records })).await["ingestCustomerRecords"].clone()
}

fn ago(hours: i64) -> String {
    (Utc::now() - Duration::hours(hours)).to_rfc3339()
}

async fn a_store_record_joins_the_web_customer_and_traits_survive_by_rule(app: TestApp) {
    let records = json!([
        { "source": "webshop", "sourceRecordId": "W-1", "identities": [{ "kind": "EMAIL", "value": "Ann@Example.com" }],
          "traits": { "givenName": "Ann", "country": "dk" }, "observedAt": ago(48) },
        { "source": "pos", "sourceRecordId": "S-9", "identities": [{ "kind": "PHONE", "value": "+4520998860" }, { "kind": "EMAIL", "value": "ann@example.com" }],
          "traits": { "givenName": "Anne", "birthDate": "1990-04-30" }, "observedAt": ago(2) }
    ]);
    let first = ingest(&app, records.clone()).await;
    assert_eq!(first["created"], 2, "{first}");
    let customer = first["results"][0]["customerId"].as_str().expect("id").to_owned();
    assert_eq!(first["results"][1]["customerId"], customer.as_str(), "the store record joins the web customer");

    let again = ingest(&app, records).await;
    assert_eq!(again["unchanged"], 2, "the same records twice change nothing: {again}");

    let query = "query($id: UUID!) { customer(id: $id) { givenName traits { givenName country birthDate }
        traitHistory(name: \"givenName\") { value source observedAt } sourceRecords { source sourceRecordId } } }";
    let data = app.data(&app.admin(), query, json!({ "id": customer })).await;
    let c = &data["customer"];
    assert_eq!(
        c["traits"],
        json!({ "givenName": "Anne", "country": "DK", "birthDate": "1990-04-30" }),
        "most recent wins"
    );
    assert_eq!(c["givenName"], "Anne");
    let history: Vec<(&str, &str)> = c["traitHistory"]
        .as_array()
        .expect("history")
        .iter()
        .map(|v| (v["value"].as_str().unwrap_or_default(), v["source"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(history, vec![("Anne", "pos"), ("Ann", "webshop")]);
    assert_eq!(c["sourceRecords"].as_array().map(Vec::len), Some(2));

    let lookup = app
        .data(
            &app.admin(),
            r#"{ sourceRecord(source: "pos", sourceRecordId: "S-9") { customerId traits } }"#,
            json!({}),
        )
        .await;
    assert_eq!(lookup["sourceRecord"]["customerId"], customer.as_str());

    let filtered = app
        .data(
            &app.admin(),
            r#"{ customers(filter: {hasTrait: {name: "country", equals: "DK"}}) { edges { node { id } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(filtered["customers"]["edges"], json!([{ "node": { "id": customer } }]));
    let none = app
        .data(
            &app.admin(),
            r#"{ customers(filter: {hasTrait: {name: "country", equals: "SE"}}) { edges { node { id } } } }"#,
            json!({}),
        )
        .await;
    assert_eq!(none["customers"]["edges"], json!([]));

    // The tenant trusts the web shop over the till for names.
    let rules = json!({ "defaultRule": "MOST_RECENT", "rules": [{ "name": "givenName", "rule": "SOURCE_PRIORITY", "sources": ["webshop", "pos"] }], "custom": [] });
    app.data(
        &app.admin(),
        "mutation($r: TraitRulesInput!) { updateTraitRules(rules: $r) { defaultRule } }",
        json!({ "r": rules }),
    )
    .await;
    let data = app.data(&app.admin(), query, json!({ "id": customer })).await;
    assert_eq!(data["customer"]["traits"]["givenName"], "Ann");

    // Without pii:read the personal traits are masked.
    let agent = app.token("acme", &["profiles:read"], "support");
    let data = app.data(&agent, query, json!({ "id": customer })).await;
    assert_eq!(data["customer"]["traits"]["givenName"], "A***");
    assert_eq!(data["customer"]["traits"]["country"], "DK", "not a directly identifying trait");
    let lookup =
        app.data(&agent, r#"{ sourceRecord(source: "pos", sourceRecordId: "S-9") { identities } }"#, json!({})).await;
    assert!(!lookup.to_string().contains("ann@example.com"), "{lookup}");
}

async fn custom_traits_must_be_declared_and_typed(app: TestApp) {
    let record = |tier: Value| json!([{ "source": "crm", "sourceRecordId": "C-1", "identities": [{ "kind": "CRM_ID", "value": "C-1" }], "customTraits": { "loyaltyTier": tier } }]);
    let undeclared = ingest(&app, record(json!("gold"))).await;
    assert_eq!(undeclared["results"][0]["status"], "REJECTED");
    assert_eq!(undeclared["results"][0]["error"]["field"], "traits.loyaltyTier");
    let rules = json!({ "defaultRule": "MOST_RECENT", "rules": [], "custom": [{ "name": "loyaltyTier", "type": "STRING" }, { "name": "lifetimeValue", "type": "NUMBER" }] });
    app.data(
        &app.admin(),
        "mutation($r: TraitRulesInput!) { updateTraitRules(rules: $r) { custom { name type } } }",
        json!({ "r": rules }),
    )
    .await;
    let ok = ingest(&app, record(json!("gold"))).await;
    assert_eq!(ok["created"], 1, "{ok}");
    let wrong = ingest(&app, json!([{ "source": "crm", "sourceRecordId": "C-2", "identities": [{ "kind": "CRM_ID", "value": "C-2" }], "customTraits": { "lifetimeValue": "a lot" } }])).await;
    assert_eq!(wrong["results"][0]["error"]["field"], "traits.lifetimeValue");
    let bad = ingest(&app, json!([{ "source": "crm", "sourceRecordId": "C-3", "identities": [{ "kind": "CRM_ID", "value": "C-3" }], "traits": { "birthDate": "30/04/1990" } }])).await;
    assert_eq!(bad["results"][0]["error"]["field"], "traits.birthDate");
    let customer = ok["results"][0]["customerId"].as_str().expect("id");
    let data = app
        .data(&app.admin(), "query($id: UUID!) { customer(id: $id) { traits { custom } } }", json!({ "id": customer }))
        .await;
    assert_eq!(data["customer"]["traits"]["custom"], json!({ "loyaltyTier": "gold" }));
    let reader = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app.gql(&reader, INGEST, json!({ "r": [] })).await;
    assert_eq!(first_code(&body), "FORBIDDEN");
}

/// Fifty records from five sources, ingested by fifty concurrent calls, all naming one email (written differently):
/// one customer, holding all fifty records, on every backend.
async fn fifty_concurrent_ingests_sharing_an_email_make_one_customer(app: TestApp) {
    let token = app.admin();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = app.client.clone();
        let url = app.url("/graphql");
        let token = token.clone();
        let email = if i % 2 == 0 { "Shared.Shopper@Example.com" } else { " shared.shopper@example.com " };
        tasks.push(tokio::spawn(async move {
            let records = json!([{ "source": format!("store-{}", i % 5), "sourceRecordId": format!("R-{i}"),
                "identities": [{ "kind": "EMAIL", "value": email }, { "kind": "DEVICE_ID", "value": format!("till-{i}") }],
                "traits": { "givenName": "Sam" }, "observedAt": ago(1) }]);
            let response: Value = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "query": INGEST, "variables": { "r": records } }))
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            assert!(response.get("errors").is_none(), "{response}");
            let result = &response["data"]["ingestCustomerRecords"]["results"][0];
            assert_eq!(result["status"], "CREATED", "{response}");
            result["customerId"].as_str().expect("customer id").to_owned()
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        ids.insert(task.await.expect("task"));
    }
    assert_eq!(ids.len(), 1, "one customer, got {ids:?}");
    let customer = ids.into_iter().next().expect("one");
    let data = app.data(&token, "{ customers(first: 100) { edges { node { id } } } }", json!({})).await;
    assert_eq!(data["customers"]["edges"].as_array().map(Vec::len), Some(1), "{data}");
    let data = app
        .data(
            &token,
            "query($id: UUID!) { customer(id: $id) { sourceRecords { sourceRecordId } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(data["customer"]["sourceRecords"].as_array().map(Vec::len), Some(50), "{data}");
    let found = app
        .data(&token, "{ sourceRecord(source: \"store-3\", sourceRecordId: \"R-13\") { customerId } }", json!({}))
        .await;
    assert_eq!(found["sourceRecord"]["customerId"], customer.as_str());
}

on_every_backend!(
    a_store_record_joins_the_web_customer_and_traits_survive_by_rule,
    custom_traits_must_be_declared_and_typed,
    fifty_concurrent_ingests_sharing_an_email_make_one_customer,
);
