//! The GraphQL contract every caller relies on, on both transports: a failed nullable field is `null` (present,
//! not missing), mutations' Booleans mean what the SDL says, and the standard introspection query of graphql-js
//! 16 works against a default development server.
use serde_json::{Value, json};

use crate::{
    common::{Backend, TestApp, spawn},
    touchpoints::{grant, reader, record, touchpoint},
};

const INTROSPECTION: &str = include_str!("fixtures/introspection-graphql-js-16.graphql");

/// Asserts `object` has `key` and that it is `null` (serde_json's index answers `Null` for a missing key too).
fn assert_null_present(object: &Value, key: &str, body: &Value) {
    let map = object.as_object().unwrap_or_else(|| panic!("not an object: {object} in {body}"));
    assert!(map.contains_key(key), "`{key}` is missing instead of null: {body}");
    assert!(map[key].is_null(), "`{key}` should be null: {body}");
}

async fn a_refused_nullable_field_is_null_not_missing(app: TestApp) {
    let result =
        record(&app, json!([touchpoint("c1", json!([{ "kind": "EMAIL", "value": "c@example.com" }]), "PAGE_VIEW", 3)]))
            .await;
    let customer = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    // No consent to personalization: history and journey are refused, the profile is served.
    let query = "query($id: UUID!) { customer(id: $id) { id touchpoints(first: 5) { edges { node { id } } } journey { currentStage } } }";
    let (_, body) = app.gql(&reader(&app, "personalization"), query, json!({ "id": customer })).await;
    let served = &body["data"]["customer"];
    assert_eq!(served["id"], customer.as_str(), "{body}");
    assert_null_present(served, "touchpoints", &body);
    assert_null_present(served, "journey", &body);
    let paths: Vec<Value> = body["errors"].as_array().expect("errors").iter().map(|e| e["path"].clone()).collect();
    assert!(paths.contains(&json!(["customer", "touchpoints"])), "{body}");

    // Without the `touchpoints:read` scope (a different error, the same shape).
    let no_scope = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app.gql(&no_scope, query, json!({ "id": customer })).await;
    assert_null_present(&body["data"]["customer"], "touchpoints", &body);
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body}");

    // Every selected field of the customer failing: the customer is still an object, its field null.
    let only_journey = "query($id: UUID!) { customer(id: $id) { journey { currentStage } } }";
    let (_, body) = app.gql(&no_scope, only_journey, json!({ "id": customer })).await;
    assert_null_present(&body["data"]["customer"], "journey", &body);

    // Once consent is given the same query is served whole.
    grant(&app, &customer, "personalization", "GRANTED").await;
    let data = app.data(&reader(&app, "personalization"), query, json!({ "id": customer })).await;
    assert_eq!(data["customer"]["touchpoints"]["edges"].as_array().map(Vec::len), Some(1));
}

async fn restriction_mutations_answer_true_when_applied(app: TestApp) {
    let customer = app.upsert(&app.admin(), json!([{ "kind": "EMAIL", "value": "r@example.com" }]), None).await;
    let officer = app.token("acme", &["profiles:read", "privacy:admin"], "privacy_admin");
    let restrict = "mutation($id: UUID!) { restrictProcessing(customerId: $id) }";
    let lift = "mutation($id: UUID!) { liftRestriction(customerId: $id) }";
    assert_eq!(app.data(&officer, restrict, json!({ "id": customer })).await["restrictProcessing"], true);
    let profile = "query($id: UUID!) { customer(id: $id) { processingRestricted } }";
    assert_eq!(app.data(&officer, profile, json!({ "id": customer })).await["customer"]["processingRestricted"], true);
    assert_eq!(app.data(&officer, lift, json!({ "id": customer })).await["liftRestriction"], true);
    assert_eq!(app.data(&officer, profile, json!({ "id": customer })).await["customer"]["processingRestricted"], false);
}

/// The keys of a response object, in the order they came.
fn keys(object: &Value) -> Vec<&str> {
    object.as_object().map(|m| m.keys().map(String::as_str).collect()).unwrap_or_default()
}

async fn fields_come_in_the_order_the_query_selects_them(app: TestApp) {
    let result =
        record(&app, json!([touchpoint("o1", json!([{ "kind": "EMAIL", "value": "o@example.com" }]), "PAGE_VIEW", 3)]))
            .await;
    let customer = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &customer, "personalization", "GRANTED").await;
    // Fields that load data (identities, consents, the timeline and its count, the journey) finish in any order;
    // the response still lists them as selected, fragments and aliases included.
    let query = "query($id: UUID!) { customer(id: $id) { journey { stages { count } currentStage }
        touchpoints(first: 1) { totalCount edges { node { id } } pageInfo { hasNextPage } }
        consents { status purpose } ...Rest mergedInto when: createdAt } }
        fragment Rest on Customer { identities { value kind } traits { givenName } id }";
    let expected = vec!["journey", "touchpoints", "consents", "identities", "traits", "id", "mergedInto", "when"];
    for purpose in ["personalization", "analytics"] {
        // Without consent (analytics) the history is null: the nulls stand where the fields were selected.
        for _ in 0..5 {
            let (_, body) = app.gql(&reader(&app, purpose), query, json!({ "id": customer })).await;
            let served = &body["data"]["customer"];
            assert_eq!(keys(served), expected, "{purpose}: {body}");
            if purpose == "analytics" {
                let paths: Vec<&Value> =
                    body["errors"].as_array().expect("errors").iter().map(|e| &e["path"]).collect();
                assert_eq!(paths, [&json!(["customer", "journey"]), &json!(["customer", "touchpoints"])], "{body}");
            }
            if purpose == "personalization" {
                assert_eq!(keys(&served["touchpoints"]), vec!["totalCount", "edges", "pageInfo"], "{body}");
                assert_eq!(keys(&served["journey"]), vec!["stages", "currentStage"], "{body}");
                assert_eq!(keys(&served["consents"][0]), vec!["status", "purpose"], "{body}");
            }
        }
    }
}

on_every_backend!(
    a_refused_nullable_field_is_null_not_missing,
    restriction_mutations_answer_true_when_applied,
    fields_come_in_the_order_the_query_selects_them
);

#[tokio::test]
async fn the_standard_introspection_query_works_at_the_default_limits() {
    let app = spawn(Backend::Sqlite).await.expect("sqlite");
    let (status, body) = app.gql(&app.admin(), INTROSPECTION, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(body.get("errors").is_none(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "Customer"), "{body}");
    // The depth limit still holds for data.
    let deep = "{ customers(first: 1) { edges { node { identities { kind } } } } }";
    let limited = crate::common::spawn_with(Backend::Sqlite, |c| c.max_depth = 4).await.expect("sqlite");
    let (status, body) = limited.gql(&limited.admin(), deep, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    // And so does the introspection query at that depth limit.
    let (status, body) = limited.gql(&limited.admin(), INTROSPECTION, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_before_it_is_expanded() {
    let app = spawn(Backend::Sqlite).await.expect("sqlite");
    let mut query = String::from("query { ...F24 } fragment F0 on Query { __typename }");
    for n in 1..=24 {
        query.push_str(&format!(" fragment F{n} on Query {{ ...F{m} ...F{m} }}", m = n - 1));
    }
    let (status, body) = app.gql(&app.admin(), &query, json!({})).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap_or_default().contains("expanded"), "{body}");
}
