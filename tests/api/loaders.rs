//! Nested lists of a page of customers: each edge (`traits`, `traitHistory`, `sourceRecords`, `mergeHistory`,
//! `consentHistory`, `identityGraph.merges`) costs a fixed number of statements however many customers the page
//! holds, and shows each customer exactly what the one-customer read shows.
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::{common::TestApp, touchpoints::grant};

const INGEST: &str = "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) {
    results { status customerId } } }";

const CUSTOMERS: usize = 12;

fn officer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "profiles:write", "pii:read"], "support")
}

/// Twelve customers, each built from two merged customers, with different numbers of source records, trait
/// values, merges and consent decisions.
async fn customers_with_data(app: &TestApp) {
    let token = officer(app);
    let ago = |hours: i64| (Utc::now() - Duration::hours(hours)).to_rfc3339();
    let mut records = Vec::new();
    for i in 0..CUSTOMERS {
        let email = json!({ "kind": "EMAIL", "value": format!("c{i}@example.com") });
        records.push(json!({ "source": "webshop", "sourceRecordId": format!("W-{i}"), "identities": [email],
            "traits": { "givenName": format!("Ann{i}"), "country": "DK" }, "observedAt": ago(48) }));
    }
    for i in 0..CUSTOMERS {
        let phone = json!({ "kind": "CRM_ID", "value": format!("CRM-{i}") });
        records.push(json!({ "source": "crm", "sourceRecordId": format!("C-{i}"), "identities": [phone],
            "traits": { "givenName": format!("Anne{i}"), "familyName": format!("Berg{i}") }, "observedAt": ago(24) }));
    }
    let done = app.data(&token, INGEST, json!({ "r": records })).await["ingestCustomerRecords"]["results"].clone();
    let ids: Vec<String> =
        done.as_array().expect("results").iter().map(|r| r["customerId"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids.len(), 2 * CUSTOMERS);
    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    for i in 0..CUSTOMERS {
        app.data(&token, merge, json!({ "s": ids[i], "m": ids[CUSTOMERS + i] })).await;
    }
    // Some customers get a third record (another givenName value) and one, two or three consent decisions.
    let extra: Vec<Value> = (0..CUSTOMERS)
        .filter(|i| i % 2 == 0)
        .map(|i| {
            json!({ "source": "pos", "sourceRecordId": format!("P-{i}"),
                "identities": [{ "kind": "EMAIL", "value": format!("c{i}@example.com") }],
                "traits": { "givenName": format!("Annie{i}") }, "observedAt": ago(1) })
        })
        .collect();
    app.data(&token, INGEST, json!({ "r": extra })).await;
    for (i, id) in ids.iter().take(CUSTOMERS).enumerate() {
        for status in ["GRANTED", "WITHDRAWN", "GRANTED"].iter().take(i % 3 + 1) {
            grant(app, id, "personalization", status).await;
        }
    }
}

/// A page of 3 customers and a page of 12 with `selection` on each run the same number of statements, and each
/// customer of the page shows what its one-customer read shows.
async fn a_page_costs_what_a_smaller_page_costs(app: &TestApp, selection: &str) {
    customers_with_data(app).await;
    let token = officer(app);
    let page = |n: usize| format!("{{ customers(first: {n}) {{ edges {{ node {{ id {selection} }} }} }} }}");
    let before = app.statements().await;
    let small_page = app.data(&token, &page(3), json!({})).await;
    let small = app.statements().await - before;
    let before = app.statements().await;
    let large_page = app.data(&token, &page(CUSTOMERS), json!({})).await;
    let large = app.statements().await - before;
    assert_eq!(small_page["customers"]["edges"].as_array().map(Vec::len), Some(3));
    let edges = large_page["customers"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), CUSTOMERS);
    let one = format!("query($id: UUID!) {{ customer(id: $id) {{ id {selection} }} }}");
    for edge in edges {
        let single = app.data(&token, &one, json!({ "id": edge["node"]["id"] })).await;
        assert_eq!(edge["node"], single["customer"], "the list and the one-customer read disagree");
    }
    assert_eq!(small, large, "statements must not grow with the page size (N+1): {small} for 3, {large} for 12");
}

async fn a_page_of_customers_with_their_traits_takes_a_fixed_number_of_statements(app: TestApp) {
    a_page_costs_what_a_smaller_page_costs(&app, "traits { givenName familyName country }").await;
}

async fn a_page_of_customers_with_a_trait_history_takes_a_fixed_number_of_statements(app: TestApp) {
    // Two names: one window query each (a trait history costs 100 × its fields, so a page of 12 keeps it small).
    let selection =
        "traitHistory(name: \"givenName\") { value source } family: traitHistory(name: \"familyName\") { value }";
    a_page_costs_what_a_smaller_page_costs(&app, selection).await;
}

async fn a_page_of_customers_with_their_source_records_takes_a_fixed_number_of_statements(app: TestApp) {
    a_page_costs_what_a_smaller_page_costs(&app, "sourceRecords { id source sourceRecordId }").await;
}

async fn a_page_of_customers_with_their_merge_history_takes_a_fixed_number_of_statements(app: TestApp) {
    a_page_costs_what_a_smaller_page_costs(&app, "mergeHistory { id reason survivorId mergedId }").await;
}

async fn a_page_of_customers_with_their_consent_history_takes_a_fixed_number_of_statements(app: TestApp) {
    let selection = "consentHistory(first: 2) { pageInfo { hasNextPage } edges { cursor node { status purpose } } }";
    a_page_costs_what_a_smaller_page_costs(&app, selection).await;
}

async fn a_page_of_customers_with_their_identity_graph_merges_takes_a_fixed_number_of_statements(app: TestApp) {
    a_page_costs_what_a_smaller_page_costs(&app, "identityGraph { merges { id survivorId mergedId } }").await;
}

/// A nested list costs its cap per customer: a page of 100 customers with their source records (at most 100
/// each) is refused by the complexity limit instead of reading up to 10 000 records.
async fn a_page_of_customers_with_an_unpaged_list_costs_its_cap(app: TestApp) {
    let token = officer(&app);
    for selection in
        ["sourceRecords { id source }", "mergeHistory { id reason }", "traitHistory(name: \"x\") { value source }"]
    {
        let query = format!("{{ customers(first: 100) {{ edges {{ node {{ id {selection} }} }} }} }}");
        let (status, body) = app.gql(&token, &query, json!({})).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{selection}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(message.contains("complex"), "{selection}: {body}");
    }
    let fine = "{ customers(first: 10) { edges { node { id sourceRecords { id source } } } } }";
    app.data(&token, fine, json!({})).await;
}

on_every_backend!(
    a_page_of_customers_with_their_traits_takes_a_fixed_number_of_statements,
    a_page_of_customers_with_a_trait_history_takes_a_fixed_number_of_statements,
    a_page_of_customers_with_their_source_records_takes_a_fixed_number_of_statements,
    a_page_of_customers_with_their_merge_history_takes_a_fixed_number_of_statements,
    a_page_of_customers_with_their_consent_history_takes_a_fixed_number_of_statements,
    a_page_of_customers_with_their_identity_graph_merges_takes_a_fixed_number_of_statements,
    a_page_of_customers_with_an_unpaged_list_costs_its_cap,
);
