//! Next best action over HTTP: tenant rules defined and versioned through the API, evaluated by priority with a
//! decision per rule (consent to the rule's purpose, condition, cooldown, frequency cap), shows recorded as
//! touchpoints that follow merges, and the whole answer refused like every derived value.
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{grant, record, writer},
};

fn definer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "profiles:write"], "support")
}

fn engine(app: &TestApp, purpose: &str) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], purpose)
}

const DEFINE: &str = "mutation($i: DefineActionRuleInput!) { defineActionRule(input: $i) {
    key version purpose priority placement enabled cooldownSeconds frequencyCap { max days } payload } }";
const OUTCOME: &str = "mutation($i: RecordActionOutcomeInput!) { recordActionOutcome(input: $i) {
    status touchpointId customerId rule version outcome occurredAt } }";
const NBA: &str = "query($id: UUID!, $p: String) { customer(id: $id) { nextBestAction(placement: $p) {
    action { rule version purpose placement payload } decisions { rule version decision reason until } } } }";

async fn define(app: &TestApp, rule: Value) -> Value {
    app.data(&definer(app), DEFINE, json!({ "i": rule })).await["defineActionRule"].clone()
}

/// A customer with an e-mail and one page view, consenting to `personalization`.
async fn customer(app: &TestApp, email: &str) -> String {
    let result = record(
        app,
        json!([{ "identities": [{ "kind": "EMAIL", "value": email }], "channel": "WEB", "type": "PAGE_VIEW",
                 "source": "web", "occurredAt": (Utc::now() - Duration::hours(1)).to_rfc3339(),
                 "idempotencyKey": format!("pv-{email}") }]),
    )
    .await;
    let id = result["results"][0]["customerId"].as_str().expect("customer id").to_owned();
    grant(app, &id, "personalization", "GRANTED").await;
    id
}

async fn nba_with(app: &TestApp, id: &str, placement: Option<&str>) -> Value {
    app.data(&engine(app, "personalization"), NBA, json!({ "id": id, "p": placement })).await["customer"]
        ["nextBestAction"]
        .clone()
}

async fn nba(app: &TestApp, id: &str) -> Value {
    nba_with(app, id, None).await
}

/// `(rule, decision, reason)` of every decision, in order.
fn decisions(answer: &Value) -> Vec<(String, String, Option<String>)> {
    answer["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("decisions: {answer}"))
        .iter()
        .map(|d| {
            (
                d["rule"].as_str().unwrap_or("").to_owned(),
                d["decision"].as_str().unwrap_or("").to_owned(),
                d["reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn d(rule: &str, decision: &str, reason: Option<&str>) -> (String, String, Option<String>) {
    (rule.to_owned(), decision.to_owned(), reason.map(str::to_owned))
}

async fn outcome(app: &TestApp, id: &str, rule: &str, what: &str, at: DateTime<Utc>, key: Option<&str>) -> Value {
    app.data(
        &writer(app),
        OUTCOME,
        json!({ "i": { "customerId": id, "rule": rule, "outcome": what, "channel": "WEB",
                       "occurredAt": at.to_rfc3339(), "idempotencyKey": key } }),
    )
    .await["recordActionOutcome"]
        .clone()
}

fn until_of(answer: &Value, rule: &str) -> DateTime<Utc> {
    let found = answer["decisions"].as_array().and_then(|l| l.iter().find(|d| d["rule"] == rule)).cloned();
    found.and_then(|d| d["until"].as_str().and_then(|u| u.parse().ok())).unwrap_or_else(|| panic!("until: {answer}"))
}

fn close(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_milliseconds().abs() < 5
}

async fn the_first_rule_that_passes_fires_and_each_rule_says_why(app: TestApp) {
    let mkt = define(
        &app,
        json!({ "key": "mkt_offer", "purpose": "marketing", "priority": 100, "payload": { "banner": "spring" } }),
    )
    .await;
    assert_eq!(
        mkt,
        json!({ "key": "mkt_offer", "version": 1, "purpose": "marketing", "priority": 100, "placement": null,
                "enabled": true, "cooldownSeconds": null, "frequencyCap": null, "payload": { "banner": "spring" } })
    );
    define(
        &app,
        json!({ "key": "vip", "purpose": "personalization", "priority": 90, "payload": { "banner": "vip" },
                "condition": { "aggregate": { "aggregate": "COUNT", "filter": { "types": ["PURCHASE"] } },
                               "op": "GTE", "value": 5 } }),
    )
    .await;
    define(
        &app,
        json!({ "key": "welcome", "purpose": "personalization", "priority": 50, "payload": { "banner": "hello" },
                "condition": { "hasIdentity": "EMAIL" } }),
    )
    .await;
    define(&app, json!({ "key": "fallback", "purpose": "personalization", "payload": { "banner": "any" } })).await;
    // A disabled rule is listed but never tried.
    define(
        &app,
        json!({ "key": "off", "purpose": "personalization", "priority": 1000, "payload": {}, "enabled": false }),
    )
    .await;
    let id = customer(&app, "first@example.com").await;

    let answer = nba(&app, &id).await;
    assert_eq!(
        answer["action"],
        json!({ "rule": "welcome", "version": 1, "purpose": "personalization", "placement": null,
                "payload": { "banner": "hello" } }),
        "{answer}"
    );
    assert_eq!(
        decisions(&answer),
        vec![
            d("mkt_offer", "BLOCKED_CONSENT", Some("NOT_GIVEN")),
            d("vip", "NOT_ELIGIBLE", None),
            d("welcome", "FIRED", None),
            d("fallback", "NOT_REACHED", None),
        ]
    );

    // The consent was the only block: granted, the higher-priority rule fires; withdrawn, it is blocked again.
    grant(&app, &id, "marketing", "GRANTED").await;
    let answer = nba(&app, &id).await;
    assert_eq!(answer["action"]["rule"], "mkt_offer", "{answer}");
    assert_eq!(
        decisions(&answer),
        vec![
            d("mkt_offer", "FIRED", None),
            d("vip", "NOT_REACHED", None),
            d("welcome", "NOT_REACHED", None),
            d("fallback", "NOT_REACHED", None),
        ]
    );
    grant(&app, &id, "marketing", "WITHDRAWN").await;
    let answer = nba(&app, &id).await;
    assert_eq!(decisions(&answer)[0], d("mkt_offer", "BLOCKED_CONSENT", Some("WITHDRAWN")));
    assert_eq!(answer["action"]["rule"], "welcome");

    // A new version answers at once; the list shows the latest versions by priority.
    let v2 = define(
        &app,
        json!({ "key": "welcome", "purpose": "personalization", "priority": 50, "payload": { "banner": "hi" },
                "condition": { "hasIdentity": "PHONE" } }),
    )
    .await;
    assert_eq!(v2["version"], 2);
    let answer = nba(&app, &id).await;
    assert_eq!(answer["action"]["rule"], "fallback", "{answer}");
    assert_eq!(decisions(&answer)[2], d("welcome", "NOT_ELIGIBLE", None));
    let listed = app.data(&definer(&app), "{ actionRules { key version enabled } }", json!({})).await;
    assert_eq!(
        listed["actionRules"],
        json!([{ "key": "off", "version": 1, "enabled": false }, { "key": "mkt_offer", "version": 1, "enabled": true },
               { "key": "vip", "version": 1, "enabled": true }, { "key": "welcome", "version": 2, "enabled": true },
               { "key": "fallback", "version": 1, "enabled": true }])
    );
}

async fn shows_block_by_cooldown_and_frequency_cap_until_they_pass(app: TestApp) {
    define(
        &app,
        json!({ "key": "capped", "purpose": "personalization", "priority": 20, "placement": "home",
                "payload": { "offer": "c" }, "frequencyCap": { "max": 2, "days": 7 } }),
    )
    .await;
    define(
        &app,
        json!({ "key": "promo", "purpose": "personalization", "priority": 10, "payload": { "offer": "p" },
                "cooldownSeconds": 3600 }),
    )
    .await;
    define(&app, json!({ "key": "base", "purpose": "personalization", "payload": { "offer": "b" } })).await;
    let id = customer(&app, "shows@example.com").await;
    assert_eq!(nba(&app, &id).await["action"]["rule"], "capped");

    // One show (replayed by its key: still one) is under the cap.
    let two_days_ago = Utc::now() - Duration::days(2);
    let shown = outcome(&app, &id, "capped", "SHOWN", two_days_ago, Some("show-1")).await;
    assert_eq!(
        (&shown["status"], &shown["rule"], &shown["version"], &shown["outcome"], &shown["customerId"]),
        (&json!("CREATED"), &json!("capped"), &json!(1), &json!("SHOWN"), &json!(id))
    );
    let replay = outcome(&app, &id, "capped", "SHOWN", two_days_ago, Some("show-1")).await;
    assert_eq!((&replay["status"], &replay["touchpointId"]), (&json!("DUPLICATE"), &shown["touchpointId"]));
    // Accepted and dismissed outcomes are not shows.
    outcome(&app, &id, "capped", "ACCEPTED", Utc::now() - Duration::hours(2), None).await;
    outcome(&app, &id, "capped", "DISMISSED", Utc::now() - Duration::hours(2), None).await;
    assert_eq!(nba(&app, &id).await["action"]["rule"], "capped");

    // The second show reaches the cap: blocked until the older show leaves the 7-day window.
    outcome(&app, &id, "capped", "SHOWN", Utc::now() - Duration::days(1), None).await;
    let answer = nba(&app, &id).await;
    assert_eq!(
        decisions(&answer),
        vec![d("capped", "BLOCKED_FREQUENCY_CAP", None), d("promo", "FIRED", None), d("base", "NOT_REACHED", None)]
    );
    let expected = two_days_ago + Duration::days(7);
    assert!(close(until_of(&answer, "capped"), expected), "{answer} vs {expected}");

    // A show of promo starts its cooldown.
    let at = Utc::now() - Duration::minutes(10);
    outcome(&app, &id, "promo", "SHOWN", at, None).await;
    let answer = nba(&app, &id).await;
    assert_eq!(
        decisions(&answer),
        vec![
            d("capped", "BLOCKED_FREQUENCY_CAP", None),
            d("promo", "BLOCKED_COOLDOWN", None),
            d("base", "FIRED", None)
        ]
    );
    assert!(close(until_of(&answer, "promo"), at + Duration::hours(1)), "{answer}");
    assert_eq!(
        answer["action"],
        json!({ "rule": "base", "version": 1, "purpose": "personalization",
                                         "placement": null, "payload": { "offer": "b" } })
    );

    // A placement considers only its rules.
    let home = nba_with(&app, &id, Some("home")).await;
    assert_eq!((decisions(&home), &home["action"]), (vec![d("capped", "BLOCKED_FREQUENCY_CAP", None)], &Value::Null));
    let other = nba_with(&app, &id, Some("checkout")).await;
    assert_eq!(other["decisions"], json!([]), "{other}");

    // The shows are the customer's touchpoints: CUSTOM, with the rule in flat properties.
    let timeline = app
        .data(
            &app.token("acme", &["profiles:read", "touchpoints:read"], "support"),
            "query($id: UUID!) { customer(id: $id) { touchpoints(first: 20, filter: { types: [CUSTOM] }) {
                edges { node { source properties } } } } }",
            json!({ "id": id }),
        )
        .await;
    let nodes = timeline["customer"]["touchpoints"]["edges"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 5, "{timeline}");
    assert!(
        nodes
            .iter()
            .any(|n| n["node"]["properties"] == json!({ "nbaRule": "promo", "nbaVersion": 1, "nbaOutcome": "SHOWN" })
                && n["node"]["source"] == "next-best-action"),
        "{timeline}"
    );
}

async fn the_answer_is_refused_like_every_derived_value(app: TestApp) {
    define(&app, json!({ "key": "any", "purpose": "personalization", "payload": { "x": 1 } })).await;
    let id = customer(&app, "refused@example.com").await;
    // A caller acting for a purpose the customer has not consented to gets null and the reason.
    let (_, body) = app.gql(&engine(&app, "marketing"), NBA, json!({ "id": id })).await;
    assert_eq!(body["data"]["customer"]["nextBestAction"], Value::Null, "{body}");
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    assert_eq!(
        (&body["errors"][0]["extensions"]["purpose"], &body["errors"][0]["extensions"]["reason"]),
        (&json!("marketing"), &json!("NOT_GIVEN")),
        "{body}"
    );
    assert_eq!(body["errors"][0]["path"], json!(["customer", "nextBestAction"]), "{body}");
    assert_eq!(nba(&app, &id).await["action"]["rule"], "any");

    // Profiling withdrawn: not profiled at all.
    grant(&app, &id, "profiling", "WITHDRAWN").await;
    let (_, body) = app.gql(&engine(&app, "personalization"), NBA, json!({ "id": id })).await;
    assert_eq!(body["data"]["customer"]["nextBestAction"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "PROFILING_REFUSED", "{body}");

    // A restricted customer: nothing.
    let other = customer(&app, "restricted@example.com").await;
    assert_eq!(nba(&app, &other).await["action"]["rule"], "any");
    let officer = app.token("acme", &["profiles:read", "privacy:admin"], "privacy_admin");
    app.data(&officer, "mutation($id: UUID!) { restrictProcessing(customerId: $id) }", json!({ "id": other })).await;
    let (_, body) = app.gql(&engine(&app, "personalization"), NBA, json!({ "id": other })).await;
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "PROCESSING_RESTRICTED", "{body}");

    // The read is logged under the customer as a read of scores (the log is written in the background).
    let logged =
        "query($id: UUID!) { customer(id: $id) { accessLog(first: 100) { edges { node { purpose categories } } } } }";
    let mut found = false;
    for _ in 0..50 {
        let log = app.data(&officer, logged, json!({ "id": id })).await;
        found = log["customer"]["accessLog"]["edges"].as_array().expect("edges").iter().any(|e| {
            e["node"]["purpose"] == "personalization"
                && e["node"]["categories"].as_array().is_some_and(|c| c.iter().any(|c| c == "scores"))
        });
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "the next-best-action read is logged under the customer");
}

async fn bad_rules_are_refused_naming_the_field(app: TestApp) {
    let base = json!({ "key": "ok", "purpose": "personalization", "payload": {} });
    let with = |change: Value| {
        let mut rule = base.clone();
        if let (Some(rule), Some(change)) = (rule.as_object_mut(), change.as_object()) {
            rule.extend(change.clone());
        }
        rule
    };
    let big = "x".repeat(17 * 1024);
    let cases = [
        (with(json!({ "key": "Bad-Key" })), "key"),
        (with(json!({ "purpose": "gossip" })), "purpose"),
        (with(json!({ "payload": [1, 2] })), "payload"),
        (with(json!({ "payload": { "text": big } })), "payload"),
        (with(json!({ "placement": "Home Page" })), "placement"),
        (with(json!({ "cooldownSeconds": 0 })), "cooldownSeconds"),
        (with(json!({ "frequencyCap": { "max": 0, "days": 7 } })), "frequencyCap.max"),
        (with(json!({ "frequencyCap": { "max": 3, "days": 400 } })), "frequencyCap.days"),
        (with(json!({ "condition": { "all": [{ "hasIdentity": "EMAIL" }, { "nope": 1 }] } })), "condition.all[1]"),
        (with(json!({ "condition": { "inSegment": "missing" } })), "condition.inSegment"),
    ];
    for (rule, field) in cases {
        let (_, body) = app.gql(&definer(&app), DEFINE, json!({ "i": rule })).await;
        assert_eq!(first_code(&body), "VALIDATION", "{field}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
    }
    // A condition may use the tenant's segments.
    app.data(
        &definer(&app),
        "mutation($i: DefineSegmentInput!) { defineSegment(input: $i) { key } }",
        json!({ "i": { "key": "has_email", "purpose": "personalization", "condition": { "hasIdentity": "EMAIL" } } }),
    )
    .await;
    assert_eq!(define(&app, with(json!({ "condition": { "inSegment": "has_email" } }))).await["version"], 1);

    // Outcomes name their rule.
    let id = customer(&app, "outcome@example.com").await;
    let (_, body) = app
        .gql(
            &writer(&app),
            OUTCOME,
            json!({ "i": { "customerId": id, "rule": "unknown", "outcome": "SHOWN", "channel": "WEB" } }),
        )
        .await;
    assert_eq!((first_code(&body), &body["errors"][0]["extensions"]["field"]), ("VALIDATION", &json!("rule")));
    // Writing outcomes needs `touchpoints:write`.
    let (_, body) = app
        .gql(
            &definer(&app),
            OUTCOME,
            json!({ "i": { "customerId": id, "rule": "ok", "outcome": "SHOWN", "channel": "WEB" } }),
        )
        .await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");

    // At most 200 rules per tenant (one exists already); a new version of an existing one is still allowed.
    for i in 1..200 {
        define(&app, with(json!({ "key": format!("r{i}") }))).await;
    }
    let (_, body) = app.gql(&definer(&app), DEFINE, json!({ "i": with(json!({ "key": "one_too_many" })) })).await;
    assert_eq!((first_code(&body), &body["errors"][0]["extensions"]["field"]), ("VALIDATION", &json!("key")));
    assert_eq!(define(&app, with(json!({ "key": "r1", "priority": 3 }))).await["version"], 2);
}

async fn shows_follow_a_merge_and_its_unmerge(app: TestApp) {
    // A segment over the shows themselves (flat properties): customers who were shown `promo`.
    app.data(
        &definer(&app),
        "mutation($i: DefineSegmentInput!) { defineSegment(input: $i) { key } }",
        json!({ "i": { "key": "saw_promo", "purpose": "personalization", "condition": {
            "aggregate": { "aggregate": "COUNT", "filter": { "types": ["CUSTOM"], "properties": [
                { "key": "nbaRule", "equals": "promo" }, { "key": "nbaOutcome", "equals": "SHOWN" }] } },
            "op": "GTE", "value": 1 } } }),
    )
    .await;
    define(
        &app,
        json!({ "key": "promo", "purpose": "personalization", "priority": 10, "payload": {}, "cooldownSeconds": 3600 }),
    )
    .await;
    define(
        &app,
        json!({ "key": "follow_up", "purpose": "personalization", "priority": 5, "payload": {},
                "condition": { "inSegment": "saw_promo" } }),
    )
    .await;
    let a = customer(&app, "survivor@example.com").await;
    let b = customer(&app, "merged@example.com").await;
    outcome(&app, &b, "promo", "SHOWN", Utc::now() - Duration::minutes(5), None).await;
    let fresh = vec![d("promo", "FIRED", None), d("follow_up", "NOT_REACHED", None)];
    let shown = vec![d("promo", "BLOCKED_COOLDOWN", None), d("follow_up", "FIRED", None)];
    assert_eq!(decisions(&nba(&app, &a).await), fresh);
    assert_eq!(decisions(&nba(&app, &b).await), shown);

    let officer = app.token("acme", &["profiles:read", "profiles:write"], "support");
    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    let merged = app.data(&officer, merge, json!({ "s": a, "m": b })).await["mergeCustomers"]["id"].clone();
    assert_eq!(decisions(&nba(&app, &a).await), shown, "the survivor has the merged customer's show");
    // An outcome recorded with the merged-away id lands on the survivor.
    let later = outcome(&app, &b, "follow_up", "SHOWN", Utc::now(), None).await;
    assert_eq!(later["customerId"], json!(a));

    let unmerge = "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }";
    app.data(&officer, unmerge, json!({ "id": merged })).await;
    assert_eq!(decisions(&nba(&app, &a).await), fresh, "the show went back with the unmerge");
    assert_eq!(decisions(&nba(&app, &b).await), shown);
}

on_every_backend!(
    the_first_rule_that_passes_fires_and_each_rule_says_why,
    shows_block_by_cooldown_and_frequency_cap_until_they_pass,
    the_answer_is_refused_like_every_derived_value,
    bad_rules_are_refused_naming_the_field,
    shows_follow_a_merge_and_its_unmerge,
);
