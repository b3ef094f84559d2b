//! Identity resolution rules: blocked values never link anyone, per-kind limits stop a shared device from gluing
//! people together, the strongest identity decides, and the rules are the tenant's own.
use serde_json::json;

use crate::{
    common::{TestApp, first_code},
    touchpoints::{record, touchpoint},
};

const RULES: &str = "{ resolutionRules { blockedValues blockedPatterns limits { kind max } priority } }";
const UPDATE: &str = "mutation($r: ResolutionRulesInput!) { updateResolutionRules(rules: $r) { limits { kind max } } }";

async fn blocked_values_never_link_anyone(app: TestApp) {
    let a = record(
        &app,
        json!([touchpoint(
            "b1",
            json!([{ "kind": "EMAIL", "value": "TEST@test.com" }, { "kind": "EMAIL", "value": "ann@example.com" }]),
            "PAGE_VIEW",
            2
        )]),
    )
    .await;
    let b = record(
        &app,
        json!([touchpoint(
            "b2",
            json!([{ "kind": "EMAIL", "value": "test@test.com" }, { "kind": "EMAIL", "value": "bo@example.com" }]),
            "PAGE_VIEW",
            1
        )]),
    )
    .await;
    assert_ne!(a["results"][0]["customerId"], b["results"][0]["customerId"], "the placeholder email glued two people");
    let only_blocked =
        record(&app, json!([touchpoint("b3", json!([{ "kind": "ANONYMOUS_ID", "value": "null" }]), "PAGE_VIEW", 1)]))
            .await;
    assert_eq!(only_blocked["results"][0]["status"], "REJECTED");
    assert_eq!(only_blocked["results"][0]["error"]["field"], "identities");
    let (_, body) = app
        .gql(
            &app.admin(),
            r#"{ customerByIdentity(identity: {kind: EMAIL, value: "test@test.com"}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND", "a blocked value is never stored: {body}");
}

async fn a_record_over_a_limit_is_attached_by_its_strongest_identity(app: TestApp) {
    let token = app.token("acme", &["profiles:read", "profiles:write"], "support");
    let defaults = app.data(&token, RULES, json!({})).await["resolutionRules"].clone();
    assert!(
        defaults["limits"].as_array().is_some_and(|l| l.contains(&json!({ "kind": "CRM_ID", "max": 1 }))),
        "{defaults}"
    );
    let mut rules = defaults.clone();
    for limit in rules["limits"].as_array_mut().expect("limits") {
        if limit["kind"] == "EMAIL" {
            limit["max"] = json!(1);
        }
    }
    app.data(&token, UPDATE, json!({ "r": rules })).await;

    // One store tablet (device d-1), two shoppers.
    let first = record(
        &app,
        json!([touchpoint(
            "t1",
            json!([{ "kind": "EMAIL", "value": "one@example.com" }, { "kind": "DEVICE_ID", "value": "tablet-1" }]),
            "STORE_VISIT",
            3
        )]),
    )
    .await;
    let second = record(
        &app,
        json!([touchpoint(
            "t2",
            json!([{ "kind": "EMAIL", "value": "two@example.com" }, { "kind": "DEVICE_ID", "value": "tablet-1" }]),
            "STORE_VISIT",
            2
        )]),
    )
    .await;
    let (one, two) = (first["results"][0]["customerId"].clone(), second["results"][0]["customerId"].clone());
    assert_ne!(one, two, "a second email would break the limit of 1: the record gets its own customer");
    let data = app
        .data(&app.admin(), r#"{ customerByIdentity(identity: {kind: DEVICE_ID, value: "tablet-1"}) { id identities { kind value } } }"#, json!({}))
        .await;
    assert_eq!(data["customerByIdentity"]["id"], one, "the device stays where it was first seen");
    let emails: Vec<&str> = data["customerByIdentity"]["identities"]
        .as_array()
        .expect("ids")
        .iter()
        .filter(|i| i["kind"] == "EMAIL")
        .filter_map(|i| i["value"].as_str())
        .collect();
    assert_eq!(emails, vec!["one@example.com"]);

    // The second customer's identity graph says why the tablet did not glue them together.
    let graph = app
        .data(&app.admin(), "query($id: UUID!) { customer(id: $id) { identityGraph { identities { kind } conflicts { kind reason otherCustomerId } } } }", json!({ "id": two }))
        .await;
    let conflicts = graph["customer"]["identityGraph"]["conflicts"].as_array().expect("conflicts").clone();
    assert!(
        conflicts.contains(&json!({ "kind": "EMAIL", "reason": "LIMIT", "otherCustomerId": one })),
        "{conflicts:?}"
    );
    assert!(
        conflicts.contains(&json!({ "kind": "DEVICE_ID", "reason": "OWNED_BY_OTHER", "otherCustomerId": one })),
        "{conflicts:?}"
    );

    // The same email again still finds its own customer.
    let again = record(
        &app,
        json!([touchpoint("t3", json!([{ "kind": "EMAIL", "value": "two@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await;
    assert_eq!(again["results"][0]["customerId"], two);
}

async fn a_store_record_with_phone_and_email_joins_the_web_customer(app: TestApp) {
    let web = record(
        &app,
        json!([touchpoint(
            "w",
            json!([{ "kind": "EMAIL", "value": "Mia@Example.com" }, { "kind": "ANONYMOUS_ID", "value": "cookie-9" }]),
            "PAGE_VIEW",
            9
        )]),
    )
    .await;
    let web_customer = web["results"][0]["customerId"].as_str().expect("id").to_owned();
    let store = app
        .upsert(
            &app.admin(),
            json!([{ "kind": "PHONE", "value": "+45 20 99 88 11" }, { "kind": "EMAIL", "value": "mia@example.com" }]),
            Some("Mia"),
        )
        .await;
    assert_eq!(store, web_customer);
}

async fn rules_are_validated_and_belong_to_their_tenant(app: TestApp) {
    let token = app.token("acme", &["profiles:read", "profiles:write"], "support");
    let mut rules = app.data(&token, RULES, json!({})).await["resolutionRules"].clone();
    rules["blockedPatterns"] = json!(["(unclosed"]);
    let (_, body) = app.gql(&token, UPDATE, json!({ "r": rules })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "blockedPatterns[0]");
    rules["blockedPatterns"] = json!([]);
    rules["blockedValues"] = json!(["vip@example.com"]);
    app.data(&token, UPDATE, json!({ "r": rules })).await;
    let other = app.token("other", &["profiles:read", "profiles:write"], "support");
    let theirs = app.data(&other, RULES, json!({})).await;
    assert!(
        theirs["resolutionRules"]["blockedValues"].as_array().is_some_and(|v| v.contains(&json!("test@test.com"))),
        "{theirs}"
    );
    let reader = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app.gql(&reader, UPDATE, json!({ "r": rules })).await;
    assert_eq!(first_code(&body), "FORBIDDEN");
}

async fn a_value_blocked_after_the_fact_undoes_the_merges_it_made(app: TestApp) {
    let a = record(
        &app,
        json!([touchpoint("r1", json!([{ "kind": "EMAIL", "value": "ra@example.com" }]), "PAGE_VIEW", 9)]),
    )
    .await;
    let b = record(
        &app,
        json!([touchpoint("r2", json!([{ "kind": "ANONYMOUS_ID", "value": "kiosk-7" }]), "PAGE_VIEW", 8)]),
    )
    .await;
    let (a, b) = (a["results"][0]["customerId"].clone(), b["results"][0]["customerId"].clone());
    // One record names both: the kiosk's anonymous id merges b into a.
    let both = record(
        &app,
        json!([touchpoint(
            "r3",
            json!([{ "kind": "EMAIL", "value": "ra@example.com" }, { "kind": "ANONYMOUS_ID", "value": "kiosk-7" }]),
            "PAGE_VIEW",
            1
        )]),
    )
    .await;
    assert_eq!(both["results"][0]["customerId"], a);
    let token = app.token("acme", &["profiles:read", "profiles:write", "touchpoints:read"], "support");
    let mut rules = app.data(&token, RULES, json!({})).await["resolutionRules"].clone();
    rules["blockedValues"].as_array_mut().expect("list").push(json!("kiosk-7"));
    app.data(&token, UPDATE, json!({ "r": rules })).await;
    let report = app.reresolve(&token).await;
    assert_eq!(report, json!({ "identitiesRemoved": 1, "mergesUndone": 1, "mergesKept": 0, "identitiesUnlinked": 0 }));
    let split = app
        .data(
            &token,
            "query($id: UUID!) { customer(id: $id) { id touchpoints { totalCount } identities { kind } } }",
            json!({ "id": b }),
        )
        .await;
    assert_eq!(split["customer"]["id"], b, "b is itself again");
    assert_eq!(split["customer"]["touchpoints"]["totalCount"], 1);
    assert_eq!(split["customer"]["identities"], json!([]), "the blocked identity is gone");
    let (_, body) = app
        .gql(&token, r#"{ customerByIdentity(identity: {kind: ANONYMOUS_ID, value: "kiosk-7"}) { id } }"#, json!({}))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");
}

pub async fn lower_limit(app: &TestApp, token: &str, kind: &str, max: u32) {
    let mut rules = app.data(token, RULES, json!({})).await["resolutionRules"].clone();
    let mut found = false;
    for limit in rules["limits"].as_array_mut().expect("limits") {
        if limit["kind"] == kind {
            limit["max"] = json!(max);
            found = true;
        }
    }
    assert!(found, "{rules}");
    app.data(token, UPDATE, json!({ "r": rules })).await;
}

/// The customer's values of one identity kind, sorted.
pub async fn values_of(app: &TestApp, customer: &str, kind: &str) -> Vec<String> {
    let data = app
        .data(
            &app.admin(),
            "query($id: UUID!) { customer(id: $id) { id identities { kind value } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(data["customer"]["id"], customer, "{data}");
    let mut values: Vec<String> = data["customer"]["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .filter(|i| i["kind"] == kind)
        .filter_map(|i| i["value"].as_str().map(str::to_owned))
        .collect();
    values.sort();
    values
}

pub fn email(value: &str) -> serde_json::Value {
    json!({ "kind": "EMAIL", "value": value })
}

async fn a_limit_lowered_after_the_fact_unlinks_the_newest_excess_identities(app: TestApp) {
    let token = app.token("acme", &["profiles:read", "profiles:write", "touchpoints:read"], "support");
    let customer = app.upsert(&app.admin(), json!([email("l1@example.com")]), None).await;
    for value in ["l2@example.com", "l3@example.com", "l4@example.com"] {
        let id = app.upsert(&app.admin(), json!([email("l1@example.com"), email(value)]), None).await;
        assert_eq!(id, customer, "{value} joins the customer");
    }
    let visit = record(&app, json!([touchpoint("lim-1", json!([email("l4@example.com")]), "PAGE_VIEW", 1)])).await;
    assert_eq!(visit["results"][0]["customerId"], customer.as_str());
    assert_eq!(values_of(&app, &customer, "EMAIL").await.len(), 4);

    lower_limit(&app, &token, "EMAIL", 2).await;
    let report = app.reresolve(&token).await;
    assert_eq!(report, json!({ "identitiesRemoved": 0, "mergesUndone": 0, "mergesKept": 0, "identitiesUnlinked": 2 }));
    assert_eq!(values_of(&app, &customer, "EMAIL").await, ["l1@example.com", "l2@example.com"], "the oldest stay");
    let graph = app
        .data(
            &token,
            "query($id: UUID!) { customer(id: $id) { touchpoints { totalCount }
                identityGraph { conflicts { kind reason otherCustomerId } } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(graph["customer"]["touchpoints"]["totalCount"], 1, "the customer keeps its touchpoints");
    let conflicts = graph["customer"]["identityGraph"]["conflicts"].as_array().expect("conflicts");
    let lowered = json!({ "kind": "EMAIL", "reason": "LIMIT_LOWERED", "otherCustomerId": null });
    assert_eq!(conflicts.iter().filter(|c| **c == lowered).count(), 2, "{conflicts:?}");

    let again = app.reresolve(&token).await;
    assert_eq!(
        again,
        json!({ "identitiesRemoved": 0, "mergesUndone": 0, "mergesKept": 0, "identitiesUnlinked": 0 }),
        "nothing left to apply"
    );

    // An unlinked email no longer leads to the customer: alone, it makes a customer of its own.
    let own = app.upsert(&app.admin(), json!([email("l4@example.com")]), None).await;
    assert_ne!(own, customer, "the unlinked email landed on the customer it was unlinked from");
    let found = app
        .data(&token, r#"{ customerByIdentity(identity: {kind: EMAIL, value: "l4@example.com"}) { id } }"#, json!({}))
        .await;
    assert_eq!(found["customerByIdentity"]["id"], own.as_str());
    // Named beside a kept email, the record finds the customer, and the limit keeps the unlinked one off it.
    let beside = app.upsert(&app.admin(), json!([email("l1@example.com"), email("l3@example.com")]), None).await;
    assert_eq!(beside, customer);
    assert_eq!(values_of(&app, &customer, "EMAIL").await, ["l1@example.com", "l2@example.com"]);
    let (_, body) = app
        .gql(&token, r#"{ customerByIdentity(identity: {kind: EMAIL, value: "l3@example.com"}) { id } }"#, json!({}))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
}

async fn a_lowered_limit_first_undoes_the_automatic_merges_that_broke_it(app: TestApp) {
    let token = app.token("acme", &["profiles:read", "profiles:write", "touchpoints:read"], "support");
    let x = app.upsert(&app.admin(), json!([email("x1@example.com")]), None).await;
    for value in ["x2@example.com", "x3@example.com"] {
        assert_eq!(app.upsert(&app.admin(), json!([email("x1@example.com"), email(value)]), None).await, x);
    }
    let cookie = json!({ "kind": "ANONYMOUS_ID", "value": "cookie-lm" });
    let y = record(&app, json!([touchpoint("lm-y", json!([email("y1@example.com"), cookie]), "PAGE_VIEW", 9)])).await;
    let y = y["results"][0]["customerId"].as_str().expect("y").to_owned();
    assert_ne!(x, y);
    // One visit names x's email and y's cookie: y is merged into x, which then holds four emails.
    let both =
        record(&app, json!([touchpoint("lm-xy", json!([email("x1@example.com"), cookie]), "PAGE_VIEW", 1)])).await;
    assert_eq!(both["results"][0]["customerId"], x.as_str());
    assert_eq!(values_of(&app, &x, "EMAIL").await.len(), 4);

    lower_limit(&app, &token, "EMAIL", 2).await;
    let report = app.reresolve(&token).await;
    assert_eq!(
        report,
        json!({ "identitiesRemoved": 0, "mergesUndone": 1, "mergesKept": 0, "identitiesUnlinked": 1 }),
        "the merge that brought y's email is undone first, then x's newest email goes"
    );
    assert_eq!(values_of(&app, &x, "EMAIL").await, ["x1@example.com", "x2@example.com"]);
    assert_eq!(values_of(&app, &y, "EMAIL").await, ["y1@example.com"], "y is itself again");
    assert_eq!(values_of(&app, &y, "ANONYMOUS_ID").await, ["cookie-lm"]);
    let history = app
        .data(
            &token,
            "query($id: UUID!) { customer(id: $id) { mergeHistory { reason undoneAt } } }",
            json!({ "id": x }),
        )
        .await;
    assert!(history["customer"]["mergeHistory"][0]["undoneAt"].is_string(), "{history}");
}

on_every_backend!(
    a_limit_lowered_after_the_fact_unlinks_the_newest_excess_identities,
    a_lowered_limit_first_undoes_the_automatic_merges_that_broke_it,
    a_value_blocked_after_the_fact_undoes_the_merges_it_made,
    blocked_values_never_link_anyone,
    a_record_over_a_limit_is_attached_by_its_strongest_identity,
    a_store_record_with_phone_and_email_joins_the_web_customer,
    rules_are_validated_and_belong_to_their_tenant,
);
