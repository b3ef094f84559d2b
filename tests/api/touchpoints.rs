//! Touchpoints over GraphQL: ingestion with identity resolution, idempotency, validation, timelines in both
//! directions, filters, the journey summary and the consent-gated feed.
use std::collections::HashSet;

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::common::{TestApp, first_code};

pub(crate) const RECORD: &str = "mutation($t: [TouchpointInput!]!) { recordTouchpoints(touchpoints: $t) {
    created duplicates rejected results { index status touchpointId customerId error { code field message } } } }";

pub fn writer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "profiles:write", "touchpoints:write", "consent:write", "pii:read"], "support")
}

pub fn reader(app: &TestApp, purpose: &str) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], purpose)
}

pub fn touchpoint(key: &str, identities: Value, kind: &str, minutes_ago: i64) -> Value {
    json!({
        "identities": identities, "channel": "WEB", "type": kind, "source": "web",
        "occurredAt": (Utc::now() - Duration::minutes(minutes_ago)).to_rfc3339(), "idempotencyKey": key,
    })
}

pub async fn record(app: &TestApp, items: Value) -> Value {
    app.data(&writer(app), RECORD, json!({ "t": items })).await["recordTouchpoints"].clone()
}

pub async fn grant(app: &TestApp, customer: &str, purpose: &str, status: &str) {
    app.data(
        &writer(app),
        "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { id } }",
        json!({ "i": { "customerId": customer, "purpose": purpose, "status": status, "source": "web",
                       "policyVersion": "2026-01", "legalBasis": "consent" } }),
    )
    .await;
}

async fn an_anonymous_visitor_who_logs_in_keeps_their_history(app: TestApp) {
    let anon = json!([{ "kind": "ANONYMOUS_ID", "value": "anon-1" }]);
    let first = record(
        &app,
        json!([touchpoint("v1", anon.clone(), "PAGE_VIEW", 30), touchpoint("v2", anon.clone(), "PAGE_VIEW", 20)]),
    )
    .await;
    assert_eq!(first["created"], 2, "{first}");
    let visitor = first["results"][0]["customerId"].as_str().expect("customer").to_owned();
    assert_eq!(first["results"][1]["customerId"], visitor.as_str());

    // The login event carries both the anonymous id and the email: it lands on the same customer.
    let login = record(
        &app,
        json!([touchpoint(
            "login",
            json!([{ "kind": "ANONYMOUS_ID", "value": "anon-1" }, { "kind": "EMAIL", "value": "Vis@Example.com" }]),
            "CUSTOM",
            10
        )]),
    )
    .await;
    assert_eq!(login["results"][0]["customerId"], visitor.as_str());
    // Later, email alone finds the same person.
    let later = record(
        &app,
        json!([touchpoint("buy", json!([{ "kind": "EMAIL", "value": "vis@example.com" }]), "PAGE_VIEW", 5)]),
    )
    .await;
    assert_eq!(later["results"][0]["customerId"], visitor.as_str());

    let data = app
        .data(
            &reader(&app, "support"),
            "query($id: UUID!) { customer(id: $id) { touchpoints(first: 10) { totalCount edges { node { idempotencyKey stage } } } } }",
            json!({ "id": visitor }),
        )
        .await;
    let keys: Vec<&str> = data["customer"]["touchpoints"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["node"]["idempotencyKey"].as_str())
        .collect();
    assert_eq!(keys, vec!["buy", "login", "v2", "v1"], "newest first, the whole history");
    assert_eq!(data["customer"]["touchpoints"]["totalCount"], 4);
}

async fn replays_are_idempotent_and_bad_items_do_not_sink_the_batch(app: TestApp) {
    let who = json!([{ "kind": "EMAIL", "value": "idem@example.com" }]);
    let mut survey = touchpoint("s1", who.clone(), "SURVEY_RESPONSE", 3);
    survey["feedback"] = json!({ "metric": "NPS", "score": 11 });
    let mut good_survey = touchpoint("s2", who.clone(), "SURVEY_RESPONSE", 2);
    good_survey["feedback"] = json!({ "metric": "CSAT", "score": 4, "verbatim": "quick" });
    let mut purchase = touchpoint("p1", who.clone(), "PURCHASE", 1);
    purchase["value"] = json!(499.0);
    let batch = json!([
        touchpoint("a", who.clone(), "PAGE_VIEW", 4),
        survey,
        good_survey,
        purchase,
        touchpoint("", who.clone(), "PAGE_VIEW", 1)
    ]);
    let first = record(&app, batch.clone()).await;
    assert_eq!((first["created"].as_i64(), first["rejected"].as_i64()), (Some(2), Some(3)), "{first}");
    let statuses: Vec<&str> =
        first["results"].as_array().expect("results").iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!(statuses, vec!["CREATED", "REJECTED", "CREATED", "REJECTED", "REJECTED"]);
    assert_eq!(first["results"][1]["error"]["field"], "feedback.score");
    assert_eq!(first["results"][1]["error"]["code"], "VALIDATION");
    assert_eq!(first["results"][3]["error"]["field"], "currency");
    assert_eq!(first["results"][4]["error"]["field"], "idempotencyKey");

    let replay = record(&app, batch).await;
    assert_eq!((replay["created"].as_i64(), replay["duplicates"].as_i64()), (Some(0), Some(2)), "{replay}");
    assert_eq!(replay["results"][0]["touchpointId"], first["results"][0]["touchpointId"]);

    let customer = first["results"][0]["customerId"].as_str().expect("customer");
    let data = app
        .data(
            &reader(&app, "support"),
            "query($id: UUID!) { customer(id: $id) { touchpoints { totalCount edges { node { type feedback { metric score verbatim } } } } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(data["customer"]["touchpoints"]["totalCount"], 2, "nothing duplicated: {data}");
    assert_eq!(
        data["customer"]["touchpoints"]["edges"][0]["node"]["feedback"],
        json!({ "metric": "CSAT", "score": 4, "verbatim": "quick" })
    );
}

async fn timelines_page_both_ways_and_filter(app: TestApp) {
    let who = json!([{ "kind": "CRM_ID", "value": "C-1" }]);
    let mut items = Vec::new();
    for i in 0..25 {
        let mut tp =
            touchpoint(&format!("t{i}"), who.clone(), if i % 5 == 0 { "STORE_VISIT" } else { "PAGE_VIEW" }, 100 - i);
        if i % 5 == 0 {
            tp["channel"] = json!("STORE");
        }
        items.push(tp);
    }
    let result = record(&app, Value::Array(items)).await;
    let customer = result["results"][0]["customerId"].as_str().expect("customer").to_owned();
    let newest_first: Vec<String> = (0..25).rev().map(|i| format!("t{i}")).collect();
    let token = reader(&app, "support");
    let query = "query($id: UUID!, $first: Int, $after: String, $last: Int, $before: String, $filter: TouchpointFilterInput) {
        customer(id: $id) { touchpoints(first: $first, after: $after, last: $last, before: $before, filter: $filter) {
            edges { cursor node { idempotencyKey } } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } }";
    let keys = |data: &Value| -> Vec<String> {
        data["customer"]["touchpoints"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter_map(|e| e["node"]["idempotencyKey"].as_str().map(str::to_owned))
            .collect()
    };

    let mut forward = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.data(&token, query, json!({ "id": customer, "first": 10, "after": after })).await;
        forward.extend(keys(&data));
        let info = &data["customer"]["touchpoints"]["pageInfo"];
        if info["hasNextPage"] != true {
            break;
        }
        after = info["endCursor"].clone();
    }
    assert_eq!(forward, newest_first);

    let mut backward: Vec<String> = Vec::new();
    let mut before = Value::Null;
    loop {
        let data = app.data(&token, query, json!({ "id": customer, "last": 10, "before": before })).await;
        let mut page = keys(&data);
        page.extend(backward);
        backward = page;
        let info = &data["customer"]["touchpoints"]["pageInfo"];
        if info["hasPreviousPage"] != true {
            break;
        }
        before = info["startCursor"].clone();
    }
    assert_eq!(backward, newest_first, "walking back from the oldest gives the same list");

    let data =
        app.data(&token, query, json!({ "id": customer, "first": 50, "filter": { "channels": ["STORE"] } })).await;
    assert_eq!(keys(&data), vec!["t20", "t15", "t10", "t5", "t0"]);
    let from = (Utc::now() - Duration::seconds(79 * 60 + 30)).to_rfc3339();
    let data = app
        .data(&token, query, json!({ "id": customer, "first": 50, "filter": { "from": from, "types": ["PAGE_VIEW"] } }))
        .await;
    assert_eq!(keys(&data), vec!["t24", "t23", "t22", "t21"], "page views of the last 79 minutes");
}

async fn the_journey_summarises_stages_and_channels(app: TestApp) {
    let who = json!([{ "kind": "LOYALTY_ID", "value": "L-9" }]);
    let mut store = touchpoint("j3", who.clone(), "PURCHASE", 10);
    store["channel"] = json!("STORE");
    store["value"] = json!(120.5);
    store["currency"] = json!("dkk");
    let result = record(
        &app,
        json!([
            touchpoint("j1", who.clone(), "AD_IMPRESSION", 40),
            touchpoint("j2", who.clone(), "PAGE_VIEW", 30),
            store,
            touchpoint("j4", who.clone(), "SUPPORT_TICKET", 5)
        ]),
    )
    .await;
    let customer = result["results"][0]["customerId"].as_str().expect("customer").to_owned();
    grant(&app, &customer, "personalization", "GRANTED").await;
    let data = app
        .data(
            &reader(&app, "personalization"),
            "query($id: UUID!) { customer(id: $id) { journey { currentStage stages { stage count channels { channel count } } } } }",
            json!({ "id": customer }),
        )
        .await;
    let journey = &data["customer"]["journey"];
    assert_eq!(journey["currentStage"], "SUPPORT");
    let stages: Vec<&str> =
        journey["stages"].as_array().expect("stages").iter().filter_map(|s| s["stage"].as_str()).collect();
    assert_eq!(stages, vec!["AWARENESS", "CONSIDERATION", "PURCHASE", "SUPPORT"]);
    assert_eq!(journey["stages"][2]["channels"], json!([{ "channel": "STORE", "count": 1 }]));
}

async fn the_feed_leaves_out_customers_without_consent_and_says_how_many(app: TestApp) {
    let yes = record(
        &app,
        json!([
            touchpoint("f1", json!([{ "kind": "EMAIL", "value": "yes@example.com" }]), "PAGE_VIEW", 3),
            touchpoint("f2", json!([{ "kind": "EMAIL", "value": "yes@example.com" }]), "PAGE_VIEW", 2)
        ]),
    )
    .await;
    let no = record(
        &app,
        json!([touchpoint("f3", json!([{ "kind": "EMAIL", "value": "no@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await;
    let consenting = yes["results"][0]["customerId"].as_str().expect("id").to_owned();
    let other = no["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &consenting, "personalization", "GRANTED").await;
    grant(&app, &other, "personalization", "DENIED").await;

    let query = "query($after: String) { touchpoints(first: 2, after: $after) { excludedCount resumeCursor
        edges { node { customerId idempotencyKey } } pageInfo { hasNextPage endCursor } } }";
    let token = reader(&app, "personalization");
    let mut served = Vec::new();
    let mut excluded = 0;
    let mut after = Value::Null;
    loop {
        let data = app.data(&token, query, json!({ "after": after })).await;
        let feed = &data["touchpoints"];
        excluded += feed["excludedCount"].as_i64().unwrap_or_default();
        for edge in feed["edges"].as_array().expect("edges") {
            assert_eq!(edge["node"]["customerId"], consenting.as_str());
            served.push(edge["node"]["idempotencyKey"].as_str().unwrap_or_default().to_owned());
        }
        if feed["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = feed["resumeCursor"].clone();
    }
    assert_eq!(served, vec!["f1", "f2"]);
    assert_eq!(excluded, 1, "the denied customer's touchpoint is counted, not hidden");
}

async fn a_withdrawal_is_refused_on_the_very_next_read(app: TestApp) {
    let result =
        record(&app, json!([touchpoint("w1", json!([{ "kind": "EMAIL", "value": "w@example.com" }]), "PAGE_VIEW", 3)]))
            .await;
    let customer = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &customer, "personalization", "GRANTED").await;
    let token = reader(&app, "personalization");
    let query = "query($id: UUID!) { customer(id: $id) { id givenName touchpoints { edges { node { id } } } journey { currentStage } } }";
    for _ in 0..3 {
        // Warm every cache on the way.
        let data = app.data(&token, query, json!({ "id": customer })).await;
        assert_eq!(data["customer"]["touchpoints"]["edges"].as_array().map(Vec::len), Some(1));
    }
    grant(&app, &customer, "personalization", "WITHDRAWN").await;
    let (_, body) = app.gql(&token, query, json!({ "id": customer })).await;
    assert_eq!(body["data"]["customer"]["id"], customer.as_str(), "the profile itself is still served");
    assert!(body["data"]["customer"]["touchpoints"].is_null(), "{body}");
    assert!(body["data"]["customer"]["journey"].is_null(), "{body}");
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 2);
    for error in errors {
        assert_eq!(error["extensions"]["code"], "CONSENT_REQUIRED");
        assert_eq!(error["extensions"]["reason"], "WITHDRAWN");
        assert_eq!(error["extensions"]["purpose"], "personalization");
    }
    let data = app
        .data(&token, "query($id: UUID!) { customer(id: $id) { consentHistory { edges { node { status } } } consents { status effective } } }", json!({ "id": customer }))
        .await;
    let history: Vec<&str> = data["customer"]["consentHistory"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter_map(|e| e["node"]["status"].as_str())
        .collect();
    assert_eq!(history, vec!["WITHDRAWN", "GRANTED"], "the ledger keeps both decisions");
    assert_eq!(data["customer"]["consents"], json!([{ "status": "WITHDRAWN", "effective": false }]));
}

/// The profile cache serves a warm profile read with no statement in process (one instance, no Redis: the customer
/// row with its privacy state is kept too) and one with Redis (the customer row and its consents, always from the
/// database), and never a stale page or identity list: ingestion drops what it changes.
async fn the_profile_cache_serves_warm_reads_and_never_a_stale_page(app: TestApp) {
    let email = json!({ "kind": "EMAIL", "value": "cache@example.com" });
    let result = record(&app, json!([touchpoint("c1", json!([email]), "PAGE_VIEW", 30)])).await;
    let customer = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &customer, "personalization", "GRANTED").await;
    let token = app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "personalization");
    let query = "query($id: UUID!, $n: Int) { customer(id: $id) { identities { kind value } consents { status } \
                 touchpoints(first: $n) { edges { node { idempotencyKey } } pageInfo { hasNextPage } } } }";
    let keys = |data: &Value| -> Vec<String> {
        data["customer"]["touchpoints"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter_map(|e| e["node"]["idempotencyKey"].as_str().map(str::to_owned))
            .collect()
    };
    let cold = app.data(&token, query, json!({ "id": customer, "n": 5 })).await;
    assert_eq!(keys(&cold), vec!["c1"]);
    let before = app.statements().await;
    let warm = app.data(&token, query, json!({ "id": customer, "n": 5 })).await;
    let warm_statements = app.statements().await - before;
    assert_eq!(warm, cold, "a warm read answers what the cold one did");
    if app.uses_redis {
        assert_eq!(warm_statements, 1, "a warm profile read reads only the customer row with its consents");
    } else {
        assert_eq!(warm_statements, 0, "a warm profile read in a single instance is served from process memory");
    }

    // A new touchpoint naming a new device as well: the next read shows both, not the cached page.
    let device = json!({ "kind": "DEVICE_ID", "value": "tablet-7" });
    record(&app, json!([touchpoint("c2", json!([email, device]), "PURCHASE", 1)])).await;
    let fresh = app.data(&token, query, json!({ "id": customer, "n": 5 })).await;
    assert_eq!(keys(&fresh), vec!["c2", "c1"], "newest first, the new one included");
    let kinds: Vec<&str> = fresh["customer"]["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert_eq!(kinds, vec!["EMAIL", "DEVICE_ID"]);

    // A smaller page is cut from a larger cached one; a larger page than the cached one is read again.
    let one = app.data(&token, query, json!({ "id": customer, "n": 1 })).await;
    assert_eq!(keys(&one), vec!["c2"]);
    assert_eq!(one["customer"]["touchpoints"]["pageInfo"]["hasNextPage"], true);
    record(&app, json!([touchpoint("c3", json!([email]), "PAGE_VIEW", 0)])).await;
    let ten = app.data(&token, query, json!({ "id": customer, "n": 10 })).await;
    assert_eq!(keys(&ten), vec!["c3", "c2", "c1"]);
    assert_eq!(ten["customer"]["touchpoints"]["pageInfo"]["hasNextPage"], false);
}

/// A warm profile cache never outlives a change of what decides: after each write that changes a customer's consent
/// or restriction (a withdrawal, a denial carried in with a merge, a restriction, an erasure), the very next read
/// decides with the new state, although the read before it was served from the cache.
async fn a_warm_profile_cache_never_outlives_a_consent_change(app: TestApp) {
    let officer =
        app.token("acme", &["profiles:read", "profiles:write", "privacy:admin", "consent:write"], "privacy_admin");
    let reader = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let query =
        "query($id: UUID!) { customer(id: $id) { id touchpoints(first: 5) { edges { node { idempotencyKey } } } } }";
    let mut customers = Vec::new();
    for name in ["withdrawn", "merged", "denier", "restricted", "erased"] {
        let identity = json!([{ "kind": "EMAIL", "value": format!("{name}@example.com") }]);
        let result = record(&app, json!([touchpoint(&format!("warm-{name}"), identity, "PAGE_VIEW", 5)])).await;
        let id = result["results"][0]["customerId"].as_str().expect("customer").to_owned();
        grant(&app, &id, "personalization", if name == "denier" { "DENIED" } else { "GRANTED" }).await;
        customers.push(id);
    }
    let [withdrawn, merged, denier, restricted, erased] = customers.as_slice() else { unreachable!() };
    // Warm every customer's entries: the second read of each is served from the cache.
    for id in [withdrawn, merged, restricted, erased] {
        for _ in 0..2 {
            let (status, body) = app.gql(&reader, query, json!({ "id": id })).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["data"]["customer"]["touchpoints"]["edges"].as_array().map(Vec::len), Some(1), "{body}");
        }
    }
    let refused = |body: &Value, what: &str| {
        assert!(body["data"]["customer"]["touchpoints"].is_null(), "{what}: touchpoints served: {body}");
        assert_eq!(first_code(body), "CONSENT_REQUIRED", "{what}: {body}");
    };

    grant(&app, withdrawn, "personalization", "WITHDRAWN").await;
    let (_, body) = app.gql(&reader, query, json!({ "id": withdrawn })).await;
    refused(&body, "withdrawal");

    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    app.data(&officer, merge, json!({ "s": merged, "m": denier })).await;
    let (_, body) = app.gql(&reader, query, json!({ "id": merged })).await;
    refused(&body, "merge with a customer who denied");

    app.data(&officer, "mutation($id: UUID!) { restrictProcessing(customerId: $id) }", json!({ "id": restricted }))
        .await;
    let (_, body) = app.gql(&reader, query, json!({ "id": restricted })).await;
    assert!(body["data"]["customer"].is_null(), "a restricted profile is not served: {body}");
    assert_ne!(first_code(&body), "<none>", "{body}");

    app.data(&officer, "mutation($id: UUID!) { eraseCustomer(id: $id) { id } }", json!({ "id": erased })).await;
    let (_, body) = app.gql(&reader, query, json!({ "id": erased })).await;
    assert!(body["data"]["customer"].is_null(), "an erased profile is not served: {body}");
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
}

/// Every (caller purpose × consent state × restriction × pii:read) combination, for the gated and masked fields.
async fn the_policy_table_holds_for_every_combination(app: TestApp) {
    let states = ["NONE", "GRANTED", "DENIED", "WITHDRAWN", "EXPIRED"];
    let admin =
        app.token("acme", &["profiles:write", "consent:write", "privacy:admin", "touchpoints:write"], "privacy_admin");
    let mut customers = Vec::new();
    for (i, state) in states.iter().enumerate() {
        for restricted in [false, true] {
            let email = format!("c{i}{}@example.com", u8::from(restricted));
            let result = record(
                &app,
                json!([touchpoint(
                    &format!("k{i}{restricted}"),
                    json!([{ "kind": "EMAIL", "value": email }]),
                    "PAGE_VIEW",
                    5
                )]),
            )
            .await;
            let id = result["results"][0]["customerId"].as_str().expect("id").to_owned();
            for purpose in ["personalization", "marketing", "analytics"] {
                let mut input = json!({ "customerId": id, "purpose": purpose, "source": "web", "status": "GRANTED" });
                match *state {
                    "NONE" => continue,
                    "EXPIRED" => {
                        input["capturedAt"] = json!((Utc::now() - Duration::hours(2)).to_rfc3339());
                        input["expiresAt"] = json!((Utc::now() - Duration::hours(1)).to_rfc3339());
                    }
                    other => input["status"] = json!(other),
                }
                app.data(
                    &admin,
                    "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { id } }",
                    json!({ "i": input }),
                )
                .await;
            }
            if restricted {
                app.data(&admin, "mutation($id: UUID!) { restrictProcessing(customerId: $id) }", json!({ "id": id }))
                    .await;
            }
            customers.push((state.to_string(), restricted, id, email));
        }
    }
    let query = "query($id: UUID!) { customer(id: $id) { identities { value } touchpoints { edges { cursor } } journey { currentStage } } }";
    let mut checked = 0;
    for purpose in ["personalization", "marketing:email", "analytics", "support", "privacy_admin"] {
        for pii in [false, true] {
            let mut scopes = vec!["profiles:read", "touchpoints:read"];
            if pii {
                scopes.push("pii:read");
            }
            if purpose == "privacy_admin" {
                scopes.push("privacy:admin");
            }
            let token = app.token("acme", &scopes, purpose);
            for (state, restricted, id, email) in &customers {
                let (_, body) = app.gql(&token, query, json!({ "id": id })).await;
                let case = format!("purpose={purpose} state={state} restricted={restricted} pii={pii}: {body}");
                checked += 1;
                if *restricted && purpose != "privacy_admin" {
                    // Restriction withholds the whole profile from every purpose but privacy administration.
                    assert!(body["data"]["customer"].is_null(), "{case}");
                    assert_eq!(body["errors"][0]["path"], json!(["customer"]), "{case}");
                    assert_eq!(body["errors"][0]["extensions"]["reason"], "PROCESSING_RESTRICTED", "{case}");
                    continue;
                }
                let refusal = |field: &str| -> Option<String> {
                    if !body["data"]["customer"][field].is_null() {
                        return None;
                    }
                    let path = json!(["customer", field]);
                    body["errors"]
                        .as_array()
                        .and_then(|errors| errors.iter().find(|e| e["path"] == path))
                        .map(|e| {
                            format!(
                                "{}/{}",
                                e["extensions"]["code"].as_str().unwrap_or("?"),
                                e["extensions"]["reason"].as_str().unwrap_or("?")
                            )
                        })
                        .or(Some("null without error".into()))
                };
                let by_state = match state.as_str() {
                    "GRANTED" => None,
                    "NONE" => Some("CONSENT_REQUIRED/NOT_GIVEN".to_owned()),
                    other => Some(format!("CONSENT_REQUIRED/{other}")),
                };
                let (expect_history, expect_derived) = match purpose {
                    "privacy_admin" => (None, None),
                    "support" => (None, Some("CONSENT_REQUIRED/NOT_GIVEN".to_owned())),
                    _ => (by_state.clone(), by_state),
                };
                assert_eq!(refusal("touchpoints"), expect_history, "touchpoints, {case}");
                assert_eq!(refusal("journey"), expect_derived, "journey, {case}");
                let shown = body["data"]["customer"]["identities"][0]["value"].as_str().unwrap_or_default();
                if pii {
                    assert_eq!(shown, email, "unmasked, {case}");
                } else {
                    assert!(shown.contains("***") && shown != email, "masked, {case}");
                }
            }
        }
    }
    assert_eq!(checked, 5 * 2 * 5 * 2);
    let data = app
        .data(&reader(&app, "support"), "{ customers(first: 100) { excludedCount edges { cursor } } }", json!({}))
        .await;
    assert_eq!(data["customers"]["excludedCount"], 5, "restricted customers are left out of lists, and counted");
    assert_eq!(data["customers"]["edges"].as_array().map(Vec::len), Some(5));
    let unique: HashSet<&String> = customers.iter().map(|c| &c.2).collect();
    assert_eq!(unique.len(), 10);
}

async fn scopes_and_tenants_guard_touchpoints_and_consent(app: TestApp) {
    let result =
        record(&app, json!([touchpoint("g1", json!([{ "kind": "EMAIL", "value": "g@example.com" }]), "PAGE_VIEW", 3)]))
            .await;
    let customer = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    let no_write = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app
        .gql(
            &no_write,
            RECORD,
            json!({ "t": [touchpoint("g2", json!([{ "kind": "EMAIL", "value": "g@example.com" }]), "PAGE_VIEW", 1)] }),
        )
        .await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    let (_, body) = app
        .gql(&no_write, "mutation($id: UUID!) { restrictProcessing(customerId: $id) }", json!({ "id": customer }))
        .await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    let other_tenant =
        app.token("other", &["profiles:read", "touchpoints:read", "consent:write", "privacy:admin"], "support");
    let (_, body) = app
        .gql(&other_tenant, "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { id } }",
            json!({ "i": { "customerId": customer, "purpose": "personalization", "status": "GRANTED", "source": "web" } }))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    let (_, body) = app
        .gql(&other_tenant, "mutation($id: UUID!) { restrictProcessing(customerId: $id) }", json!({ "id": customer }))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    let data = app.data(&other_tenant, "{ touchpoints { edges { cursor } excludedCount } }", json!({})).await;
    assert_eq!(data["touchpoints"]["edges"], json!([]));
    assert_eq!(data["touchpoints"]["excludedCount"], 0);
}

async fn a_page_of_customers_with_their_touchpoints_takes_a_fixed_number_of_statements(app: TestApp) {
    let mut items = Vec::new();
    for c in 0..12 {
        for t in 0..4 {
            items.push(touchpoint(
                &format!("n{c}-{t}"),
                json!([{ "kind": "CRM_ID", "value": format!("N{c}") }]),
                "PAGE_VIEW",
                60 - t,
            ));
        }
    }
    let result = record(&app, Value::Array(items)).await;
    assert_eq!(result["created"], 48);
    // Half the customers consent: the others' touchpoints are refused one by one, in the same statements.
    for c in (0..12).step_by(2) {
        let id = result["results"][c * 4]["customerId"].as_str().expect("id").to_owned();
        grant(&app, &id, "personalization", "GRANTED").await;
    }
    let token = reader(&app, "personalization");
    let query = |n: usize| {
        format!(
            "{{ customers(first: {n}) {{ edges {{ node {{ id identities {{ kind }} consents {{ status }} touchpoints(first: 3) {{ edges {{ node {{ id }} }} }} }} }} }} }}"
        )
    };
    let before = app.statements().await;
    let (_, small_body) = app.gql(&token, &query(2), json!({})).await;
    let small = app.statements().await - before;
    let before = app.statements().await;
    let (_, body) = app.gql(&token, &query(12), json!({})).await;
    let large = app.statements().await - before;
    assert_eq!(small_body["data"]["customers"]["edges"].as_array().map(Vec::len), Some(2));
    let edges = body["data"]["customers"]["edges"].as_array().expect("edges");
    assert_eq!(edges.len(), 12);
    let served =
        edges.iter().filter(|e| e["node"]["touchpoints"]["edges"].as_array().is_some_and(|t| t.len() == 3)).count();
    assert_eq!(served, 6, "consenting customers get their 3 latest: {body}");
    let refused = body["errors"].as_array().map(Vec::len).unwrap_or_default();
    assert_eq!(refused, 6, "the others are refused with CONSENT_REQUIRED, not silently empty");
    assert_eq!(small, large, "statements must not grow with the page size (N+1)");
    // The loaders load the whole list on the first ask, so the count does not depend on how the batches are timed.
    assert_eq!(large, 5, "a fixed plan for the page, identities, consent states and one window query; got {large}");
}

async fn the_touchpoint_stream_only_carries_consenting_customers(app: TestApp) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

    let yes = record(
        &app,
        json!([touchpoint("s-yes-0", json!([{ "kind": "EMAIL", "value": "stream-yes@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await;
    let no = record(
        &app,
        json!([touchpoint("s-no-0", json!([{ "kind": "EMAIL", "value": "stream-no@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await;
    let consenting = yes["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &consenting, "personalization", "GRANTED").await;
    let refusing = no["results"][0]["customerId"].as_str().expect("id").to_owned();

    let mut request = format!("ws://{}/graphql/ws", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("websocket");
    let token = reader(&app, "personalization");
    socket
        .send(Message::Text(
            json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })
                .to_string()
                .into(),
        ))
        .await
        .expect("send");
    let _ack = socket.next().await;
    socket
        .send(Message::Text(json!({ "type": "subscribe", "id": "t", "payload": { "query": "subscription { touchpointRecorded { customerId idempotencyKey } }" } }).to_string().into()))
        .await
        .expect("send");

    let writer = async {
        for i in 1..60 {
            record(
                &app,
                json!([
                    touchpoint(
                        &format!("s-no-{i}"),
                        json!([{ "kind": "EMAIL", "value": "stream-no@example.com" }]),
                        "PAGE_VIEW",
                        0
                    ),
                    touchpoint(
                        &format!("s-yes-{i}"),
                        json!([{ "kind": "EMAIL", "value": "stream-yes@example.com" }]),
                        "PAGE_VIEW",
                        0
                    ),
                ]),
            )
            .await;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut received = Vec::new();
        while received.len() < 3 {
            let Some(Ok(Message::Text(text))) = socket.next().await else { break };
            let message: Value = serde_json::from_str(&text).expect("json");
            if message["type"] == "next" {
                received.push(message["payload"]["data"]["touchpointRecorded"].clone());
            }
        }
        received
    };
    let received = tokio::select! {
        received = reader => received,
        () = writer => panic!("the stream delivered too little"),
    };
    assert_eq!(received.len(), 3);
    for event in &received {
        assert_eq!(event["customerId"], consenting.as_str(), "never {refusing}: {received:?}");
    }
}

async fn concurrent_batches_sharing_identities_store_everything_once(app: TestApp) {
    let mut tasks = Vec::new();
    for b in 0..8 {
        let client = app.client.clone();
        let url = app.url("/graphql");
        let token = writer(&app);
        tasks.push(tokio::spawn(async move {
            // Every batch names the same five people, so batches race on the same new identities.
            let items: Vec<Value> = (0..20)
                .map(|i| {
                    touchpoint(
                        &format!("cb{b}-{i}"),
                        json!([{ "kind": "EMAIL", "value": format!("p{}@example.com", i % 5) }]),
                        "PAGE_VIEW",
                        30,
                    )
                })
                .collect();
            let mut batch = items.clone();
            batch.push(items[0].clone()); // the same key twice in one batch
            let body: Value = client
                .post(url)
                .bearer_auth(token)
                .json(&json!({ "query": RECORD, "variables": { "t": batch } }))
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            body["data"]["recordTouchpoints"].clone()
        }));
    }
    for task in tasks {
        let result = task.await.expect("task");
        assert_eq!((result["created"].as_i64(), result["duplicates"].as_i64()), (Some(20), Some(1)), "{result}");
    }
    let data = app.data(&app.admin(), "{ customers(first: 100) { edges { node { id } } } }", json!({})).await;
    assert_eq!(data["customers"]["edges"].as_array().map(Vec::len), Some(5), "one customer per person");
    let feed = app
        .data(
            &reader(&app, "support"),
            "{ touchpoints(first: 100) { edges { cursor } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    let first_page = feed["touchpoints"]["edges"].as_array().map(Vec::len).unwrap_or_default();
    let more = feed["touchpoints"]["pageInfo"]["hasNextPage"] == true;
    let total = if more {
        let after = feed["touchpoints"]["edges"][99]["cursor"].clone();
        let rest = app
            .data(
                &reader(&app, "support"),
                "query($a: String) { touchpoints(first: 100, after: $a) { edges { cursor } } }",
                json!({ "a": after }),
            )
            .await;
        first_page + rest["touchpoints"]["edges"].as_array().map(Vec::len).unwrap_or_default()
    } else {
        first_page
    };
    assert_eq!(total, 160, "every touchpoint stored exactly once");
}

on_every_backend!(
    concurrent_batches_sharing_identities_store_everything_once,
    a_page_of_customers_with_their_touchpoints_takes_a_fixed_number_of_statements,
    the_touchpoint_stream_only_carries_consenting_customers,
    an_anonymous_visitor_who_logs_in_keeps_their_history,
    replays_are_idempotent_and_bad_items_do_not_sink_the_batch,
    timelines_page_both_ways_and_filter,
    the_journey_summarises_stages_and_channels,
    the_feed_leaves_out_customers_without_consent_and_says_how_many,
    a_withdrawal_is_refused_on_the_very_next_read,
    the_profile_cache_serves_warm_reads_and_never_a_stale_page,
    a_warm_profile_cache_never_outlives_a_consent_change,
    the_policy_table_holds_for_every_combination,
    scopes_and_tenants_guard_touchpoints_and_consent,
);
