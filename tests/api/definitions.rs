//! Computed traits and segments over HTTP: defined and versioned through the API, refused with the place of the
//! problem, evaluated when read (a window is exact to the second, a merge and an unmerge show at once), served only
//! for the caller's purpose and consent, and listed with the customers the caller may not see left out and counted.
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{grant, record},
};

fn definer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "profiles:write"], "support")
}

fn engine(app: &TestApp, purpose: &str) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], purpose)
}

const SEGMENT: &str = "mutation($i: DefineSegmentInput!) { defineSegment(input: $i) { key kind purpose version } }";
const TRAIT: &str =
    "mutation($i: DefineComputedTraitInput!) { defineComputedTrait(input: $i) { key kind purpose version } }";
const DERIVED: &str = "query($id: UUID!) { customer(id: $id) {
    segments { key version changesAt } computedTraits { key value } } }";

fn purchase(email: &str, key: &str, at: chrono::DateTime<Utc>, value: f64) -> Value {
    json!({ "identities": [{ "kind": "EMAIL", "value": email }], "channel": "WEB", "type": "PURCHASE",
            "source": "shop", "occurredAt": at.to_rfc3339(), "idempotencyKey": key, "value": value, "currency": "DKK" })
}

async fn customer_with(app: &TestApp, items: Value) -> String {
    let result = record(app, items).await;
    let id = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(app, &id, "personalization", "GRANTED").await;
    id
}

async fn derived(app: &TestApp, id: &str) -> Value {
    app.data(&engine(app, "personalization"), DERIVED, json!({ "id": id })).await["customer"].clone()
}

fn bought_within_7_days() -> Value {
    json!({ "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] }, "window": { "lastDays": 7 } },
            "op": "GTE", "value": 1 })
}

async fn a_seven_day_window_is_entered_with_a_touchpoint_and_left_when_it_passes(app: TestApp) {
    let defined = app
        .data(
            &definer(&app),
            SEGMENT,
            json!({ "i": { "key": "recent_buyer", "purpose": "personalization",
                                                       "condition": bought_within_7_days() } }),
        )
        .await;
    assert_eq!(
        defined["defineSegment"],
        json!({ "key": "recent_buyer", "kind": "SEGMENT", "purpose": "personalization", "version": 1 })
    );
    // A purchase 7 days minus 3 seconds ago: in the segment now, out 3 seconds later.
    let at = Utc::now() - Duration::days(7) + Duration::seconds(3);
    let id = customer_with(&app, json!([purchase("win@example.com", "w1", at, 10.0)])).await;
    let now = derived(&app, &id).await;
    assert_eq!(now["segments"][0]["key"], "recent_buyer", "{now}");
    let changes_at: chrono::DateTime<Utc> =
        now["segments"][0]["changesAt"].as_str().expect("changesAt").parse().expect("time");
    assert!((changes_at - (at + Duration::days(7))).num_milliseconds().abs() < 5, "{now}");
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(derived(&app, &id).await["segments"], json!([]), "the window passed");
    // A new purchase brings the customer back in on the next read.
    record(&app, json!([purchase("win@example.com", "w2", Utc::now() - Duration::minutes(1), 10.0)])).await;
    assert_eq!(derived(&app, &id).await["segments"][0]["key"], "recent_buyer");
}

async fn a_computed_trait_follows_a_merge_and_its_unmerge(app: TestApp) {
    app.data(
        &definer(&app),
        TRAIT,
        json!({ "i": { "key": "spend", "purpose": "personalization",
                       "aggregation": { "aggregate": "SUM", "of": "value", "filter": { "types": ["PURCHASE"] } } } }),
    )
    .await;
    let a = customer_with(&app, json!([purchase("ma@example.com", "m1", Utc::now() - Duration::days(1), 100.0)])).await;
    let b = customer_with(&app, json!([purchase("mb@example.com", "m2", Utc::now() - Duration::days(2), 50.0)])).await;
    assert_eq!(derived(&app, &a).await["computedTraits"], json!([{ "key": "spend", "value": 100.0 }]));
    let officer = app.token("acme", &["profiles:read", "profiles:write"], "support");
    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    let merged = app.data(&officer, merge, json!({ "s": a, "m": b })).await["mergeCustomers"]["id"].clone();
    assert_eq!(derived(&app, &a).await["computedTraits"], json!([{ "key": "spend", "value": 150.0 }]));
    let unmerge = "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }";
    app.data(&officer, unmerge, json!({ "id": merged })).await;
    assert_eq!(derived(&app, &a).await["computedTraits"], json!([{ "key": "spend", "value": 100.0 }]));
    assert_eq!(derived(&app, &b).await["computedTraits"], json!([{ "key": "spend", "value": 50.0 }]));
}

async fn a_new_version_serves_once_backfilled_and_a_bad_one_is_refused_by_its_place(app: TestApp) {
    let id =
        customer_with(&app, json!([purchase("ver@example.com", "v1", Utc::now() - Duration::days(1), 10.0)])).await;
    app.data(
        &definer(&app),
        SEGMENT,
        json!({ "i": { "key": "buyer", "purpose": "personalization",
                                                     "condition": bought_within_7_days() } }),
    )
    .await;
    assert_eq!(derived(&app, &id).await["segments"][0]["version"], 1);
    let twice =
        json!({ "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] } }, "op": "GTE", "value": 2 });
    let v2 = app
        .data(
            &definer(&app),
            SEGMENT,
            json!({ "i": { "key": "buyer", "purpose": "personalization",
                                                              "condition": twice } }),
        )
        .await;
    assert_eq!(v2["defineSegment"]["version"], 2);
    // Version 2 answers once its backfill has run (the old version answers meanwhile: tests/api/derived_changes.rs).
    let mut segments = json!(null);
    for _ in 0..100 {
        segments = derived(&app, &id).await["segments"].clone();
        if segments == json!([]) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(segments, json!([]), "version 2 needs two purchases");
    let listed = app.data(&definer(&app), "{ definitions { key version kind } }", json!({})).await;
    assert_eq!(listed["definitions"], json!([{ "key": "buyer", "version": 2, "kind": "SEGMENT" }]));

    // Refusals say where and why.
    let bad = json!({ "all": [{ "hasIdentity": "EMAIL" }, { "aggregate": { "aggregate": "COUNT",
                       "window": { "lastWeeks": 2 } }, "op": "GTE", "value": 1 }] });
    let (_, body) = app
        .gql(&definer(&app), SEGMENT, json!({ "i": { "key": "bad", "purpose": "personalization", "condition": bad } }))
        .await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "condition.all[1]", "{body}");
    let (_, body) = app
        .gql(
            &definer(&app),
            SEGMENT,
            json!({ "i": { "key": "loop_a", "purpose": "personalization",
                                                      "condition": { "inSegment": "loop_b" } } }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "condition.inSegment", "{body}");
    app.data(
        &definer(&app),
        SEGMENT,
        json!({ "i": { "key": "loop_b", "purpose": "personalization",
                                                     "condition": { "hasIdentity": "EMAIL" } } }),
    )
    .await;
    app.data(
        &definer(&app),
        SEGMENT,
        json!({ "i": { "key": "loop_a", "purpose": "personalization",
                                                     "condition": { "inSegment": "loop_b" } } }),
    )
    .await;
    let (_, body) = app
        .gql(
            &definer(&app),
            SEGMENT,
            json!({ "i": { "key": "loop_b", "purpose": "personalization",
                                                      "condition": { "inSegment": "loop_a" } } }),
        )
        .await;
    assert!(body["errors"][0]["message"].as_str().unwrap_or("").contains("refers to itself"), "{body}");
    let (_, body) = app
        .gql(
            &definer(&app),
            SEGMENT,
            json!({ "i": { "key": "x", "purpose": "gossip", "condition": { "hasIdentity": "EMAIL" } } }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "purpose", "{body}");
}

async fn values_are_served_for_the_caller_s_purpose_and_consent_and_lists_count_who_is_left_out(app: TestApp) {
    for (key, purpose) in [("p_buyer", "personalization"), ("m_buyer", "marketing")] {
        app.data(
            &definer(&app),
            SEGMENT,
            json!({ "i": { "key": key, "purpose": purpose, "condition": bought_within_7_days() } }),
        )
        .await;
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        let email = format!("list{i}@example.com");
        ids.push(
            customer_with(&app, json!([purchase(&email, &format!("l{i}"), Utc::now() - Duration::days(1), 5.0)])).await,
        );
    }
    // One consents to nothing; one denies profiling.
    grant(&app, &ids[1], "personalization", "WITHDRAWN").await;
    grant(&app, &ids[2], "profiling", "DENIED").await;
    // A personalization caller sees only the personalization segment.
    let segments = derived(&app, &ids[0]).await["segments"].clone();
    assert_eq!(segments.as_array().map(Vec::len), Some(1), "{segments}");
    assert_eq!(segments[0]["key"], "p_buyer");
    let (_, body) = app.gql(&engine(&app, "personalization"), DERIVED, json!({ "id": ids[1] })).await;
    assert_eq!(
        (first_code(&body), body["errors"][0]["extensions"]["reason"].clone()),
        ("CONSENT_REQUIRED", json!("WITHDRAWN"))
    );
    let (_, body) = app.gql(&engine(&app, "personalization"), DERIVED, json!({ "id": ids[2] })).await;
    assert_eq!(body["errors"][0]["extensions"]["reason"], "PROFILING_REFUSED", "{body}");

    const MEMBERS: &str = "query($k: String!, $after: String) { segmentMembers(key: $k, first: 10, after: $after) {
        customerIds excludedCount scanned endCursor hasNextPage } }";
    let page = app.data(&engine(&app, "personalization"), MEMBERS, json!({ "k": "p_buyer", "after": null })).await;
    let page = &page["segmentMembers"];
    let mut members: Vec<String> =
        page["customerIds"].as_array().expect("ids").iter().map(|v| v.as_str().unwrap_or("").to_owned()).collect();
    members.sort();
    let mut want = vec![ids[0].clone(), ids[3].clone()];
    want.sort();
    assert_eq!(members, want, "{page}");
    assert_eq!(page["excludedCount"], 2, "{page}");
    assert_eq!((page["scanned"].clone(), page["hasNextPage"].clone()), (json!(4), json!(false)));
    // A marketing segment is not served to a personalization caller.
    let (_, body) = app.gql(&engine(&app, "personalization"), MEMBERS, json!({ "k": "m_buyer", "after": null })).await;
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    // Paging: one member per page, resuming after the cursor.
    const ONE: &str = "query($after: String) { segmentMembers(key: \"p_buyer\", first: 1, after: $after) {
        customerIds endCursor hasNextPage } }";
    let first =
        app.data(&engine(&app, "personalization"), ONE, json!({ "after": null })).await["segmentMembers"].clone();
    assert_eq!((first["customerIds"].as_array().map(Vec::len), first["hasNextPage"].clone()), (Some(1), json!(true)));
    let second =
        app.data(&engine(&app, "personalization"), ONE, json!({ "after": first["endCursor"] })).await["segmentMembers"]
            .clone();
    assert_eq!(second["customerIds"].as_array().map(Vec::len), Some(1), "{second}");
    assert_ne!(first["customerIds"][0], second["customerIds"][0]);

    const PREVIEW: &str = "query($b: JSON!) { previewDefinition(kind: SEGMENT, body: $b) { sampled matched visible examples { customerId value } } }";
    let preview = app.data(&engine(&app, "personalization"), PREVIEW, json!({ "b": bought_within_7_days() })).await;
    let preview = &preview["previewDefinition"];
    assert_eq!(
        (preview["sampled"].clone(), preview["matched"].clone(), preview["visible"].clone()),
        (json!(4), json!(4), json!(2))
    );
    assert_eq!(preview["examples"].as_array().map(Vec::len), Some(2));
}

on_every_backend!(
    a_seven_day_window_is_entered_with_a_touchpoint_and_left_when_it_passes,
    a_computed_trait_follows_a_merge_and_its_unmerge,
    a_new_version_serves_once_backfilled_and_a_bad_one_is_refused_by_its_place,
    values_are_served_for_the_caller_s_purpose_and_consent_and_lists_count_who_is_left_out,
);
