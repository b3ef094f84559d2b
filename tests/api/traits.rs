//! Every path tells the same truth: a customer's top-level names are the winning `givenName` / `familyName` trait
//! values after a trait-rule change, a manual merge, an unmerge, a record ingest and an upsert; a source that
//! re-sends its value later wins back under MOST_RECENT; a re-sent record without `observedAt` changes nothing.
use chrono::{Duration, SubsecRound, Utc};
use serde_json::{Value, json};

use crate::common::TestApp;

const INGEST: &str = "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) {
    created updated unchanged rejected results { status customerId recordId error { field code } } } }";

const NAMES: &str = "query($id: UUID!) { customer(id: $id) { givenName familyName
    traits { givenName familyName } traitHistory(name: \"givenName\") { value source observedAt } } }";

async fn ingest(app: &TestApp, records: Value) -> Value {
    app.data(&app.admin(), INGEST, json!({ "r": records })).await["ingestCustomerRecords"].clone()
}

fn ago(hours: i64) -> String {
    (Utc::now() - Duration::hours(hours)).to_rfc3339()
}

/// The customer's names, asserting first that the top-level names equal the winning traits on the same read.
async fn names(app: &TestApp, id: &str) -> Value {
    let data = app.data(&app.admin(), NAMES, json!({ "id": id })).await;
    let c = data["customer"].clone();
    assert_eq!(c["givenName"], c["traits"]["givenName"], "givenName and traits.givenName disagree: {c}");
    assert_eq!(c["familyName"], c["traits"]["familyName"], "familyName and traits.familyName disagree: {c}");
    c
}

async fn set_rules(app: &TestApp, rules: Value) {
    app.data(
        &app.admin(),
        "mutation($r: TraitRulesInput!) { updateTraitRules(rules: $r) { defaultRule } }",
        json!({ "r": rules }),
    )
    .await;
}

fn record(source: &str, key: &str, identity: Value, traits: Value, observed: Option<String>) -> Value {
    let mut r = json!({ "source": source, "sourceRecordId": key, "identities": [identity], "traits": traits });
    if let Some(at) = observed {
        r["observedAt"] = json!(at);
    }
    r
}

async fn a_trait_rule_change_re_derives_the_top_level_names(app: TestApp) {
    let email = json!({ "kind": "EMAIL", "value": "ann@example.com" });
    let done = ingest(
        &app,
        json!([
            record("webshop", "W-1", email.clone(), json!({ "givenName": "Ann", "familyName": "Berg" }), Some(ago(48))),
            record("pos", "S-1", email, json!({ "givenName": "Anne", "familyName": "Bergh" }), Some(ago(2))),
        ]),
    )
    .await;
    let id = done["results"][0]["customerId"].as_str().expect("id").to_owned();
    let before = names(&app, &id).await;
    assert_eq!(before["givenName"], "Anne", "most recent wins: {before}");

    set_rules(
        &app,
        json!({ "defaultRule": "MOST_RECENT", "rules": [
            { "name": "givenName", "rule": "SOURCE_PRIORITY", "sources": ["webshop", "pos"] },
            { "name": "familyName", "rule": "FIRST_NON_EMPTY", "sources": [] }
        ], "custom": [] }),
    )
    .await;
    let after = names(&app, &id).await;
    assert_eq!((&after["givenName"], &after["familyName"]), (&json!("Ann"), &json!("Berg")), "{after}");

    // Back to the default: the most recent values win again, on the top level too.
    set_rules(&app, json!({ "defaultRule": "MOST_RECENT", "rules": [], "custom": [] })).await;
    let back = names(&app, &id).await;
    assert_eq!((&back["givenName"], &back["familyName"]), (&json!("Anne"), &json!("Bergh")), "{back}");
}

async fn a_manual_merge_and_its_unmerge_re_derive_the_names(app: TestApp) {
    let a = ingest(
        &app,
        json!([record(
            "crm",
            "C-1",
            json!({ "kind": "EMAIL", "value": "a@example.com" }),
            json!({ "familyName": "Holm" }),
            Some(ago(48))
        )]),
    )
    .await["results"][0]["customerId"]
        .as_str()
        .expect("a")
        .to_owned();
    let b = ingest(
        &app,
        json!([record(
            "pos",
            "P-1",
            json!({ "kind": "PHONE", "value": "+4520998871" }),
            json!({ "givenName": "Bo", "familyName": "Dahl" }),
            Some(ago(2))
        )]),
    )
    .await["results"][0]["customerId"]
        .as_str()
        .expect("b")
        .to_owned();
    let before = names(&app, &a).await;
    assert_eq!((&before["givenName"], &before["familyName"]), (&Value::Null, &json!("Holm")));

    let merge = app
        .data(
            &app.admin(),
            "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }",
            json!({ "s": a, "m": b }),
        )
        .await["mergeCustomers"]["id"]
        .as_str()
        .expect("merge id")
        .to_owned();
    let merged = names(&app, &a).await;
    assert_eq!((&merged["givenName"], &merged["familyName"]), (&json!("Bo"), &json!("Dahl")), "{merged}");

    app.data(
        &app.admin(),
        "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }",
        json!({ "id": merge }),
    )
    .await;
    let a_again = names(&app, &a).await;
    assert_eq!((&a_again["givenName"], &a_again["familyName"]), (&Value::Null, &json!("Holm")), "{a_again}");
    let b_again = names(&app, &b).await;
    assert_eq!((&b_again["givenName"], &b_again["familyName"]), (&json!("Bo"), &json!("Dahl")), "{b_again}");
}

async fn a_source_re_sending_its_value_later_wins_back_under_most_recent(app: TestApp) {
    let email = json!({ "kind": "EMAIL", "value": "cy@example.com" });
    let crm = |at: String| record("crm", "C-7", email.clone(), json!({ "givenName": "Cy" }), Some(at));
    let done = ingest(
        &app,
        json!([crm(ago(48)), record("pos", "P-7", email.clone(), json!({ "givenName": "Cyril" }), Some(ago(24)))]),
    )
    .await;
    let id = done["results"][0]["customerId"].as_str().expect("id").to_owned();
    assert_eq!(names(&app, &id).await["givenName"], "Cyril");

    let again = ingest(&app, json!([crm(ago(1))])).await;
    assert_eq!(again["results"][0]["status"], "UPDATED", "a newer observation is news: {again}");
    let after = names(&app, &id).await;
    assert_eq!(after["traits"]["givenName"], "Cy", "the re-sent value was observed last: {after}");
    let history: Vec<(&str, &str)> = after["traitHistory"]
        .as_array()
        .expect("history")
        .iter()
        .map(|v| (v["value"].as_str().unwrap_or_default(), v["source"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(history, vec![("Cy", "crm"), ("Cyril", "pos"), ("Cy", "crm")], "each observation is kept");
}

async fn the_same_record_twice_without_observed_at_is_unchanged(app: TestApp) {
    let r =
        record("crm", "C-9", json!({ "kind": "EMAIL", "value": "di@example.com" }), json!({ "givenName": "Di" }), None);
    let first = ingest(&app, json!([r.clone()])).await;
    assert_eq!(first["results"][0]["status"], "CREATED", "{first}");
    let second = ingest(&app, json!([r])).await;
    assert_eq!(second["results"][0]["status"], "UNCHANGED", "the same record twice changes nothing: {second}");
    let id = first["results"][0]["customerId"].as_str().expect("id");
    let c = names(&app, id).await;
    assert_eq!(c["traitHistory"].as_array().map(Vec::len), Some(1), "{c}");
    let observed = app
        .data(&app.admin(), r#"{ sourceRecord(source: "crm", sourceRecordId: "C-9") { observedAt } }"#, json!({}))
        .await;
    assert_eq!(observed["sourceRecord"]["observedAt"], c["traitHistory"][0]["observedAt"], "first receipt stays");
}

const UPSERT: &str = "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) {
    customer { id givenName familyName } } }";

async fn upsert_names_are_trait_values_from_a_named_source(app: TestApp) {
    let email = json!({ "kind": "EMAIL", "value": "eva@example.com" });
    let data = app
        .data(
            &app.admin(),
            UPSERT,
            json!({ "input": { "identities": [email.clone()], "givenName": "Eva", "familyName": "Lund" } }),
        )
        .await;
    let id = data["upsertCustomer"]["customer"]["id"].as_str().expect("id").to_owned();
    let c = names(&app, &id).await;
    assert_eq!((&c["traits"]["givenName"], &c["traits"]["familyName"]), (&json!("Eva"), &json!("Lund")), "{c}");
    assert_eq!(c["traitHistory"].as_array().map(Vec::len), Some(1), "{c}");
    assert_eq!(c["traitHistory"][0]["source"], "api", "{c}");

    // A named source, and survivorship over it like over any other source.
    let data = app
        .data(
            &app.admin(),
            UPSERT,
            json!({ "input": { "identities": [email.clone()], "givenName": "Evi", "source": "agent-desk" } }),
        )
        .await;
    assert_eq!(data["upsertCustomer"]["customer"]["givenName"], "Evi", "{data}");
    let c = names(&app, &id).await;
    assert_eq!(c["traitHistory"][0]["value"], "Evi");
    assert_eq!(c["traitHistory"][0]["source"], "agent-desk");
    assert_eq!(c["familyName"], "Lund", "a name not given keeps its value");

    ingest(&app, json!([record("crm", "C-3", email, json!({ "givenName": "Evelyn" }), Some(ago(5)))])).await;
    assert_eq!(names(&app, &id).await["givenName"], "Evi", "the upsert was observed later than the crm record");
    set_rules(
        &app,
        json!({ "defaultRule": "MOST_RECENT", "rules": [{ "name": "givenName", "rule": "SOURCE_PRIORITY", "sources": ["crm"] }], "custom": [] }),
    )
    .await;
    assert_eq!(names(&app, &id).await["givenName"], "Evelyn");

    // The same name from the same source again changes nothing; a blank source is refused.
    let (_, body) = app
        .gql(
            &app.admin(),
            UPSERT,
            json!({ "input": { "identities": [{ "kind": "EMAIL", "value": "eva@example.com" }], "givenName": "Evi", "source": " " } }),
        )
        .await;
    assert_eq!(crate::common::first_code(&body), "VALIDATION", "{body}");
}

/// A customer written before names were trait values: names in the columns, no `trait_values` row. The backfill
/// migration gives it `legacy` trait values, so a merge (which re-derives the names) keeps them.
async fn names_written_before_traits_survive_a_merge_after_the_backfill(app: TestApp) {
    use kontakt::storage::entities::customer;
    use sea_orm::{ActiveModelTrait, Set};
    let db = app.db().await;
    let legacy = uuid::Uuid::now_v7();
    let written = (Utc::now() - Duration::days(3)).trunc_subsecs(6);
    customer::ActiveModel {
        id: Set(legacy),
        tenant: Set("acme".into()),
        given_name: Set(Some("Lena".into())),
        family_name: Set(Some("Lund".into())),
        created_at: Set(written),
        updated_at: Set(written),
        merged_into: Set(None),
        restricted: Set(false),
        consent_version: Set(0),
    }
    .insert(&db)
    .await
    .expect("a customer the old way");
    let other = app.upsert(&app.admin(), json!([{ "kind": "EMAIL", "value": "lena@example.com" }]), None).await;

    assert_eq!(migration::backfill_legacy_names(&db).await.expect("backfill"), 1);
    assert_eq!(migration::backfill_legacy_names(&db).await.expect("backfill again"), 0, "it runs once per customer");

    let merged = app
        .data(
            &app.admin(),
            "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }",
            json!({ "s": legacy, "m": other }),
        )
        .await;
    assert!(merged["mergeCustomers"]["id"].is_string(), "{merged}");
    let c = names(&app, &legacy.to_string()).await;
    assert_eq!((c["givenName"].as_str(), c["familyName"].as_str()), (Some("Lena"), Some("Lund")), "{c}");
    assert_eq!(c["traitHistory"][0]["source"], "legacy", "{c}");
    assert_eq!(
        c["traitHistory"][0]["observedAt"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()),
        Some(written.into()),
        "observed when the customer was last written: {c}"
    );
}

on_every_backend!(
    names_written_before_traits_survive_a_merge_after_the_backfill,
    a_trait_rule_change_re_derives_the_top_level_names,
    a_manual_merge_and_its_unmerge_re_derive_the_names,
    a_source_re_sending_its_value_later_wins_back_under_most_recent,
    the_same_record_twice_without_observed_at_is_unchanged,
    upsert_names_are_trait_values_from_a_named_source,
);
