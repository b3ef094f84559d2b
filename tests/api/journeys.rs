//! Journeys a CX team can map: per-tenant journey-stage rules applied at ingestion and re-derived over stored
//! touchpoints as a job; the ordered funnel through stages, by first channel, and what comes before purchases and
//! detractor answers, each checked against a hand computation.
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{grant, record},
};

fn cx(app: &TestApp) -> String {
    app.token("acme", &["cx:read", "cx:write"], "analytics")
}

fn support(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], "support")
}

/// One touchpoint of the customer with this email at `at`.
fn event(email: &str, key: &str, kind: &str, channel: &str, at: DateTime<Utc>) -> Value {
    json!({
        "identities": [{ "kind": "EMAIL", "value": email }], "channel": channel, "type": kind, "source": "web",
        "occurredAt": at.to_rfc3339(), "idempotencyKey": key,
    })
}

async fn recorded(app: &TestApp, item: Value) -> (String, String) {
    let result = record(app, json!([item])).await;
    assert_eq!(result["results"][0]["status"], "CREATED", "{result}");
    let r = &result["results"][0];
    (r["customerId"].as_str().expect("customer").to_owned(), r["touchpointId"].as_str().expect("id").to_owned())
}

async fn stages_of(app: &TestApp, customer: &str) -> Vec<(String, String)> {
    let query = "query($id: UUID!) { customer(id: $id) { touchpoints(first: 50) { edges { node { type stage } } } } }";
    let data = app.data(&support(app), query, json!({ "id": customer })).await;
    let mut stages: Vec<(String, String)> = data["customer"]["touchpoints"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (e["node"]["type"].as_str().unwrap_or("").to_owned(), e["node"]["stage"].as_str().unwrap_or("").to_owned())
        })
        .collect();
    stages.sort();
    stages
}

const UPDATE: &str = "mutation($r: [JourneyRuleInput!]!) { updateJourneyRules(rules: $r) {
    rules { version rules { priority stage types channels } } job { id kind } } }";

async fn a_changed_journey_rule_re_derives_the_stages_it_governs(app: TestApp) {
    let now = Utc::now() - Duration::minutes(5);
    let (customer, _) = recorded(&app, event("jr@example.com", "jr-1", "EMAIL_SENT", "EMAIL", now)).await;
    let mut given = event("jr@example.com", "jr-2", "PAGE_VIEW", "WEB", now);
    given["stage"] = json!("SUPPORT");
    recorded(&app, given).await;
    let mut survey = event("jr@example.com", "jr-3", "SURVEY_RESPONSE", "EMAIL", now);
    survey["feedback"] = json!({ "metric": "CSAT", "score": 5 });
    recorded(&app, survey).await;
    grant(&app, &customer, "analytics", "GRANTED").await;
    assert_eq!(
        stages_of(&app, &customer).await,
        [
            ("EMAIL_SENT".into(), "CONSIDERATION".into()),
            ("PAGE_VIEW".into(), "SUPPORT".into()),
            ("SURVEY_RESPONSE".into(), "RENEWAL".into())
        ]
    );

    // E-mails become onboarding; e-mailed surveys and page views become support (the page view's stage was given
    // by its sender and stays as it is).
    let rules = json!([
        { "priority": 1, "stage": "ONBOARDING", "types": ["EMAIL_SENT"] },
        { "priority": 5, "stage": "SUPPORT", "types": ["SURVEY_RESPONSE", "PAGE_VIEW"], "channels": ["EMAIL", "WEB"] },
    ]);
    let updated = app.data(&cx(&app), UPDATE, json!({ "r": rules })).await["updateJourneyRules"].clone();
    assert_eq!(updated["rules"]["version"], 1);
    assert_eq!(updated["rules"]["rules"][1]["channels"], json!(["EMAIL", "WEB"]));
    assert_eq!(updated["job"]["kind"], "REDERIVE_STAGES");
    let job = app.wait_for_job(&cx(&app), updated["job"]["id"].as_str().expect("job")).await;
    assert_eq!(job["state"], "SUCCEEDED", "{job}");
    assert_eq!(job["result"], json!({ "touchpointsChanged": 2, "rulesVersion": 1 }));
    assert_eq!(job["progress"], json!({ "done": 3, "total": 3 }));
    assert_eq!(
        stages_of(&app, &customer).await,
        [
            ("EMAIL_SENT".into(), "ONBOARDING".into()),
            ("PAGE_VIEW".into(), "SUPPORT".into()),
            ("SURVEY_RESPONSE".into(), "SUPPORT".into())
        ]
    );
    // The survey answer moved to its new stage's rollup cell in the same step.
    let metrics = "query($d: Date!) { cxMetrics(metric: CSAT, window: { from: $d, to: $d }, groupBy: [STAGE]) { cells { stage answers } } }";
    let today = Utc::now().date_naive().to_string();
    let cells = app.data(&cx(&app), metrics, json!({ "d": today })).await["cxMetrics"]["cells"].clone();
    assert_eq!(cells, json!([{ "stage": "SUPPORT", "answers": 1 }]));

    // A new touchpoint follows the rules at once; one with a stage of its own keeps it.
    recorded(&app, event("jr@example.com", "jr-4", "EMAIL_SENT", "EMAIL", now)).await;
    let mut own = event("jr@example.com", "jr-5", "EMAIL_SENT", "EMAIL", now);
    own["stage"] = json!("USAGE");
    recorded(&app, own).await;
    let stages = stages_of(&app, &customer).await;
    assert!(stages.contains(&("EMAIL_SENT".into(), "USAGE".into())), "{stages:?}");
    assert_eq!(stages.iter().filter(|s| **s == ("EMAIL_SENT".into(), "ONBOARDING".into())).count(), 2, "{stages:?}");
    let read = app.data(&cx(&app), "{ journeyRules { version rules { stage } } }", json!({})).await;
    assert_eq!(
        read["journeyRules"],
        json!({ "version": 1, "rules": [{ "stage": "ONBOARDING" }, { "stage": "SUPPORT" }] })
    );

    // A rule without a condition is refused by its place; rules need cx:write.
    let (_, body) = app.gql(&cx(&app), UPDATE, json!({ "r": [{ "priority": 1, "stage": "USAGE" }] })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "rules[0].types", "{body}");
    let reader = app.token("acme", &["cx:read"], "analytics");
    let (_, body) = app.gql(&reader, UPDATE, json!({ "r": rules })).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
}

const FUNNEL: &str =
    "query($w: CxWindowInput!) { journeyFunnel(window: $w, stages: [AWARENESS, CONSIDERATION, PURCHASE]) {
    customers excludedCustomers
    steps { stage customers conversionFromPrevious conversionFromStart medianSecondsFromPrevious }
    byFirstChannel { channel customers steps { customers } }
    purchasers beforePurchase { touchpointType channel customers share }
    detractors beforeDetractor { touchpointType channel customers share } } }";

async fn the_funnel_equals_a_hand_computation(app: TestApp) {
    let base = Utc::now() - Duration::hours(1);
    let day = |n: i64| base - Duration::days(n);
    // c1: ad (awareness) → page view (consideration) a day later → purchase a day after that. First channel: ADS.
    let (c1, _) = recorded(&app, event("f1@example.com", "f1-1", "AD_IMPRESSION", "ADS", day(10))).await;
    recorded(&app, event("f1@example.com", "f1-2", "PAGE_VIEW", "WEB", day(9))).await;
    recorded(&app, event("f1@example.com", "f1-3", "PURCHASE", "WEB", day(8))).await;
    // c2: page view first, ad later: aware, but considered only before: one step. First channel: WEB.
    let (c2, _) = recorded(&app, event("f2@example.com", "f2-1", "PAGE_VIEW", "WEB", day(10))).await;
    recorded(&app, event("f2@example.com", "f2-2", "AD_IMPRESSION", "ADS", day(9))).await;
    // c3: ad → page view two days later. First channel: ADS.
    let (c3, _) = recorded(&app, event("f3@example.com", "f3-1", "AD_IMPRESSION", "ADS", day(5))).await;
    recorded(&app, event("f3@example.com", "f3-2", "PAGE_VIEW", "WEB", day(3))).await;
    // c4: no analytics consent: left out.
    recorded(&app, event("f4@example.com", "f4-1", "AD_IMPRESSION", "ADS", day(5))).await;
    // c5: a support call, then a detractor answer. First channel: CALL_CENTER.
    let (c5, _) = recorded(&app, event("f5@example.com", "f5-1", "SUPPORT_CALL", "CALL_CENTER", day(2))).await;
    let mut survey = event("f5@example.com", "f5-2", "SURVEY_RESPONSE", "EMAIL", day(1));
    survey["feedback"] = json!({ "metric": "NPS", "score": 3 });
    recorded(&app, survey).await;
    for c in [&c1, &c2, &c3, &c5] {
        grant(&app, c, "analytics", "GRANTED").await;
    }
    // Outside the window: counts for nothing.
    recorded(&app, event("f1@example.com", "f1-old", "PURCHASE", "STORE", day(40))).await;

    let window = json!({ "from": day(20).date_naive().to_string(), "to": Utc::now().date_naive().to_string() });
    let funnel = app.data(&cx(&app), FUNNEL, json!({ "w": window })).await["journeyFunnel"].clone();
    assert_eq!(funnel["customers"], 4, "{funnel}");
    assert_eq!(funnel["excludedCustomers"], 1);
    assert_eq!(
        funnel["steps"],
        json!([
            { "stage": "AWARENESS", "customers": 3, "conversionFromPrevious": null, "conversionFromStart": 1.0,
              "medianSecondsFromPrevious": null },
            { "stage": "CONSIDERATION", "customers": 2, "conversionFromPrevious": 2.0 / 3.0,
              "conversionFromStart": 2.0 / 3.0, "medianSecondsFromPrevious": 1.5 * 86400.0 },
            { "stage": "PURCHASE", "customers": 1, "conversionFromPrevious": 0.5, "conversionFromStart": 1.0 / 3.0,
              "medianSecondsFromPrevious": 86400.0 },
        ])
    );
    assert_eq!(
        funnel["byFirstChannel"],
        json!([
            { "channel": "ADS", "customers": 2, "steps": [{ "customers": 2 }, { "customers": 2 }, { "customers": 1 }] },
            { "channel": "CALL_CENTER", "customers": 1, "steps": [{ "customers": 0 }, { "customers": 0 }, { "customers": 0 }] },
            { "channel": "WEB", "customers": 1, "steps": [{ "customers": 1 }, { "customers": 0 }, { "customers": 0 }] },
        ])
    );
    assert_eq!(funnel["purchasers"], 1);
    assert_eq!(
        funnel["beforePurchase"],
        json!([
            { "touchpointType": "AD_IMPRESSION", "channel": "ADS", "customers": 1, "share": 1.0 },
            { "touchpointType": "PAGE_VIEW", "channel": "WEB", "customers": 1, "share": 1.0 },
        ])
    );
    assert_eq!(funnel["detractors"], 1);
    assert_eq!(
        funnel["beforeDetractor"],
        json!([{ "touchpointType": "SUPPORT_CALL", "channel": "CALL_CENTER", "customers": 1, "share": 1.0 }])
    );

    // Needs cx:read; a window over a year is refused by name.
    let (_, body) = app.gql(&support(&app), FUNNEL, json!({ "w": window })).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    let long = json!({ "from": "2020-01-01", "to": Utc::now().date_naive().to_string() });
    let (_, body) = app.gql(&cx(&app), FUNNEL, json!({ "w": long })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
}

on_every_backend!(a_changed_journey_rule_re_derives_the_stages_it_governs, the_funnel_equals_a_hand_computation);
