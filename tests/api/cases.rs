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

async fn define_rule(app: &TestApp, token: &str, input: Value) -> Value {
    let query = "mutation($i: FeedbackRuleInput!) { defineFeedbackRule(input: $i) {
        id name metric scoreMin scoreMax priority team firstContactWithinSeconds resolutionWithinSeconds enabled version } }";
    app.data(token, query, json!({ "i": input })).await["defineFeedbackRule"].clone()
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

    // Rule validation speaks of the field.
    let query = "mutation($i: FeedbackRuleInput!) { defineFeedbackRule(input: $i) { id } }";
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
        let (_, body) = app.gql(&token, query, json!({ "i": input })).await;
        assert_eq!(first_code(&body), "VALIDATION", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
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

on_every_backend!(
    a_detractor_answer_opens_one_case_with_deadlines,
    the_lifecycle_needs_reasons_refuses_illegal_moves_and_keeps_its_history,
    concurrent_sweeps_mark_each_breach_once,
    the_follow_up_is_a_touchpoint_and_a_resurvey_is_linked,
    erasure_removes_cases_and_export_shows_them,
    another_tenant_cannot_see_or_touch_a_case,
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
}
