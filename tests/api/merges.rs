//! Merging and unmerging: a manual merge and its unmerge round-trip exactly, consents resolve to the most
//! restrictive, merged-away ids answer with the survivor, and resolution merges when one identity points at two.
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{grant, record, touchpoint},
};

const SNAPSHOT: &str = "query($id: UUID!) { customer(id: $id) { id mergedInto requestedId
    identities { kind value } consents { purpose status }
    consentHistory(first: 50) { edges { node { id status } } }
    touchpoints(first: 50) { edges { node { id } } } } }";

fn officer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "profiles:write", "touchpoints:read", "pii:read"], "support")
}

async fn snapshot(app: &TestApp, id: &str) -> Value {
    app.data(&officer(app), SNAPSHOT, json!({ "id": id })).await["customer"].clone()
}

async fn a_manual_merge_and_its_unmerge_round_trip_exactly(app: TestApp) {
    let a = record(
        &app,
        json!([
            touchpoint("a1", json!([{ "kind": "EMAIL", "value": "a@example.com" }]), "PAGE_VIEW", 9),
            touchpoint("a2", json!([{ "kind": "EMAIL", "value": "a@example.com" }]), "PURCHASE", 8)
        ]),
    )
    .await;
    let b =
        record(&app, json!([touchpoint("b1", json!([{ "kind": "PHONE", "value": "+4520998870" }]), "STORE_VISIT", 7)]))
            .await;
    let (a, b) = (
        a["results"][0]["customerId"].as_str().expect("a").to_owned(),
        b["results"][0]["customerId"].as_str().expect("b").to_owned(),
    );
    grant(&app, &a, "personalization", "GRANTED").await;
    grant(&app, &b, "personalization", "GRANTED").await;
    grant(&app, &b, "personalization", "WITHDRAWN").await;
    grant(&app, &b, "analytics", "GRANTED").await;
    let (before_a, before_b) = (snapshot(&app, &a).await, snapshot(&app, &b).await);

    let merged = app
        .data(&officer(&app), "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m, note: \"same person\") { id reason evidence survivorId mergedId } }", json!({ "s": a, "m": b }))
        .await["mergeCustomers"]
        .clone();
    assert_eq!(merged["reason"], "MANUAL");
    let after = snapshot(&app, &a).await;
    assert_eq!(after["touchpoints"]["edges"].as_array().map(Vec::len), Some(3));
    assert_eq!(after["identities"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        after["consents"],
        json!([{ "purpose": "analytics", "status": "GRANTED" }, { "purpose": "personalization", "status": "WITHDRAWN" }]),
        "the most restrictive wins"
    );
    assert_eq!(merged["evidence"]["consentConflicts"], json!([{ "purpose": "personalization", "channel": null }]));

    let via_b = snapshot(&app, &b).await;
    assert_eq!(via_b["id"], a.as_str(), "a merged-away id answers with the survivor");
    assert_eq!(via_b["mergedInto"], a.as_str());
    assert_eq!(via_b["requestedId"], b.as_str());
    let list = app.data(&officer(&app), "{ customers(first: 50) { edges { node { id } } } }", json!({})).await;
    let ids: Vec<&str> =
        list["customers"]["edges"].as_array().expect("edges").iter().filter_map(|e| e["node"]["id"].as_str()).collect();
    assert_eq!(ids, vec![a.as_str()], "lists show survivors only");

    let history = app
        .data(
            &officer(&app),
            "query($id: UUID!) { customer(id: $id) { mergeHistory { id reason undoneAt } } }",
            json!({ "id": a }),
        )
        .await;
    assert_eq!(history["customer"]["mergeHistory"][0]["id"], merged["id"]);

    let undone = app
        .data(
            &officer(&app),
            "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }",
            json!({ "id": merged["id"] }),
        )
        .await;
    assert!(undone["unmergeCustomer"]["undoneAt"].is_string());
    assert_eq!(snapshot(&app, &a).await, before_a, "the survivor is as it was");
    assert_eq!(snapshot(&app, &b).await, before_b, "the merged customer is itself again");

    let (_, body) = app
        .gql(
            &officer(&app),
            "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { id } }",
            json!({ "id": merged["id"] }),
        )
        .await;
    assert_eq!(first_code(&body), "CONFLICT");
    let stranger = app.token("other", &["profiles:read", "profiles:write"], "support");
    let (_, body) = app
        .gql(&stranger, "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { id } }", json!({ "id": merged["id"] }))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");
    let (_, body) = app
        .gql(
            &stranger,
            "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }",
            json!({ "s": a, "m": b }),
        )
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");
}

async fn one_identity_pointing_at_two_customers_merges_them_with_evidence(app: TestApp) {
    let x =
        record(&app, json!([touchpoint("x1", json!([{ "kind": "EMAIL", "value": "x@example.com" }]), "PAGE_VIEW", 9)]))
            .await;
    let y = record(
        &app,
        json!([touchpoint("y1", json!([{ "kind": "ANONYMOUS_ID", "value": "cookie-y" }]), "PAGE_VIEW", 8)]),
    )
    .await;
    let (x, y) = (
        x["results"][0]["customerId"].as_str().expect("x").to_owned(),
        y["results"][0]["customerId"].as_str().expect("y").to_owned(),
    );
    assert_ne!(x, y);
    // Warm the cached profile of the customer about to be merged away.
    assert_eq!(snapshot(&app, &y).await["id"], y.as_str());
    let both = record(
        &app,
        json!([touchpoint(
            "xy",
            json!([{ "kind": "EMAIL", "value": "x@example.com" }, { "kind": "ANONYMOUS_ID", "value": "cookie-y" }]),
            "CUSTOM",
            1
        )]),
    )
    .await;
    assert_eq!(both["results"][0]["customerId"], x.as_str(), "the email is the stronger identity");
    let via_y = snapshot(&app, &y).await;
    assert_eq!(
        (via_y["id"].as_str(), via_y["mergedInto"].as_str()),
        (Some(x.as_str()), Some(x.as_str())),
        "no stale cached profile"
    );
    let data = app.data(&officer(&app), "query($id: UUID!) { customer(id: $id) { touchpoints { totalCount } mergeHistory { reason mergedId evidence } } }", json!({ "id": x })).await;
    assert_eq!(data["customer"]["touchpoints"]["totalCount"], 3, "the anonymous history came along");
    let merge = &data["customer"]["mergeHistory"][0];
    assert_eq!(merge["reason"], "IDENTITY");
    assert_eq!(merge["mergedId"], y.as_str());
    assert_eq!(merge["evidence"]["kind"], "anonymous_id", "the identity that pointed at the merged customer");
    assert!(!merge["evidence"].to_string().contains("x@example.com"), "evidence names the identity, not its value");

    // Erasing the survivor erases the merged-away customer too: they are one person.
    let admin = app.token("acme", &["profiles:read", "privacy:admin"], "privacy_admin");
    let receipt =
        app.data(&admin, "mutation($id: UUID!) { eraseCustomer(id: $id) { rows } }", json!({ "id": x })).await;
    assert_eq!(receipt["eraseCustomer"]["rows"]["customers"], 2);
    let (_, body) = app.gql(&admin, "query($id: UUID!) { customer(id: $id) { id } }", json!({ "id": y })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
}

const INGEST: &str = "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) {
    results { status customerId error { field message } } } }";

/// The idempotency keys of a customer's touchpoints, sorted.
async fn touchpoint_keys(app: &TestApp, id: &str) -> Vec<String> {
    let data = app
        .data(
            &officer(app),
            "query($id: UUID!) { customer(id: $id) { id touchpoints(first: 50) { edges { node { idempotencyKey } } } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(data["customer"]["id"], id, "{data}");
    let mut keys: Vec<String> = data["customer"]["touchpoints"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["node"]["idempotencyKey"].as_str().map(str::to_owned))
        .collect();
    keys.sort();
    keys
}

async fn record_owner(app: &TestApp, source: &str, key: &str) -> String {
    let data = app
        .data(
            &officer(app),
            "query($s: String!, $k: String!) { sourceRecord(source: $s, sourceRecordId: $k) { customerId } }",
            json!({ "s": source, "k": key }),
        )
        .await;
    data["sourceRecord"]["customerId"].as_str().expect("customerId").to_owned()
}

async fn rows_that_arrive_after_a_merge_follow_their_identities_when_it_is_undone(app: TestApp) {
    let email = json!([{ "kind": "EMAIL", "value": "later-a@example.com" }]);
    let phone = json!([{ "kind": "PHONE", "value": "+4520998871" }]);
    let a = record(&app, json!([touchpoint("la0", email.clone(), "PAGE_VIEW", 60)])).await;
    let b = record(&app, json!([touchpoint("lb0", phone.clone(), "STORE_VISIT", 50)])).await;
    let (a, b) = (
        a["results"][0]["customerId"].as_str().expect("a").to_owned(),
        b["results"][0]["customerId"].as_str().expect("b").to_owned(),
    );
    assert_ne!(a, b);
    let merged = app
        .data(
            &officer(&app),
            "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }",
            json!({ "s": a, "m": b }),
        )
        .await["mergeCustomers"]["id"]
        .clone();

    // After the merge, B's phone and A's email both lead to the survivor.
    let later = record(
        &app,
        json!([
            touchpoint("lb1", phone.clone(), "PURCHASE", 5),
            touchpoint("la1", email.clone(), "PAGE_VIEW", 4),
            touchpoint(
                "lab",
                json!([{ "kind": "PHONE", "value": "+4520998871" }, { "kind": "EMAIL", "value": "later-a@example.com" }]),
                "CUSTOM",
                3
            )
        ]),
    )
    .await;
    for result in later["results"].as_array().expect("results") {
        assert_eq!(result["customerId"], a.as_str(), "{later}");
    }
    let records = app
        .data(
            &app.admin(),
            INGEST,
            json!({ "r": [
                { "source": "crm", "sourceRecordId": "LB-1", "identities": phone, "traits": { "givenName": "Bo" } },
                { "source": "crm", "sourceRecordId": "LA-1", "identities": email, "traits": { "givenName": "Ann" } },
                { "source": "pos", "sourceRecordId": "LAB-1",
                  "identities": [{ "kind": "PHONE", "value": "+4520998871" }, { "kind": "EMAIL", "value": "later-a@example.com" }],
                  "traits": { "country": "DK" } }
            ] }),
        )
        .await;
    for result in records["ingestCustomerRecords"]["results"].as_array().expect("results") {
        assert_eq!(result["customerId"], a.as_str(), "{records}");
    }
    assert_eq!(touchpoint_keys(&app, &a).await, ["la0", "la1", "lab", "lb0", "lb1"]);

    app.data(
        &officer(&app),
        "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }",
        json!({ "id": merged }),
    )
    .await;
    assert_eq!(touchpoint_keys(&app, &b).await, ["lb0", "lb1"], "B's later touchpoint follows B's phone");
    assert_eq!(
        touchpoint_keys(&app, &a).await,
        ["la0", "la1", "lab"],
        "A's own, and the one attached through A's email (the stronger identity), stay"
    );
    assert_eq!(record_owner(&app, "crm", "LB-1").await, b, "a later record follows its identity");
    assert_eq!(record_owner(&app, "crm", "LA-1").await, a);
    assert_eq!(record_owner(&app, "pos", "LAB-1").await, a, "its strongest identity is A's email");
    let names = "query($id: UUID!) { customer(id: $id) { givenName traits { givenName }
        traitHistory(name: \"givenName\") { value } } }";
    let b_now = app.data(&app.admin(), names, json!({ "id": b })).await["customer"].clone();
    assert_eq!(b_now["traits"]["givenName"], "Bo", "the record's trait values came along: {b_now}");
    assert_eq!(b_now["givenName"], "Bo", "{b_now}");
    let a_now = app.data(&app.admin(), names, json!({ "id": a })).await["customer"].clone();
    assert_eq!(a_now["traitHistory"], json!([{ "value": "Ann" }]), "{a_now}");
    assert_eq!(a_now["givenName"], "Ann", "{a_now}");
}

on_every_backend!(
    a_manual_merge_and_its_unmerge_round_trip_exactly,
    one_identity_pointing_at_two_customers_merges_them_with_evidence,
    rows_that_arrive_after_a_merge_follow_their_identities_when_it_is_undone,
);
