//! The closed loop over HTTP: rules open one case per poor answer and customer, the lifecycle with reasons and
//! history, refused transitions, closing needs a root cause, the sweeper marks breaches once, the follow-up contact
//! is a touchpoint (refused for a restricted customer), re-surveys are linked, erasure removes cases, tenants are
//! isolated.
use std::time::Duration;

use chrono::Utc;
use kontakt::storage::entities::{feedback_case, feedback_case_event};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{record, touchpoint},
};

fn cx(app: &TestApp, tenant: &str) -> String {
    app.token(tenant, &["cx:read", "cx:write", "profiles:read", "touchpoints:read"], "support")
}

const CASE_FIELDS: &str = "id customerId state priority team owner score metric openedAt firstContactDue resolutionDue
    firstContactedAt breached breachedFirstContact breachedResolution rootCause outcome followUpTouchpointId
    resurveyTouchpointId resurveyScore history { kind actor from to reason note deadline touchpointId priority }";

const UPDATE_RULES: &str = "mutation($r: [FeedbackRuleInput!]!) { updateFeedbackRules(rules: $r) {
    id name metric scoreMin scoreMax priority team firstContactWithinSeconds resolutionWithinSeconds enabled version } }";

/// Creates or updates one rule (by name) through `updateFeedbackRules`; answers that rule.
async fn define_rule(app: &TestApp, token: &str, input: Value) -> Value {
    let rules = app.data(token, UPDATE_RULES, json!({ "r": [input.clone()] })).await["updateFeedbackRules"].clone();
    rules.as_array().expect("rules").iter().find(|r| r["name"] == input["name"]).cloned().expect("the rule")
}

fn nps_rule(first_contact: i64) -> Value {
    json!({ "name": "detractors", "metric": "NPS", "scoreMin": 0, "scoreMax": 6, "priority": "NORMAL",
            "team": "care", "firstContactWithinSeconds": first_contact, "resolutionWithinSeconds": 7 * 24 * 3600 })
}

/// Records an NPS answer for `email`; returns (customer id, touchpoint id).
async fn answer(app: &TestApp, key: &str, email: &str, score: i64, minutes_ago: i64) -> (String, String) {
    let mut survey = touchpoint(key, json!([{ "kind": "EMAIL", "value": email }]), "SURVEY_RESPONSE", minutes_ago);
    survey["channel"] = json!("EMAIL");
    survey["feedback"] = json!({ "metric": "NPS", "score": score, "verbatim": "slow delivery" });
    let result = record(app, json!([survey])).await;
    assert_eq!(result["created"], 1, "{result}");
    let item = &result["results"][0];
    (item["customerId"].as_str().expect("customer").to_owned(), item["touchpointId"].as_str().expect("tp").to_owned())
}

async fn cases_of(app: &TestApp, token: &str, customer: &str) -> Vec<Value> {
    let query = format!(
        "query($c: UUID!) {{ feedbackCases(filter: {{ customerId: $c }}) {{ edges {{ node {{ {CASE_FIELDS} }} }} }} }}"
    );
    let data = app.data(token, &query, json!({ "c": customer })).await;
    data["feedbackCases"]["edges"].as_array().expect("edges").iter().map(|e| e["node"].clone()).collect()
}

async fn case(app: &TestApp, token: &str, id: &str) -> Value {
    let query = format!("query($id: UUID!) {{ feedbackCase(id: $id) {{ {CASE_FIELDS} }} }}");
    app.data(token, &query, json!({ "id": id })).await["feedbackCase"].clone()
}

async fn act(app: &TestApp, token: &str, mutation: &str, input: Value) -> (Value, Value) {
    let query = format!("mutation($i: {}) {{ {mutation}(input: $i) {{ {CASE_FIELDS} }} }}", input_type(mutation));
    let (_, body) = app.gql(token, &query, json!({ "i": input })).await;
    (body["data"][mutation].clone(), body)
}

fn input_type(mutation: &str) -> &'static str {
    match mutation {
        "assignFeedbackCase" => "AssignFeedbackCaseInput!",
        "transitionFeedbackCase" => "TransitionFeedbackCaseInput!",
        "closeFeedbackCase" => "CloseFeedbackCaseInput!",
        _ => "FeedbackCaseContactInput!",
    }
}

async fn transition(app: &TestApp, token: &str, id: &str, to: &str, reason: &str) -> Value {
    let (case, body) = act(app, token, "transitionFeedbackCase", json!({ "id": id, "to": to, "reason": reason })).await;
    assert!(body.get("errors").is_none(), "{body}");
    case
}

async fn a_detractor_answer_opens_one_case_with_deadlines(app: TestApp) {
    let token = cx(&app, "acme");
    let rule = define_rule(&app, &token, nps_rule(4 * 3600)).await;
    assert_eq!((rule["version"].as_i64(), rule["enabled"].as_bool()), (Some(1), Some(true)), "{rule}");
    let (customer, trigger) = answer(&app, "d1", "detractor@example.com", 3, 10).await;
    let cases = cases_of(&app, &token, &customer).await;
    assert_eq!(cases.len(), 1, "{cases:?}");
    let opened = &cases[0];
    assert_eq!((opened["state"].as_str(), opened["priority"].as_str()), (Some("NEW"), Some("NORMAL")));
    assert_eq!((opened["team"].as_str(), opened["score"].as_i64()), (Some("care"), Some(3)));
    let at = |field: &str| chrono::DateTime::parse_from_rfc3339(opened[field].as_str().expect(field)).expect(field);
    assert_eq!((at("firstContactDue") - at("openedAt")).num_seconds(), 4 * 3600);
    assert_eq!((at("resolutionDue") - at("openedAt")).num_seconds(), 7 * 24 * 3600);
    assert_eq!(opened["history"][0]["kind"], "CREATED");
    assert_eq!(opened["history"][0]["touchpointId"], trigger.as_str());

    // A second poor answer while the case is open is linked to it, not a second case.
    let (same, second) = answer(&app, "d2", "detractor@example.com", 5, 5).await;
    assert_eq!(same, customer);
    let cases = cases_of(&app, &token, &customer).await;
    assert_eq!(cases.len(), 1, "{cases:?}");
    let linked = &cases[0]["history"][1];
    assert_eq!(
        (linked["kind"].as_str(), linked["touchpointId"].as_str()),
        (Some("ANSWER_LINKED"), Some(second.as_str()))
    );

    // A promoter opens none.
    let (promoter, _) = answer(&app, "p1", "promoter@example.com", 10, 5).await;
    assert!(cases_of(&app, &token, &promoter).await.is_empty());

    // Rule validation speaks of the field, by the rule's place in the list.
    let query = "mutation($r: [FeedbackRuleInput!]!) { updateFeedbackRules(rules: $r) { id } }";
    for (patch, field) in [
        (json!({ "scoreMax": 11 }), "scoreMax"),
        (json!({ "scoreMin": 5, "scoreMax": 2 }), "scoreMax"),
        (json!({ "firstContactWithinSeconds": 0 }), "firstContactWithinSeconds"),
        (json!({ "firstContactWithinSeconds": 9_000_000 }), "firstContactWithinSeconds"),
    ] {
        let mut input = nps_rule(3600);
        for (k, v) in patch.as_object().expect("patch") {
            input[k] = v.clone();
        }
        let (_, body) = app.gql(&token, query, json!({ "r": [input] })).await;
        assert_eq!(first_code(&body), "VALIDATION", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], format!("rules[0].{field}"), "{body}");
    }
    // Redefining by name updates the rule.
    let again = define_rule(&app, &token, nps_rule(2 * 3600)).await;
    assert_eq!((again["id"].clone(), again["version"].as_i64()), (rule["id"].clone(), Some(2)));
}

async fn the_lifecycle_needs_reasons_refuses_illegal_moves_and_keeps_its_history(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let (customer, _) = answer(&app, "l1", "life@example.com", 2, 10).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();

    // NEW cannot be resolved: the error names both states.
    let (_, body) =
        act(&app, &token, "transitionFeedbackCase", json!({ "id": id, "to": "RESOLVED", "reason": "done" })).await;
    assert_eq!(first_code(&body), "INVALID_TRANSITION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["from"], "NEW");
    assert_eq!(body["errors"][0]["extensions"]["to"], "RESOLVED");
    // A reason is required.
    let (_, body) =
        act(&app, &token, "assignFeedbackCase", json!({ "id": id, "owner": "agent-7", "reason": " " })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "reason");

    let (assigned, body) = act(
        &app,
        &token,
        "assignFeedbackCase",
        json!({ "id": id, "owner": "agent-7", "team": "recovery", "reason": "on shift" }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!((assigned["state"].as_str(), assigned["owner"].as_str()), (Some("ASSIGNED"), Some("agent-7")));
    assert_eq!(assigned["team"], "recovery");
    transition(&app, &token, &id, "IN_PROGRESS", "calling").await;
    transition(&app, &token, &id, "ESCALATED", "needs a manager").await;
    transition(&app, &token, &id, "IN_PROGRESS", "manager approved a refund").await;
    let resolved = transition(&app, &token, &id, "RESOLVED", "refund sent").await;
    assert_eq!(resolved["state"], "RESOLVED");

    // Closing needs a root cause of the taxonomy.
    let close = json!({ "id": id, "rootCause": "late-delivery", "outcome": "RECOVERED", "reason": "customer happy" });
    let (_, body) = act(&app, &token, "closeFeedbackCase", close.clone()).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "rootCause");
    let define = "mutation($i: DefineRootCauseInput!) { defineRootCause(input: $i) { code label parent } }";
    app.data(&token, define, json!({ "i": { "code": "delivery", "label": "Delivery" } })).await;
    let child = app
        .data(
            &token,
            define,
            json!({ "i": { "code": "late-delivery", "label": "Late delivery", "parent": "delivery" } }),
        )
        .await;
    assert_eq!(child["defineRootCause"]["parent"], "delivery");
    let (_, body) =
        app.gql(&token, define, json!({ "i": { "code": "too-deep", "label": "x", "parent": "late-delivery" } })).await;
    assert_eq!(first_code(&body), "VALIDATION", "two levels only: {body}");
    let (closed, body) = act(&app, &token, "closeFeedbackCase", close).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!((closed["state"].as_str(), closed["outcome"].as_str()), (Some("CLOSED"), Some("RECOVERED")));
    assert_eq!(closed["rootCause"], "late-delivery");

    // CLOSED goes nowhere but REOPENED; reopened, it is started again.
    let (_, body) =
        act(&app, &token, "transitionFeedbackCase", json!({ "id": id, "to": "IN_PROGRESS", "reason": "x" })).await;
    assert_eq!(first_code(&body), "INVALID_TRANSITION", "{body}");
    let reopened = transition(&app, &token, &id, "REOPENED", "customer called back").await;
    assert_eq!((reopened["state"].as_str(), reopened["outcome"].as_str()), (Some("REOPENED"), None));
    transition(&app, &token, &id, "IN_PROGRESS", "on it again").await;

    let history = case(&app, &token, &id).await["history"].clone();
    let moves: Vec<(String, String, String)> = history
        .as_array()
        .expect("history")
        .iter()
        .map(|e| {
            let text = |f: &str| e[f].as_str().unwrap_or("-").to_owned();
            (text("kind"), text("to"), text("reason"))
        })
        .collect();
    let expected = [
        ("CREATED", "NEW"),
        ("ASSIGNED", "ASSIGNED"),
        ("STATUS_CHANGED", "IN_PROGRESS"),
        ("STATUS_CHANGED", "ESCALATED"),
        ("STATUS_CHANGED", "IN_PROGRESS"),
        ("STATUS_CHANGED", "RESOLVED"),
        ("CLOSED", "CLOSED"),
        ("REOPENED", "REOPENED"),
        ("STATUS_CHANGED", "IN_PROGRESS"),
    ];
    assert_eq!(moves.len(), expected.len(), "{moves:?}");
    for ((kind, to, reason), (want_kind, want_to)) in moves.iter().zip(expected) {
        assert_eq!((kind.as_str(), to.as_str()), (want_kind, want_to), "{moves:?}");
        assert_ne!(reason, "-", "every entry has a reason: {moves:?}");
    }
    assert_eq!(history[1]["actor"], "test-user");
    assert_eq!(history[0]["actor"], "system");

    // Stats see the closed case, its root cause and its time to close.
    let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let stats = app
        .data(
            &token,
            "query($from: DateTime!) { feedbackCaseStats(from: $from) { opened byState { state count }
                closeSecondsP50 rootCauses { code label count share } } }",
            json!({ "from": since }),
        )
        .await["feedbackCaseStats"]
        .clone();
    assert_eq!(stats["opened"], 1, "{stats}");
    // Reopened since, so it is no longer closed: no Pareto entry, but its state counts.
    assert_eq!(stats["rootCauses"], json!([]), "{stats}");
    assert!(
        stats["byState"].as_array().expect("states").iter().any(|s| s["state"] == "IN_PROGRESS" && s["count"] == 1)
    );
}

async fn the_sweeper_marks_a_breach_and_escalates_once(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(1)).await;
    let (customer, _) = answer(&app, "s1", "late@example.com", 1, 10).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
    // The background sweeper (every 100 ms here) finds the one-second deadline passed.
    let mut seen = Value::Null;
    for _ in 0..100 {
        seen = case(&app, &token, &id).await;
        if seen["breachedFirstContact"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen["breachedFirstContact"], true, "{seen}");
    assert_eq!((seen["state"].as_str(), seen["priority"].as_str()), (Some("ESCALATED"), Some("HIGH")), "{seen}");
    // More sweeps change nothing: one breach event.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = case(&app, &token, &id).await;
    let breaches: Vec<&Value> =
        after["history"].as_array().expect("history").iter().filter(|e| e["kind"] == "SLA_BREACHED").collect();
    assert_eq!(breaches.len(), 1, "{after}");
    assert_eq!(
        (breaches[0]["deadline"].as_str(), breaches[0]["to"].as_str()),
        (Some("FIRST_CONTACT"), Some("ESCALATED"))
    );
    assert_eq!(after["priority"], "HIGH");
    let breached =
        app.data(&token, "{ feedbackCases(filter: { breached: true }) { edges { node { id } } } }", json!({})).await;
    assert_eq!(breached["feedbackCases"]["edges"][0]["node"]["id"], id.as_str());
}

async fn concurrent_sweeps_mark_each_breach_once(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let (customer, _) = answer(&app, "c1", "race@example.com", 0, 10).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
    // Time moved by the test: both deadlines lie behind "now" for these two sweeps running at once.
    let later = Utc::now() + chrono::Duration::days(30);
    let (a, b) = (app.db().await, app.db().await);
    let (one, two) =
        tokio::join!(kontakt::cx::cases::sweep::sweep(&a, later), kontakt::cx::cases::sweep::sweep(&b, later));
    let (one, two) = (one.expect("sweep"), two.expect("sweep"));
    assert_eq!(one.breaches + two.breaches, 2, "{one:?} {two:?}");
    let case_id: uuid::Uuid = id.parse().expect("uuid");
    let events = feedback_case_event::Entity::find()
        .filter(feedback_case_event::Column::CaseId.eq(case_id))
        .filter(feedback_case_event::Column::Kind.eq("SLA_BREACHED"))
        .all(&a)
        .await
        .expect("events");
    assert_eq!(events.len(), 2, "one per deadline: {events:?}");
    let row = feedback_case::Entity::find_by_id(case_id).one(&a).await.expect("case").expect("row");
    assert!(row.breached_first_contact && row.breached_resolution);
    assert_eq!((row.state.as_str(), row.priority.as_str()), ("ESCALATED", "URGENT"));
    // A sweep after that finds nothing.
    assert_eq!(kontakt::cx::cases::sweep::sweep(&a, later).await.expect("sweep").breaches, 0);
}

async fn the_follow_up_is_a_touchpoint_and_a_resurvey_is_linked(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let (customer, _) = answer(&app, "f1", "follow@example.com", 4, 30).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
    // Marketing by email withdrawn does not stop the service follow-up.
    crate::touchpoints::grant(&app, &customer, "marketing", "WITHDRAWN").await;
    let (contacted, body) = act(
        &app,
        &token,
        "recordFeedbackCaseContact",
        json!({ "id": id, "channel": "CALL_CENTER", "type": "SUPPORT_CALL", "note": "apologised, refund offered" }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let follow_up = contacted["followUpTouchpointId"].as_str().expect("follow-up").to_owned();
    assert!(contacted["firstContactedAt"].is_string(), "{contacted}");
    let last = contacted["history"].as_array().expect("history").last().cloned().expect("event");
    assert_eq!((last["kind"].as_str(), last["touchpointId"].as_str()), (Some("CONTACTED"), Some(follow_up.as_str())));
    // It is on the customer's timeline, in the SUPPORT stage.
    let timeline = app
        .data(
            &app.token("acme", &["profiles:read", "touchpoints:read"], "support"),
            "query($id: UUID!) { customer(id: $id) { touchpoints { edges { node { id type channel stage } } } } }",
            json!({ "id": customer }),
        )
        .await;
    let nodes = timeline["customer"]["touchpoints"]["edges"].as_array().expect("edges").clone();
    let contact = nodes.iter().map(|e| &e["node"]).find(|n| n["id"] == follow_up.as_str()).expect("on the timeline");
    assert_eq!(
        (contact["type"].as_str(), contact["channel"].as_str(), contact["stage"].as_str()),
        (Some("SUPPORT_CALL"), Some("CALL_CENTER"), Some("SUPPORT"))
    );

    // The next NPS answer is the re-survey.
    let (_, resurvey) = answer(&app, "f2", "follow@example.com", 9, 1).await;
    let linked = case(&app, &token, &id).await;
    assert_eq!(
        (linked["resurveyTouchpointId"].as_str(), linked["resurveyScore"].as_i64()),
        (Some(resurvey.as_str()), Some(9))
    );
    assert!(linked["history"].as_array().expect("history").iter().any(|e| e["kind"] == "RESURVEYED"));
    let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let stats = app
        .data(
            &token,
            "query($from: DateTime!) { feedbackCaseStats(from: $from) { resurveyed recovered recoveryRate firstContactSecondsP50 firstContactWithinSla } }",
            json!({ "from": since }),
        )
        .await["feedbackCaseStats"]
        .clone();
    assert_eq!((stats["resurveyed"].as_i64(), stats["recovered"].as_i64()), (Some(1), Some(1)), "{stats}");
    assert_eq!(stats["recoveryRate"], 100.0);
    assert_eq!(stats["firstContactWithinSla"], 100.0);

    // A restricted customer is not contacted (and no new case opens for them).
    let (restricted, _) = answer(&app, "r1", "restricted@example.com", 2, 10).await;
    let restricted_case = cases_of(&app, &token, &restricted).await[0]["id"].as_str().expect("id").to_owned();
    let officer = app.token("acme", &["profiles:read", "privacy:admin"], "privacy_admin");
    app.data(&officer, "mutation($id: UUID!) { restrictProcessing(customerId: $id) }", json!({ "id": restricted }))
        .await;
    let (_, body) = act(
        &app,
        &token,
        "recordFeedbackCaseContact",
        json!({ "id": restricted_case, "channel": "EMAIL", "type": "EMAIL_SENT" }),
    )
    .await;
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "PROCESSING_RESTRICTED");
    let other_rule = json!({ "name": "any-nps", "metric": "NPS", "scoreMin": 0, "scoreMax": 10, "team": "care",
        "firstContactWithinSeconds": 60, "resolutionWithinSeconds": 60 });
    define_rule(&app, &token, other_rule).await;
    answer(&app, "r2", "restricted@example.com", 1, 5).await;
    assert_eq!(cases_of(&app, &token, &restricted).await.len(), 1, "no case opens for a restricted customer");
}

async fn erasure_removes_cases_and_export_shows_them(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let (customer, _) = answer(&app, "e1", "erase@example.com", 3, 10).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
    let officer =
        app.token("acme", &["profiles:read", "touchpoints:read", "privacy:admin", "pii:read"], "privacy_admin");
    let export = app.data(&officer, "query($id: UUID!) { exportCustomer(id: $id) }", json!({ "id": customer })).await;
    let exported = &export["exportCustomer"]["feedbackCases"];
    assert_eq!(exported[0]["id"], id.as_str(), "{exported}");
    assert_eq!(exported[0]["history"][0]["kind"], "CREATED");
    assert!(exported[0].get("verbatim").is_none());

    let erased =
        app.data(&officer, "mutation($id: UUID!) { eraseCustomer(id: $id) { rows } }", json!({ "id": customer })).await;
    assert_eq!(erased["eraseCustomer"]["rows"]["feedbackCases"], 1);
    let (_, body) = app.gql(&token, "query($id: UUID!) { feedbackCase(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    let db = app.db().await;
    let case_id: uuid::Uuid = id.parse().expect("uuid");
    let events = feedback_case_event::Entity::find()
        .filter(feedback_case_event::Column::CaseId.eq(case_id))
        .all(&db)
        .await
        .expect("events");
    assert!(events.is_empty(), "{events:?}");
}

async fn another_tenant_cannot_see_or_touch_a_case(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let (customer, _) = answer(&app, "t1", "tenant@example.com", 3, 10).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
    let other = cx(&app, "other");
    let (_, body) = app.gql(&other, "query($id: UUID!) { feedbackCase(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    let theirs = app.data(&other, "{ feedbackCases { edges { node { id } } } feedbackRules { id } }", json!({})).await;
    assert_eq!(theirs["feedbackCases"]["edges"], json!([]));
    assert_eq!(theirs["feedbackRules"], json!([]));
    let (_, body) =
        act(&app, &other, "assignFeedbackCase", json!({ "id": id, "owner": "intruder", "reason": "mine" })).await;
    assert_eq!(first_code(&body), "NOT_FOUND", "{body}");
    // Scopes: reading needs cx:read, working a case cx:write.
    let reader = app.token("acme", &["cx:read"], "support");
    let (_, body) =
        act(&app, &reader, "assignFeedbackCase", json!({ "id": id, "owner": "agent", "reason": "x" })).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    let nobody = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app.gql(&nobody, "query($id: UUID!) { feedbackCase(id: $id) { id } }", json!({ "id": id })).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    assert_eq!(case(&app, &token, &id).await["state"], "NEW");
}

/// Records a survey answer with a channel and a stage; returns (customer id, touchpoint id).
async fn answer_on(
    app: &TestApp,
    key: &str,
    email: &str,
    metric: &str,
    score: i64,
    channel: &str,
    stage: &str,
) -> (String, String) {
    let mut survey = touchpoint(key, json!([{ "kind": "EMAIL", "value": email }]), "SURVEY_RESPONSE", 5);
    survey["channel"] = json!(channel);
    survey["stage"] = json!(stage);
    survey["feedback"] = json!({ "metric": metric, "score": score });
    let result = record(app, json!([survey])).await;
    assert_eq!(result["created"], 1, "{result}");
    let item = &result["results"][0];
    (item["customerId"].as_str().expect("customer").to_owned(), item["touchpointId"].as_str().expect("tp").to_owned())
}

/// Takes a NEW case to CLOSED with `cause`.
async fn work_and_close(app: &TestApp, token: &str, id: &str, cause: &str) {
    let (_, body) =
        act(app, token, "assignFeedbackCase", json!({ "id": id, "owner": "agent", "reason": "mine" })).await;
    assert!(body.get("errors").is_none(), "{body}");
    transition(app, token, id, "IN_PROGRESS", "calling").await;
    transition(app, token, id, "RESOLVED", "sorted").await;
    let close = json!({ "id": id, "rootCause": cause, "outcome": "RECOVERED", "reason": "done" });
    let (closed, body) = act(app, token, "closeFeedbackCase", close).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(closed["state"], "CLOSED");
}

async fn update_feedback_rules_is_all_or_nothing(app: TestApp) {
    let token = cx(&app, "acme");
    let csat = json!({ "name": "csat-poor", "metric": "CSAT", "scoreMin": 1, "scoreMax": 2, "team": "care",
        "firstContactWithinSeconds": 3600, "resolutionWithinSeconds": 86400 });
    // A bad second rule: nothing is written, and the error names it by its place.
    let mut bad = nps_rule(3600);
    bad["team"] = json!(" ");
    let (_, body) = app.gql(&token, UPDATE_RULES, json!({ "r": [csat.clone(), bad] })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "rules[1].team", "{body}");
    let rules = app.data(&token, "{ feedbackRules { name } }", json!({})).await;
    assert_eq!(rules["feedbackRules"], json!([]), "all or nothing: {rules}");
    // A name twice is refused.
    let (_, body) = app.gql(&token, UPDATE_RULES, json!({ "r": [csat.clone(), csat.clone()] })).await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "rules[1].name", "{body}");

    // Two at once: both created, answered by name.
    let rules = app.data(&token, UPDATE_RULES, json!({ "r": [nps_rule(3600), csat.clone()] })).await;
    let rules = rules["updateFeedbackRules"].as_array().expect("rules").clone();
    let names: Vec<&str> = rules.iter().map(|r| r["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["csat-poor", "detractors"]);
    assert!(rules.iter().all(|r| r["version"] == 1 && r["enabled"] == true), "{rules:?}");
    // One sent again disabled: its version moves; the rule not named stays as it was.
    let mut off = nps_rule(3600);
    off["enabled"] = json!(false);
    let rules = app.data(&token, UPDATE_RULES, json!({ "r": [off.clone()] })).await["updateFeedbackRules"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(2), "{rules}");
    assert_eq!((rules[1]["enabled"].as_bool(), rules[1]["version"].as_i64()), (Some(false), Some(2)), "{rules}");
    assert_eq!((rules[0]["name"].as_str(), rules[0]["version"].as_i64()), (Some("csat-poor"), Some(1)), "{rules}");
    // Sent unchanged: no new version.
    let rules = app.data(&token, UPDATE_RULES, json!({ "r": [off] })).await["updateFeedbackRules"].clone();
    assert_eq!(rules[1]["version"], 2, "{rules}");
    // A disabled rule opens nothing.
    let (customer, _) = answer(&app, "u1", "off@example.com", 2, 5).await;
    assert!(cases_of(&app, &token, &customer).await.is_empty());
    // Writing rules needs cx:write.
    let reader = app.token("acme", &["cx:read"], "support");
    let (_, body) = app.gql(&reader, UPDATE_RULES, json!({ "r": [csat] })).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
}

async fn customer_feedback_cases_are_paged_gated_logged_and_batched(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let all = json!({ "name": "every-nps", "metric": "NPS", "scoreMin": 0, "scoreMax": 10, "team": "insight",
        "firstContactWithinSeconds": 3600, "resolutionWithinSeconds": 86400 });
    define_rule(&app, &token, all).await;
    // Four customers, each with two cases (one answer matches both rules); the first gets a third answer's link.
    let mut customers = Vec::new();
    for i in 0..4 {
        customers.push(answer(&app, &format!("b{i}"), &format!("b{i}@example.com"), 3, 10).await.0);
    }
    let customer = customers[0].clone();
    let newest_first: Vec<String> =
        cases_of(&app, &token, &customer).await.iter().map(|c| c["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(newest_first.len(), 2);

    // One customer, paged newest first, with each case's customer and history.
    let one = "query($id: UUID!, $after: String) { customer(id: $id) { feedbackCases(first: 1, after: $after) {
        edges { node { id customerId customer { id } history { kind } } } pageInfo { hasNextPage endCursor } } } }";
    let page = app.data(&token, one, json!({ "id": customer })).await["customer"]["feedbackCases"].clone();
    let node = &page["edges"][0]["node"];
    assert_eq!(node["id"], newest_first[0].as_str(), "{page}");
    assert_eq!(
        (node["customerId"].as_str(), node["customer"]["id"].as_str()),
        (Some(customer.as_str()), Some(customer.as_str()))
    );
    assert_eq!(node["history"][0]["kind"], "CREATED");
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let after = page["pageInfo"]["endCursor"].clone();
    let page =
        app.data(&token, one, json!({ "id": customer, "after": after })).await["customer"]["feedbackCases"].clone();
    assert_eq!(page["edges"][0]["node"]["id"], newest_first[1].as_str(), "{page}");
    assert_eq!(page["pageInfo"]["hasNextPage"], false);

    // Without cx:read: null with FORBIDDEN, the rest of the customer served.
    let no_cx = app.token("acme", &["profiles:read"], "support");
    let (_, body) = app
        .gql(
            &no_cx,
            "query($id: UUID!) { customer(id: $id) { id feedbackCases { edges { node { id } } } } }",
            json!({ "id": customer }),
        )
        .await;
    assert_eq!(body["data"]["customer"]["id"], customer.as_str(), "{body}");
    assert!(body["data"]["customer"]["feedbackCases"].is_null(), "{body}");
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");

    // A page of customers: the same statements for 2 customers as for 4 (one query for the cases, one for their
    // histories), and each shows what its one-customer read shows.
    let selection =
        "feedbackCases { edges { node { id state history { kind touchpointId } } } pageInfo { hasNextPage } }";
    let list = |n: usize| format!("{{ customers(first: {n}) {{ edges {{ node {{ id {selection} }} }} }} }}");
    let before = app.statements().await;
    let small_page = app.data(&token, &list(2), json!({})).await;
    let small = app.statements().await - before;
    let before = app.statements().await;
    let large_page = app.data(&token, &list(4), json!({})).await;
    let large = app.statements().await - before;
    assert_eq!(small_page["customers"]["edges"].as_array().map(Vec::len), Some(2));
    let edges = large_page["customers"]["edges"].as_array().expect("edges").clone();
    assert_eq!(edges.len(), 4);
    let single = format!("query($id: UUID!) {{ customer(id: $id) {{ id {selection} }} }}");
    for edge in &edges {
        assert_eq!(edge["node"]["feedbackCases"]["edges"].as_array().map(Vec::len), Some(2), "{edge}");
        let read = app.data(&token, &single, json!({ "id": edge["node"]["id"] })).await;
        assert_eq!(edge["node"], read["customer"], "the list and the one-customer read disagree");
    }
    assert_eq!(small, large, "statements must not grow with the page size (N+1): {small} for 2, {large} for 4");

    // The reads are access-logged under the customer.
    let officer = app.token("acme", &["profiles:read", "privacy:admin"], "privacy_admin");
    let logged = "query($id: UUID!) { customer(id: $id) { accessLog(first: 100) { edges { node { categories } } } } }";
    let mut found = false;
    for _ in 0..50 {
        let log = app.data(&officer, logged, json!({ "id": customers[3] })).await;
        found = log["customer"]["accessLog"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .any(|e| e["node"]["categories"].as_array().is_some_and(|c| c.iter().any(|c| c == "feedback_case")));
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "a list's feedbackCases read is logged under each customer");
}

async fn cases_follow_a_merge_and_come_back_with_its_unmerge(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let (a, _) = answer(&app, "m1", "anna@example.com", 2, 30).await;
    let (b, _) = answer(&app, "m2", "anna.b@example.com", 4, 20).await;
    let (a_case, b_case) =
        (cases_of(&app, &token, &a).await[0]["id"].clone(), cases_of(&app, &token, &b).await[0]["id"].clone());
    let admin = app.token("acme", &["profiles:read", "profiles:write", "cx:read", "cx:write"], "support");
    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    let merge_id = app.data(&admin, merge, json!({ "s": a, "m": b })).await["mergeCustomers"]["id"].clone();

    // The survivor lists both people's cases, both still open (one each of the same rule: nothing closed).
    let of = "query($id: UUID!) { customer(id: $id) { id feedbackCases { edges { node { id customerId state } } } } }";
    let survivor = app.data(&token, of, json!({ "id": a })).await["customer"].clone();
    let ids: Vec<Value> =
        survivor["feedbackCases"]["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].clone()).collect();
    assert_eq!(ids, vec![b_case.clone(), a_case.clone()], "{survivor}");
    assert!(
        survivor["feedbackCases"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .all(|e| e["node"]["customerId"] == a.as_str() && e["node"]["state"] == "NEW")
    );
    // Read through the merged id, the survivor answers with the same cases.
    let through_b = app.data(&token, of, json!({ "id": b })).await["customer"].clone();
    assert_eq!(through_b["feedbackCases"], survivor["feedbackCases"]);
    // A later poor answer links to the survivor's own case, opening none.
    answer(&app, "m3", "anna.b@example.com", 1, 10).await;
    assert_eq!(cases_of(&app, &token, &a).await.len(), 2);

    // The unmerge takes exactly the moved case back.
    app.data(&admin, "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { id } }", json!({ "id": merge_id })).await;
    let a_cases: Vec<Value> = cases_of(&app, &token, &a).await.iter().map(|c| c["id"].clone()).collect();
    let b_cases: Vec<Value> = cases_of(&app, &token, &b).await.iter().map(|c| c["id"].clone()).collect();
    assert_eq!((a_cases, b_cases), (vec![a_case.clone()], vec![b_case.clone()]));

    // Only the merged customer had an open case: it takes the survivor's key, so the survivor's next poor answer
    // links to it; after the unmerge it is the restored customer's again, and theirs links to it.
    let (c, _) = answer(&app, "m4", "carl@example.com", 9, 30).await;
    let (d, _) = answer(&app, "m5", "carl.d@example.com", 3, 20).await;
    assert!(cases_of(&app, &token, &c).await.is_empty());
    let d_case = cases_of(&app, &token, &d).await[0]["id"].clone();
    let merge_id = app.data(&admin, merge, json!({ "s": c, "m": d })).await["mergeCustomers"]["id"].clone();
    answer(&app, "m6", "carl@example.com", 2, 10).await;
    let moved = cases_of(&app, &token, &c).await;
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["id"], d_case);
    assert_eq!(moved[0]["history"].as_array().expect("history").last().expect("event")["kind"], "ANSWER_LINKED");
    app.data(&admin, "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { id } }", json!({ "id": merge_id })).await;
    assert_eq!(cases_of(&app, &token, &d).await[0]["id"], d_case);
    answer(&app, "m7", "carl.d@example.com", 1, 5).await;
    let back = cases_of(&app, &token, &d).await;
    assert_eq!(back.len(), 1, "linked, not a second case: {back:?}");
    // And the survivor, who has no open case now, gets its own on its next poor answer.
    answer(&app, "m8", "carl@example.com", 1, 4).await;
    assert_eq!(cases_of(&app, &token, &c).await.len(), 1);
}

async fn stats_cut_root_causes_by_channel_and_stage(app: TestApp) {
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    let define = "mutation($i: DefineRootCauseInput!) { defineRootCause(input: $i) { code } }";
    for (code, label) in [("delivery", "Delivery"), ("billing", "Billing")] {
        app.data(&token, define, json!({ "i": { "code": code, "label": label } })).await;
    }
    // Four closed cases: EMAIL/PURCHASE delivery ×2, EMAIL/SUPPORT billing, WEB/SUPPORT delivery; one left open.
    for (i, (channel, stage, cause)) in [
        ("EMAIL", "PURCHASE", Some("delivery")),
        ("EMAIL", "PURCHASE", Some("delivery")),
        ("EMAIL", "SUPPORT", Some("billing")),
        ("WEB", "SUPPORT", Some("delivery")),
        ("WEB", "PURCHASE", None),
    ]
    .into_iter()
    .enumerate()
    {
        let (customer, _) =
            answer_on(&app, &format!("p{i}"), &format!("p{i}@example.com"), "NPS", 2, channel, stage).await;
        let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
        if let Some(cause) = cause {
            work_and_close(&app, &token, &id, cause).await;
        }
    }
    let since = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let pareto = "code label count share";
    let query = format!(
        "query($from: DateTime!) {{ feedbackCaseStats(from: $from) {{ opened rootCauses {{ {pareto} }}
            rootCausesByChannel {{ channel rootCauses {{ {pareto} }} }} rootCausesByStage {{ stage rootCauses {{ {pareto} }} }} }} }}"
    );
    let stats = app.data(&token, &query, json!({ "from": since })).await["feedbackCaseStats"].clone();
    assert_eq!(stats["opened"], 5);
    let cause = |code: &str, label: &str, count: u64, share: f64| json!({ "code": code, "label": label, "count": count, "share": share });
    // Overall: delivery 3 of 4, billing 1 of 4.
    assert_eq!(
        stats["rootCauses"],
        json!([cause("delivery", "Delivery", 3, 75.0), cause("billing", "Billing", 1, 25.0)])
    );
    // EMAIL: delivery 2 of 3, billing 1 of 3; WEB: delivery 1 of 1 (its open case has no cause).
    assert_eq!(
        stats["rootCausesByChannel"],
        json!([
            { "channel": "EMAIL", "rootCauses": [cause("delivery", "Delivery", 2, 200.0 / 3.0), cause("billing", "Billing", 1, 100.0 / 3.0)] },
            { "channel": "WEB", "rootCauses": [cause("delivery", "Delivery", 1, 100.0)] },
        ])
    );
    // PURCHASE: delivery 2 of 2; SUPPORT: billing 1 and delivery 1 of 2 (ties by code).
    assert_eq!(
        stats["rootCausesByStage"],
        json!([
            { "stage": "PURCHASE", "rootCauses": [cause("delivery", "Delivery", 2, 100.0)] },
            { "stage": "SUPPORT", "rootCauses": [cause("billing", "Billing", 1, 50.0), cause("delivery", "Delivery", 1, 50.0)] },
        ])
    );
}

/// `feedbackCaseChanged` over the WebSocket: every kind of change, after commit, narrowed by team and state, only
/// the caller's tenant, and only with `cx:read`.
async fn every_case_change_is_pushed_to_feedback_case_changed(app: TestApp) {
    use crate::subscriptions::{next_json, ready_socket, send};
    let token = cx(&app, "acme");
    define_rule(&app, &token, nps_rule(3600)).await;
    // A CSAT rule of another team with a one-second deadline, for the sweeper (every 100 ms here).
    let sla = json!({ "name": "csat-poor", "metric": "CSAT", "scoreMin": 1, "scoreMax": 2, "team": "sla",
        "firstContactWithinSeconds": 1, "resolutionWithinSeconds": 3600 });
    define_rule(&app, &token, sla).await;

    let mut socket = ready_socket(&app, &token).await;
    let fields = "caseId customerId kind state team at";
    for (id, filter) in [("care", "{ team: \"care\" }"), ("closed", "{ state: CLOSED }"), ("sla", "{ team: \"sla\" }")]
    {
        let more = if id == "closed" { "case { rootCause history { kind } }" } else { "" };
        let query = format!("subscription {{ feedbackCaseChanged(filter: {filter}) {{ {fields} {more} }} }}");
        send(&mut socket, json!({ "type": "subscribe", "id": id, "payload": { "query": query } })).await;
    }
    // Without cx:read the subscription is refused.
    let mut refused = ready_socket(&app, &app.token("acme", &["profiles:read"], "support")).await;
    let query = format!("subscription {{ feedbackCaseChanged {{ {fields} }} }}");
    send(&mut refused, json!({ "type": "subscribe", "id": "x", "payload": { "query": query.clone() } })).await;
    let answer_x = next_json(&mut refused).await.expect("an answer");
    let errors =
        if answer_x["type"] == "error" { answer_x["payload"].clone() } else { answer_x["payload"]["errors"].clone() };
    assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{answer_x}");
    // Another tenant's subscriber hears nothing of acme's cases.
    let mut other = ready_socket(&app, &cx(&app, "other")).await;
    send(&mut other, json!({ "type": "subscribe", "id": "o", "payload": { "query": query } })).await;

    // The subscription becomes active asynchronously: poor answers from new customers until the first arrives.
    let warm = async {
        for i in 0..40 {
            answer(&app, &format!("w{i}"), &format!("warm{i}@example.com"), 1, 5).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let first = tokio::select! {
        first = next_json(&mut socket) => first.expect("an event"),
        () = warm => panic!("no event within the writes"),
    };
    assert_eq!((first["type"].as_str(), first["id"].as_str()), (Some("next"), Some("care")), "{first}");
    assert_eq!(first["payload"]["data"]["feedbackCaseChanged"]["kind"], "CREATED", "{first}");

    // The lifecycle of one case: opened, linked, assigned, started, contacted, resolved, closed, re-surveyed.
    let (customer, _) = answer(&app, "s1", "sub@example.com", 2, 30).await;
    let id = cases_of(&app, &token, &customer).await[0]["id"].as_str().expect("id").to_owned();
    answer(&app, "s2", "sub@example.com", 3, 25).await;
    let (_, body) =
        act(&app, &token, "assignFeedbackCase", json!({ "id": id, "owner": "agent", "reason": "mine" })).await;
    assert!(body.get("errors").is_none(), "{body}");
    transition(&app, &token, &id, "IN_PROGRESS", "calling").await;
    let (_, body) = act(
        &app,
        &token,
        "recordFeedbackCaseContact",
        json!({ "id": id, "channel": "CALL_CENTER", "type": "SUPPORT_CALL" }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    transition(&app, &token, &id, "RESOLVED", "sorted").await;
    app.data(
        &token,
        "mutation($i: DefineRootCauseInput!) { defineRootCause(input: $i) { code } }",
        json!({ "i": { "code": "delivery", "label": "Delivery" } }),
    )
    .await;
    let close = json!({ "id": id, "rootCause": "delivery", "outcome": "RECOVERED", "reason": "done" });
    let (_, body) = act(&app, &token, "closeFeedbackCase", close).await;
    assert!(body.get("errors").is_none(), "{body}");
    answer(&app, "s3", "sub@example.com", 9, 1).await;
    // A CSAT case of team `sla`, breached by the sweeper.
    let mut csat = touchpoint("s4", json!([{ "kind": "EMAIL", "value": "sla@example.com" }]), "SURVEY_RESPONSE", 5);
    csat["feedback"] = json!({ "metric": "CSAT", "score": 1 });
    record(&app, json!([csat])).await;

    let expected = [
        ("care", "CREATED", "NEW"),
        ("care", "ANSWER_LINKED", "NEW"),
        ("care", "ASSIGNED", "ASSIGNED"),
        ("care", "STATUS_CHANGED", "IN_PROGRESS"),
        ("care", "CONTACTED", "IN_PROGRESS"),
        ("care", "STATUS_CHANGED", "RESOLVED"),
        ("care", "CLOSED", "CLOSED"),
        ("closed", "CLOSED", "CLOSED"),
        ("care", "RESURVEYED", "CLOSED"),
        ("sla", "CREATED", "NEW"),
        ("sla", "SLA_BREACHED", "ESCALATED"),
    ];
    let mut seen: Vec<(String, String, String)> = Vec::new();
    while !expected.iter().all(|(sub, kind, state)| seen.iter().any(|(s, k, st)| s == sub && k == kind && st == state))
    {
        let Some(message) = next_json(&mut socket).await else {
            panic!("the stream went quiet; seen {seen:?}, expected {expected:?}")
        };
        let sub = message["id"].as_str().unwrap_or_default().to_owned();
        let change = message["payload"]["data"]["feedbackCaseChanged"].clone();
        // Warm-up answers still arriving are other customers' cases.
        if sub == "care" && change["caseId"] != id.as_str() {
            continue;
        }
        match sub.as_str() {
            "care" => assert_eq!(change["team"], "care", "{change}"),
            "closed" => {
                assert_eq!(change["state"], "CLOSED", "{change}");
                // The case itself, read on demand, with its history.
                assert_eq!(change["case"]["rootCause"], "delivery", "{change}");
                assert!(change["case"]["history"].as_array().is_some_and(|h| h.iter().any(|e| e["kind"] == "CLOSED")));
            }
            _ => assert_eq!(change["team"], "sla", "{change}"),
        }
        if sub != "sla" {
            assert_eq!(
                (change["caseId"].as_str(), change["customerId"].as_str()),
                (Some(id.as_str()), Some(customer.as_str()))
            );
        }
        assert!(change["at"].is_string(), "{change}");
        seen.push((
            sub,
            change["kind"].as_str().unwrap_or_default().to_owned(),
            change["state"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    // In the order they committed.
    let care: Vec<&str> = seen.iter().filter(|(s, _, _)| s == "care").map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        care,
        [
            "CREATED",
            "ANSWER_LINKED",
            "ASSIGNED",
            "STATUS_CHANGED",
            "CONTACTED",
            "STATUS_CHANGED",
            "CLOSED",
            "RESURVEYED"
        ]
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), next_json(&mut other)).await;
    assert!(quiet.is_err() || quiet.as_ref().is_ok_and(Option::is_none), "another tenant heard {quiet:?}");
}

on_every_backend!(
    a_detractor_answer_opens_one_case_with_deadlines,
    the_lifecycle_needs_reasons_refuses_illegal_moves_and_keeps_its_history,
    concurrent_sweeps_mark_each_breach_once,
    the_follow_up_is_a_touchpoint_and_a_resurvey_is_linked,
    erasure_removes_cases_and_export_shows_them,
    another_tenant_cannot_see_or_touch_a_case,
    update_feedback_rules_is_all_or_nothing,
    customer_feedback_cases_are_paged_gated_logged_and_batched,
    cases_follow_a_merge_and_come_back_with_its_unmerge,
    stats_cut_root_causes_by_channel_and_stage,
);

/// The background sweeper runs with a short interval (set through the configuration).
mod background {
    use crate::common::{Backend, spawn_with};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let app = spawn_with(Backend::Sqlite, |c| c.cx_sweep_ms = 100).await.expect("sqlite always runs");
        super::the_sweeper_marks_a_breach_and_escalates_once(app).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if let Some(app) = spawn_with(Backend::Postgres, |c| c.cx_sweep_ms = 100).await {
            super::the_sweeper_marks_a_breach_and_escalates_once(app).await;
        }
    }

    /// `feedbackCaseChanged` needs the sweeper's breaches too, so it runs with the short interval.
    mod subscription {
        use crate::common::{Backend, spawn_with};

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            let app = spawn_with(Backend::Sqlite, |c| c.cx_sweep_ms = 100).await.expect("sqlite always runs");
            super::super::every_case_change_is_pushed_to_feedback_case_changed(app).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            if let Some(app) = spawn_with(Backend::Postgres, |c| c.cx_sweep_ms = 100).await {
                super::super::every_case_change_is_pushed_to_feedback_case_changed(app).await;
            }
        }
    }
}
