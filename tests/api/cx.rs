//! CX metrics over HTTP: which answers count (analytics consent, restriction, erasure, the tenant's basis), the
//! figures with their intervals, suppression below the minimum, buckets and changes, the link to purchases and
//! touchpoints, and a customer's own answers served only with consent.
use chrono::{Datelike, Duration, Utc};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{grant, record},
};

fn analyst(app: &TestApp) -> String {
    app.token("acme", &["cx:read", "cx:write"], "analytics")
}

fn officer(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read", "privacy:admin", "pii:read"], "privacy_admin")
}

fn today() -> String {
    Utc::now().date_naive().to_string()
}

/// A survey answer of the customer with this email, `days_ago` days ago, on `channel`.
fn answer(email: &str, key: &str, metric: &str, score: i64, channel: &str, days_ago: i64) -> Value {
    json!({
        "identities": [{ "kind": "EMAIL", "value": email }], "channel": channel, "type": "SURVEY_RESPONSE",
        "source": "survey", "occurredAt": (Utc::now() - Duration::days(days_ago) - Duration::minutes(1)).to_rfc3339(),
        "idempotencyKey": key, "feedback": { "metric": metric, "score": score, "verbatim": format!("write to {email}") },
    })
}

/// Records one answer and answers the customer's id.
async fn answered(app: &TestApp, email: &str, metric: &str, score: i64, channel: &str, days_ago: i64) -> String {
    let key = format!("{email}-{metric}-{score}-{days_ago}-{}", uuid::Uuid::new_v4().simple());
    let result = record(app, json!([answer(email, &key, metric, score, channel, days_ago)])).await;
    assert_eq!(result["results"][0]["status"], "CREATED", "{result}");
    result["results"][0]["customerId"].as_str().expect("id").to_owned()
}

/// A customer with analytics consent who answered.
async fn consenting(app: &TestApp, email: &str, metric: &str, score: i64, channel: &str, days_ago: i64) -> String {
    let id = answered(app, email, metric, score, channel, days_ago).await;
    grant(app, &id, "analytics", "GRANTED").await;
    id
}

const METRICS: &str = "query($m: FeedbackMetric!, $w: CxWindowInput!, $g: [CxDimension!], $b: CxBucket) {
    cxMetrics(metric: $m, window: $w, groupBy: $g, bucket: $b) {
      minAnswers
      cells { bucketStart bucketEnd channel answers categories { category answers } value mean share
              interval { low high level method } marginOfError suppressed lowConfidence
              change { previous delta pValue significant } }
      total { answers value suppressed interval { low high method } change { delta } } } }";

async fn metrics(app: &TestApp, metric: &str, from: &str, group: Value, bucket: Value) -> Value {
    let vars = json!({ "m": metric, "w": { "from": from, "to": today() }, "g": group, "b": bucket });
    app.data(&analyst(app), METRICS, vars).await["cxMetrics"].clone()
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

/// The adjusted-Wald interval, computed here from its definition (Rocks 2016).
fn adjusted_wald(promoters: f64, detractors: f64, n: f64) -> (f64, f64) {
    let n = n + 3.0;
    let (p, d) = ((promoters + 0.75) / n, (detractors + 0.75) / n);
    let margin = 1.959963984540054 * ((p + d - (p - d).powi(2)) / n).sqrt() * 100.0;
    ((p - d) * 100.0 - margin, (p - d) * 100.0 + margin)
}

async fn answers_count_only_while_their_ground_holds(app: TestApp) {
    // Six consenting answers on e-mail: 3 promoters, 1 passive, 2 detractors. One more without consent on the web.
    let mut ids = Vec::new();
    for (i, score) in [10, 10, 9, 8, 3, 0].into_iter().enumerate() {
        ids.push(consenting(&app, &format!("cx{i}@example.com"), "NPS", score, "EMAIL", 0).await);
    }
    let silent = answered(&app, "silent@example.com", "NPS", 10, "WEB", 0).await;

    let report = metrics(&app, "NPS", &today(), json!(["CHANNEL"]), Value::Null).await;
    let cells = report["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 1, "only e-mail has counted answers: {report}");
    let email = &cells[0];
    assert_eq!(email["channel"], "EMAIL");
    assert_eq!(email["answers"], 6);
    assert_eq!(
        email["categories"],
        json!([{ "category": "PROMOTER", "answers": 3 }, { "category": "PASSIVE", "answers": 1 },
               { "category": "DETRACTOR", "answers": 2 }])
    );
    assert!(close(&email["value"], 100.0 * (3.0 - 2.0) / 6.0), "{email}");
    assert!(close(&email["share"], 50.0), "{email}");
    let (low, high) = adjusted_wald(3.0, 2.0, 6.0);
    assert_eq!(email["interval"]["method"], "ADJUSTED_WALD");
    assert!(close(&email["interval"]["low"], low.max(-100.0)) && close(&email["interval"]["high"], high), "{email}");
    assert!(close(&email["marginOfError"], (high - low) / 2.0), "{email}");
    assert_eq!(email["suppressed"], false);
    assert_eq!(email["lowConfidence"], true, "six answers cannot know an NPS to ±10 points");

    // A withdrawal takes a promoter out at once; a grant brings the silent customer in; both in the same read.
    grant(&app, &ids[0], "analytics", "WITHDRAWN").await;
    grant(&app, &silent, "analytics", "GRANTED").await;
    let report = metrics(&app, "NPS", &today(), json!([]), Value::Null).await;
    assert_eq!(report["total"]["answers"], 6, "{report}");
    assert!(close(&report["total"]["value"], 100.0 * (3.0 - 2.0) / 6.0), "{report}");
    let by_channel = metrics(&app, "NPS", &today(), json!(["CHANNEL"]), Value::Null).await;
    let answers: Vec<(Value, Value)> = by_channel["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| (c["channel"].clone(), c["answers"].clone()))
        .collect();
    assert_eq!(answers, vec![(json!("EMAIL"), json!(5)), (json!("WEB"), json!(1))]);

    // A restricted customer never counts; lifting the restriction counts them again.
    let officer = officer(&app);
    let restrict = "mutation($id: UUID!) { restrictProcessing(customerId: $id) }";
    assert_eq!(app.data(&officer, restrict, json!({ "id": ids[4] })).await["restrictProcessing"], true);
    assert_eq!(metrics(&app, "NPS", &today(), json!([]), Value::Null).await["total"]["answers"], 5);
    let lift = "mutation($id: UUID!) { liftRestriction(customerId: $id) }";
    assert_eq!(app.data(&officer, lift, json!({ "id": ids[4] })).await["liftRestriction"], true);
    assert_eq!(metrics(&app, "NPS", &today(), json!([]), Value::Null).await["total"]["answers"], 6);

    // Erasure takes the person's answers out of the rollups too.
    let erase = "mutation($id: UUID!) { eraseCustomer(id: $id) { rows } }";
    app.data(&officer, erase, json!({ "id": ids[5] })).await;
    let report = metrics(&app, "NPS", &today(), json!([]), Value::Null).await;
    assert_eq!(report["total"]["answers"], 5, "{report}");
    assert!(close(&report["total"]["value"], 100.0 * (3.0 - 1.0) / 5.0), "{report}");
    let db = app.db().await;
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM cx_answers".to_owned(),
        ))
        .await
        .expect("count")
        .expect("row");
    let stored: i64 = row.try_get("", "n").expect("n");
    assert_eq!(stored, 6, "the erased person's answer is gone; the others stay (counted or not)");
}

async fn a_cell_below_the_minimum_shows_its_counts_but_no_figures(app: TestApp) {
    for (i, score) in [5, 4, 2].into_iter().enumerate() {
        consenting(&app, &format!("few{i}@example.com"), "CSAT", score, "STORE", 0).await;
    }
    let report = metrics(&app, "CSAT", &today(), json!([]), Value::Null).await;
    assert_eq!(report["minAnswers"], 5);
    let total = &report["total"];
    assert_eq!(total["answers"], 3);
    assert_eq!(total["suppressed"], true);
    assert!(total["value"].is_null() && total["interval"].is_null(), "{total}");

    // The tenant lowers its minimum: the same cell now shows CSAT = share of 4–5 with a Wilson interval.
    let update = "mutation { updateCxSettings(input: { basis: ANALYTICS_CONSENT, minAnswers: 3 }) { basis minAnswers lowConfidenceMargin } }";
    let settings = app.data(&analyst(&app), update, json!({})).await;
    assert_eq!(
        settings["updateCxSettings"],
        json!({ "basis": "ANALYTICS_CONSENT", "minAnswers": 3, "lowConfidenceMargin": 10.0 })
    );
    let report = metrics(&app, "CSAT", &today(), json!([]), Value::Null).await;
    assert!(close(&report["total"]["value"], 200.0 / 3.0), "{report}");
    assert_eq!(report["total"]["interval"]["method"], "WILSON");
    let (low, high) = (
        report["total"]["interval"]["low"].as_f64().expect("low"),
        report["total"]["interval"]["high"].as_f64().expect("high"),
    );
    assert!(low > 0.0 && low < 200.0 / 3.0 && high > 200.0 / 3.0 && high <= 100.0, "{report}");

    // Bad settings are refused by name, and the settings need cx:write.
    let (_, body) = app
        .gql(
            &analyst(&app),
            "mutation { updateCxSettings(input: { basis: ANALYTICS_CONSENT, minAnswers: 0 }) { minAnswers } }",
            json!({}),
        )
        .await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
    let reader = app.token("acme", &["cx:read"], "analytics");
    let (_, body) = app
        .gql(&reader, "mutation { updateCxSettings(input: { basis: LEGITIMATE_INTEREST }) { minAnswers } }", json!({}))
        .await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
}

async fn weekly_buckets_show_the_change_against_the_week_before(app: TestApp) {
    // Last week: 10 answers, 2 promoters 6 detractors (NPS −40). This week: 10 answers, 8 promoters 1 detractor (+70).
    let this_monday = {
        let d = Utc::now().date_naive();
        d - Duration::days(d.weekday().num_days_from_monday() as i64)
    };
    let days_since_monday = (Utc::now().date_naive() - this_monday).num_days();
    let last_week = days_since_monday + 3;
    for (i, score) in [10, 9, 8, 8, 2, 2, 2, 2, 2, 2].into_iter().enumerate() {
        consenting(&app, &format!("w1-{i}@example.com"), "NPS", score, "WEB", last_week).await;
    }
    for (i, score) in [10, 10, 10, 10, 9, 9, 9, 9, 7, 0].into_iter().enumerate() {
        consenting(&app, &format!("w2-{i}@example.com"), "NPS", score, "WEB", 0).await;
    }
    let from = (this_monday - Duration::days(7)).to_string();
    let report = metrics(&app, "NPS", &from, json!([]), json!("WEEK")).await;
    let cells = report["cells"].as_array().expect("cells");
    assert_eq!(cells.len(), 2, "{report}");
    assert_eq!(cells[0]["bucketStart"], from);
    assert_eq!(cells[0]["bucketEnd"], (this_monday - Duration::days(1)).to_string());
    assert_eq!(cells[1]["bucketStart"], this_monday.to_string());
    assert!(close(&cells[0]["value"], -40.0) && close(&cells[1]["value"], 70.0), "{report}");
    assert!(cells[0]["change"].is_null(), "nothing the week before: {report}");
    let change = &cells[1]["change"];
    assert!(close(&change["previous"], -40.0) && close(&change["delta"], 110.0), "{change}");
    assert!(change["pValue"].as_f64().expect("p") < 0.05 && change["significant"] == true, "{change}");
    // The whole window against the window of the same length before it (empty): no change to report.
    assert_eq!(report["total"]["answers"], 20);
    assert!(report["total"]["change"].is_null());
}

async fn a_customer_s_own_answers_are_served_only_with_consent_and_masked(app: TestApp) {
    let id = answered(&app, "mine@example.com", "NPS", 4, "EMAIL", 2).await;
    answered(&app, "mine@example.com", "NPS", 9, "EMAIL", 1).await;
    answered(&app, "mine@example.com", "CES", 6, "CALL_CENTER", 0).await;
    const FEEDBACK: &str = "query($id: UUID!) { customer(id: $id) { feedback {
        nps { score category previousScore trend channel verbatim touchpointType }
        csat { score } ces { score category trend } } } }";
    let reader = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let (_, body) = app.gql(&reader, FEEDBACK, json!({ "id": id })).await;
    assert!(body["data"]["customer"]["feedback"].is_null(), "{body}");
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");

    grant(&app, &id, "personalization", "GRANTED").await;
    let feedback = app.data(&reader, FEEDBACK, json!({ "id": id })).await["customer"]["feedback"].clone();
    assert_eq!(
        feedback,
        json!({
            "nps": { "score": 9, "category": "PROMOTER", "previousScore": 4, "trend": "UP", "channel": "EMAIL",
                     "verbatim": "write to m***@example.com", "touchpointType": "SURVEY_RESPONSE" },
            "csat": null,
            "ces": { "score": 6, "category": "EASY", "trend": "FIRST" },
        }),
        "the e-mail in the verbatim is masked without pii:read"
    );
    // The analytics-consent rule does not apply here: these answers are not counted, yet served to the person's
    // personalization with consent.
    assert_eq!(
        metrics(&app, "NPS", &(Utc::now().date_naive() - Duration::days(3)).to_string(), json!([]), Value::Null).await
            ["total"]["answers"],
        0
    );
}

async fn answers_link_to_later_purchases_and_to_the_touchpoints_before_them(app: TestApp) {
    // Five promoters who bought 10 days after answering, five detractors who did not; each detractor had a
    // support call on the call center before answering.
    for i in 0..5 {
        let email = format!("pro{i}@example.com");
        consenting(&app, &email, "NPS", 10, "EMAIL", 40).await;
        let mut buy = answer(&email, &format!("buy-{i}"), "NPS", 0, "WEB", 30);
        buy["type"] = json!("PURCHASE");
        buy.as_object_mut().expect("object").remove("feedback");
        buy["value"] = json!(50.0);
        buy["currency"] = json!("EUR");
        assert_eq!(record(&app, json!([buy])).await["results"][0]["status"], "CREATED");
    }
    for i in 0..5 {
        let email = format!("det{i}@example.com");
        let mut call = answer(&email, &format!("call-{i}"), "NPS", 0, "CALL_CENTER", 41);
        call["type"] = json!("SUPPORT_CALL");
        call.as_object_mut().expect("object").remove("feedback");
        let call = record(&app, json!([call])).await;
        let call_id = call["results"][0]["touchpointId"].as_str().map(str::to_owned);
        let mut survey = answer(&email, &format!("det-s{i}"), "NPS", 2, "CALL_CENTER", 40);
        if let Some(call_id) = call_id {
            survey["feedback"]["aboutTouchpointId"] = json!(call_id);
        }
        let result = record(&app, json!([survey])).await;
        assert_eq!(result["results"][0]["status"], "CREATED", "{result}");
        grant(&app, result["results"][0]["customerId"].as_str().expect("id"), "analytics", "GRANTED").await;
    }
    let window = json!({ "from": (Utc::now().date_naive() - Duration::days(45)).to_string(), "to": today() });
    const RETENTION: &str = "query($w: CxWindowInput!) { cxRetention(window: $w, horizonDays: 20) {
        horizonDays immatureAnswers rows { category answers customers repeatPurchases repeatPurchaseRate
        repeatPurchaseInterval { low high method } revenuePerAnswer { currency amount } suppressed } } }";
    let retention = app.data(&analyst(&app), RETENTION, json!({ "w": window })).await["cxRetention"].clone();
    let rows = retention["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{retention}");
    assert_eq!(rows[0]["category"], "PROMOTER");
    assert_eq!((rows[0]["answers"].clone(), rows[0]["repeatPurchases"].clone()), (json!(5), json!(5)));
    assert!(close(&rows[0]["repeatPurchaseRate"], 1.0), "{retention}");
    assert_eq!(rows[0]["revenuePerAnswer"], json!([{ "currency": "EUR", "amount": 50.0 }]));
    assert_eq!(rows[1]["category"], "DETRACTOR");
    assert!(close(&rows[1]["repeatPurchaseRate"], 0.0), "{retention}");
    assert_eq!(rows[1]["repeatPurchaseInterval"]["method"], "WILSON");

    // Grouped by the type of the touchpoint rated, the detractors' answers sit under SUPPORT_CALL.
    const BY_TYPE: &str = "query($w: CxWindowInput!) { cxMetrics(metric: NPS, window: $w, groupBy: [TOUCHPOINT_TYPE]) {
        cells { touchpointType answers value } } }";
    let by_type = app.data(&analyst(&app), BY_TYPE, json!({ "w": window })).await["cxMetrics"]["cells"].clone();
    assert_eq!(
        by_type,
        json!([{ "touchpointType": "SUPPORT_CALL", "answers": 5, "value": -100.0 },
               { "touchpointType": "SURVEY_RESPONSE", "answers": 5, "value": 100.0 }])
    );

    const EFFECT: &str = "query($w: CxWindowInput!) { touchpointEffect(metric: NPS, window: $w) {
        touchpointType channel with { answers value } without { answers value } difference { delta significant } } }";
    let effect = app.data(&analyst(&app), EFFECT, json!({ "w": window })).await["touchpointEffect"].clone();
    let call = effect
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["touchpointType"] == "SUPPORT_CALL")
        .cloned()
        .expect("support calls");
    assert_eq!(call["channel"], "CALL_CENTER");
    assert_eq!((call["with"]["answers"].clone(), call["without"]["answers"].clone()), (json!(5), json!(5)));
    assert!(close(&call["difference"]["delta"], -200.0), "{call}");

    // An answer naming another customer's touchpoint is refused by name.
    let mut wrong = answer("pro0@example.com", "wrong-about", "NPS", 5, "EMAIL", 0);
    wrong["feedback"]["aboutTouchpointId"] = json!(uuid::Uuid::now_v7());
    let result = record(&app, json!([wrong])).await;
    assert_eq!(result["results"][0]["status"], "REJECTED", "{result}");
}

async fn the_tenant_s_basis_decides_who_counts_and_metrics_need_cx_read(app: TestApp) {
    let never_asked = answered(&app, "na@example.com", "CES", 7, "WEB", 0).await;
    let objected = answered(&app, "ob@example.com", "CES", 1, "WEB", 0).await;
    grant(&app, &objected, "analytics", "DENIED").await;
    assert_eq!(metrics(&app, "CES", &today(), json!([]), Value::Null).await["total"]["answers"], 0);
    // A declared legitimate interest counts everyone who did not object, recounted at once.
    let update = "mutation { updateCxSettings(input: { basis: LEGITIMATE_INTEREST, minAnswers: 1 }) { basis } }";
    app.data(&analyst(&app), update, json!({})).await;
    let report = metrics(&app, "CES", &today(), json!([]), Value::Null).await;
    assert_eq!(report["total"]["answers"], 1, "{report}");
    assert!(close(&report["total"]["value"], 7.0), "{report}");
    assert_eq!(
        app.data(&analyst(&app), "{ cxSettings { basis minAnswers } }", json!({})).await["cxSettings"],
        json!({ "basis": "LEGITIMATE_INTEREST", "minAnswers": 1 })
    );
    let _ = never_asked;

    let no_scope = app.token("acme", &["profiles:read", "touchpoints:read"], "analytics");
    let vars = json!({ "m": "CES", "w": { "from": today(), "to": today() } });
    let (_, body) = app.gql(&no_scope, METRICS, vars).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "{body}");
    // Another tenant sees none of it.
    let other = app.token("globex", &["cx:read"], "analytics");
    let (_, body) = app.gql(&other, METRICS, json!({ "m": "CES", "w": { "from": today(), "to": today() } })).await;
    assert_eq!(body["data"]["cxMetrics"]["total"]["answers"], 0, "{body}");
    // A window backwards is refused by name.
    let (_, body) =
        app.gql(&analyst(&app), METRICS, json!({ "m": "CES", "w": { "from": today(), "to": "2020-01-01" } })).await;
    assert_eq!(first_code(&body), "VALIDATION", "{body}");
}

async fn a_merge_and_its_unmerge_recount_both_sides(app: TestApp) {
    let a = consenting(&app, "ma@example.com", "NPS", 10, "EMAIL", 0).await;
    let b = answered(&app, "mb@example.com", "NPS", 0, "EMAIL", 0).await;
    grant(&app, &b, "analytics", "DENIED").await;
    assert_eq!(metrics(&app, "NPS", &today(), json!([]), Value::Null).await["total"]["answers"], 1);
    // Merged, the person's analytics consent is the most restrictive of the two: denied. Neither answer counts.
    let officer = app.token("acme", &["profiles:read", "profiles:write", "touchpoints:read", "pii:read"], "support");
    let merge = "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }";
    let merged = app.data(&officer, merge, json!({ "s": a, "m": b })).await["mergeCustomers"]["id"].clone();
    assert_eq!(metrics(&app, "NPS", &today(), json!([]), Value::Null).await["total"]["answers"], 0);
    // Undone, each side counts by its own consent again.
    let unmerge = "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { undoneAt } }";
    app.data(&officer, unmerge, json!({ "id": merged })).await;
    let report = metrics(&app, "NPS", &today(), json!([]), Value::Null).await;
    assert_eq!(report["total"]["answers"], 1, "{report}");
    assert_eq!(report["total"]["value"], json!(null), "one answer is below the minimum of 5");
}

async fn an_expired_consent_stops_counting_on_the_next_read(app: TestApp) {
    let id = answered(&app, "exp@example.com", "CSAT", 5, "WEB", 0).await;
    let expires = (Utc::now() + Duration::seconds(2)).to_rfc3339();
    app.data(
        &crate::touchpoints::writer(&app),
        "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { id } }",
        json!({ "i": { "customerId": id, "purpose": "analytics", "status": "GRANTED", "source": "web",
                       "expiresAt": expires } }),
    )
    .await;
    assert_eq!(metrics(&app, "CSAT", &today(), json!([]), Value::Null).await["total"]["answers"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // No sweeper has run (the rollup still holds it): the read itself leaves the expired answer out.
    assert_eq!(metrics(&app, "CSAT", &today(), json!([]), Value::Null).await["total"]["answers"], 0);
}

async fn answers_stored_before_cx_metrics_are_backfilled_and_counted(app: TestApp) {
    // Three answers in one rollup cell (one multi-row upsert adds them up), one that does not count.
    for i in 1..=3 {
        consenting(&app, &format!("old{i}@example.com"), "NPS", 9, "WEB", 0).await;
    }
    answered(&app, "old4@example.com", "NPS", 2, "WEB", 0).await;
    // As if stored before CX metrics existed: the touchpoints are there, their answers and rollups are not.
    let db = app.db().await;
    use sea_orm::ConnectionTrait;
    db.execute_unprepared("DELETE FROM cx_answers").await.expect("delete answers");
    db.execute_unprepared("DELETE FROM cx_rollups").await.expect("delete rollups");
    assert_eq!(metrics(&app, "NPS", &today(), json!([]), Value::Null).await["total"]["answers"], 0);
    assert_eq!(kontakt::cx::answers::backfill(&db).await.expect("backfill"), 4);
    // Counted by the rule: the consenting customers' answers only; a second run finds nothing left.
    let report = metrics(&app, "NPS", &today(), json!(["CHANNEL"]), Value::Null).await;
    assert_eq!(
        report["cells"],
        json!([{ "bucketStart": null, "bucketEnd": null, "channel": "WEB", "answers": 3,
        "categories": [{ "category": "PROMOTER", "answers": 3 }, { "category": "PASSIVE", "answers": 0 },
                       { "category": "DETRACTOR", "answers": 0 }],
        "value": null, "mean": null, "share": null, "interval": null, "marginOfError": null, "suppressed": true,
        "lowConfidence": false, "change": null }]),
        "{report}"
    );
    assert_eq!(kontakt::cx::answers::backfill(&db).await.expect("backfill"), 0);
}

async fn every_metric_per_channel_and_week_equals_a_hand_computation(app: TestApp) {
    let update = "mutation { updateCxSettings(input: { basis: ANALYTICS_CONSENT, minAnswers: 1 }) { minAnswers } }";
    app.data(&analyst(&app), update, json!({})).await;
    let this_monday = {
        let d = Utc::now().date_naive();
        d - Duration::days(d.weekday().num_days_from_monday() as i64)
    };
    let days_since_monday = (Utc::now().date_naive() - this_monday).num_days();
    // (metric, score, channel, week: 0 this week, 1 last week)
    let answers: Vec<(&str, i64, &str, i64)> = vec![
        ("NPS", 10, "EMAIL", 0),
        ("NPS", 9, "EMAIL", 0),
        ("NPS", 3, "EMAIL", 0),
        ("NPS", 7, "WEB", 0),
        ("NPS", 0, "WEB", 1),
        ("NPS", 10, "WEB", 1),
        ("NPS", 6, "EMAIL", 1),
        ("CSAT", 5, "STORE", 0),
        ("CSAT", 4, "STORE", 0),
        ("CSAT", 2, "STORE", 0),
        ("CSAT", 3, "WEB", 1),
        ("CSAT", 5, "WEB", 1),
        ("CES", 7, "CALL_CENTER", 0),
        ("CES", 2, "CALL_CENTER", 0),
        ("CES", 6, "CALL_CENTER", 1),
        ("CES", 4, "WEB", 0),
    ];
    for (i, (metric, score, channel, week)) in answers.iter().enumerate() {
        let days_ago = if *week == 0 { 0 } else { days_since_monday + 3 };
        consenting(&app, &format!("hand{i}@example.com"), metric, *score, channel, days_ago).await;
    }
    let from = (this_monday - Duration::days(7)).to_string();
    for metric in ["NPS", "CSAT", "CES"] {
        let report = metrics(&app, metric, &from, json!(["CHANNEL"]), json!("WEEK")).await;
        let mut got: Vec<(String, String, u64, f64)> = report["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .map(|c| {
                let week = c["bucketStart"].as_str().expect("bucket").to_owned();
                let channel = c["channel"].as_str().expect("channel").to_owned();
                (week, channel, c["answers"].as_u64().expect("n"), c["value"].as_f64().expect("value"))
            })
            .collect();
        got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        // The same cells computed here from the answers recorded above.
        let mut cells: std::collections::BTreeMap<(String, String), Vec<i64>> = Default::default();
        for (m, score, channel, week) in &answers {
            if *m == metric {
                let start = if *week == 0 { this_monday } else { this_monday - Duration::days(7) };
                cells.entry((start.to_string(), channel.to_string())).or_default().push(*score);
            }
        }
        let want: Vec<(String, String, u64, f64)> = cells
            .into_iter()
            .map(|((week, channel), scores)| {
                let n = scores.len() as f64;
                let share = |f: &dyn Fn(i64) -> bool| scores.iter().filter(|s| f(**s)).count() as f64 / n * 100.0;
                let value = match metric {
                    "NPS" => share(&|s| s >= 9) - share(&|s| s <= 6),
                    "CSAT" => share(&|s| s >= 4),
                    _ => scores.iter().sum::<i64>() as f64 / n,
                };
                (week, channel, scores.len() as u64, value)
            })
            .collect();
        assert_eq!(got.len(), want.len(), "{metric}: {report}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!((&g.0, &g.1, g.2), (&w.0, &w.1, w.2), "{metric}");
            assert!((g.3 - w.3).abs() < 1e-9, "{metric} {g:?} != {w:?}");
        }
    }
}

on_every_backend!(
    every_metric_per_channel_and_week_equals_a_hand_computation,
    answers_stored_before_cx_metrics_are_backfilled_and_counted,
    a_merge_and_its_unmerge_recount_both_sides,
    an_expired_consent_stops_counting_on_the_next_read,
    answers_count_only_while_their_ground_holds,
    a_cell_below_the_minimum_shows_its_counts_but_no_figures,
    weekly_buckets_show_the_change_against_the_week_before,
    a_customer_s_own_answers_are_served_only_with_consent_and_masked,
    answers_link_to_later_purchases_and_to_the_touchpoints_before_them,
    the_tenant_s_basis_decides_who_counts_and_metrics_need_cx_read,
);
