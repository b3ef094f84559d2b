//! Consent decisions over HTTP: which decisions apply to a purpose and channel and which one wins (the later one),
//! and a purpose written with its channel (`marketing:email`).
use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::{
    common::{TestApp, first_code},
    touchpoints::{reader, record, touchpoint, writer},
};

const RECORD_CONSENT: &str =
    "mutation($i: RecordConsentInput!) { recordConsent(input: $i) { purpose channel status } }";

async fn customer(app: &TestApp, email: &str) -> String {
    let result = record(
        app,
        json!([touchpoint(&format!("{email}-1"), json!([{ "kind": "EMAIL", "value": email }]), "PAGE_VIEW", 5)]),
    )
    .await;
    result["results"][0]["customerId"].as_str().expect("id").to_owned()
}

async fn decide(app: &TestApp, id: &str, purpose: &str, channel: Option<&str>, status: &str, hours_ago: i64) -> Value {
    let input = json!({ "customerId": id, "purpose": purpose, "channel": channel, "status": status, "source": "web",
                        "capturedAt": (Utc::now() - Duration::hours(hours_ago)).to_rfc3339() });
    app.data(&writer(app), RECORD_CONSENT, json!({ "i": input })).await["recordConsent"].clone()
}

/// `None` when the touchpoints are served to a caller acting for `purpose`, else the refusal's reason.
async fn refusal(app: &TestApp, id: &str, purpose: &str) -> Option<String> {
    let query = "query($id: UUID!) { customer(id: $id) { touchpoints { edges { cursor } } } }";
    let (_, body) = app.gql(&reader(app, purpose), query, json!({ "id": id })).await;
    if !body["data"]["customer"]["touchpoints"].is_null() {
        return None;
    }
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    Some(body["errors"][0]["extensions"]["reason"].as_str().unwrap_or("?").to_owned())
}

async fn a_later_purpose_wide_decision_wins_over_an_earlier_channel_decision(app: TestApp) {
    // The reported case: marketing granted for email an hour ago, then marketing withdrawn (every channel) now.
    let id = customer(&app, "withdrew@example.com").await;
    decide(&app, &id, "marketing", Some("email"), "GRANTED", 1).await;
    decide(&app, &id, "marketing", None, "WITHDRAWN", 0).await;
    assert_eq!(refusal(&app, &id, "marketing:email").await.as_deref(), Some("WITHDRAWN"));
    assert_eq!(refusal(&app, &id, "marketing:sms").await.as_deref(), Some("WITHDRAWN"));

    // The other way round: withdrawn for every channel, then granted for email: email only.
    let id = customer(&app, "regranted@example.com").await;
    decide(&app, &id, "marketing", None, "WITHDRAWN", 2).await;
    decide(&app, &id, "marketing", Some("email"), "GRANTED", 1).await;
    assert_eq!(refusal(&app, &id, "marketing:email").await, None);
    assert_eq!(refusal(&app, &id, "marketing:sms").await.as_deref(), Some("WITHDRAWN"));
    assert_eq!(refusal(&app, &id, "marketing").await.as_deref(), Some("WITHDRAWN"));
}

async fn a_purpose_written_with_its_channel_is_stored_as_purpose_and_channel(app: TestApp) {
    let id = customer(&app, "colon@example.com").await;
    let stored = decide(&app, &id, "marketing:email", None, "GRANTED", 0).await;
    assert_eq!(stored, json!({ "purpose": "marketing", "channel": "email", "status": "GRANTED" }));
    assert_eq!(refusal(&app, &id, "marketing:email").await, None, "the decision matches the purpose it names");
    assert_eq!(refusal(&app, &id, "marketing:sms").await.as_deref(), Some("NOT_GIVEN"));

    let agreeing = decide(&app, &id, "marketing:sms", Some("SMS"), "GRANTED", 0).await;
    assert_eq!(agreeing, json!({ "purpose": "marketing", "channel": "sms", "status": "GRANTED" }));

    for (purpose, channel, field) in [
        ("marketing:email", Some("sms"), "channel"),
        ("marketing:", None, "purpose"),
        (":email", None, "purpose"),
        // Purposes are a closed set (DOMAIN.md): a decision about anything else is refused, not stored.
        ("newsletter", None, "purpose"),
        ("support", None, "purpose"),
        ("marketting:email", None, "purpose"),
    ] {
        let input =
            json!({ "customerId": id, "purpose": purpose, "channel": channel, "status": "GRANTED", "source": "web" });
        let (_, body) = app.gql(&writer(&app), RECORD_CONSENT, json!({ "i": input })).await;
        assert_eq!(first_code(&body), "VALIDATION", "{purpose} {channel:?}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{purpose} {channel:?}: {body}");
    }
}

on_every_backend!(
    a_later_purpose_wide_decision_wins_over_an_earlier_channel_decision,
    a_purpose_written_with_its_channel_is_stored_as_purpose_and_channel,
);
