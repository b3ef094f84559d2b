//! Masking of free-form personal data (DOMAIN.md rule 7) on every path that serves it: touchpoint `properties` and
//! feedback `verbatim` on the profile, the feed and the `touchpointRecorded` subscription, and custom trait values.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use crate::{
    common::TestApp,
    touchpoints::{grant, record, touchpoint},
};

const VERBATIM: &str = "Great shop! Mail me at ann@example.com or call +45 20 12 34 56, thanks";

fn properties() -> Value {
    json!({ "email": "ann@example.com", "note": "call +4520123456", "sku": "12345678", "price": 19.99 })
}

/// A page view with personal properties and a survey answer with a verbatim, for a consenting customer.
fn items(key: &str) -> Value {
    let who = json!([{ "kind": "EMAIL", "value": "ann@example.com" }]);
    let mut page = touchpoint(&format!("{key}-p"), who.clone(), "PAGE_VIEW", 2);
    page["properties"] = properties();
    let mut survey = touchpoint(&format!("{key}-s"), who, "SURVEY_RESPONSE", 1);
    survey["feedback"] = json!({ "metric": "NPS", "score": 4, "verbatim": VERBATIM });
    json!([page, survey])
}

fn masked_token(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], "personalization")
}

fn revealing_token(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "personalization")
}

/// What a caller without `pii:read` must (and must not) see of the page view's properties.
fn assert_masked_properties(props: &Value, path: &str) {
    let email = props["email"].as_str().unwrap_or_default();
    assert!(email.contains("***") && !email.contains("ann@"), "{path}: email masked: {props}");
    let note = props["note"].as_str().unwrap_or_default();
    assert!(note.starts_with("call ") && !note.contains("20123456"), "{path}: the phone in the note masked: {props}");
    assert_eq!(props["sku"], "12345678", "{path}: a SKU is not a phone number: {props}");
    assert_eq!(props["price"], 19.99, "{path}: a price is untouched: {props}");
}

fn assert_masked_verbatim(verbatim: &Value, path: &str) {
    let text = verbatim.as_str().unwrap_or_default();
    assert!(!text.contains("ann@example.com") && !text.contains("20 12 34 56"), "{path}: {text}");
    assert!(text.starts_with("Great shop!") && text.ends_with("thanks"), "{path}: the rest of the text stays: {text}");
}

/// The page view's properties and the survey's verbatim among served touchpoint nodes.
fn split(nodes: &[Value]) -> (Value, Value) {
    let props = nodes.iter().find(|n| !n["properties"].is_null()).expect("the page view")["properties"].clone();
    let verbatim = nodes.iter().find(|n| !n["feedback"].is_null()).expect("the survey")["feedback"]["verbatim"].clone();
    (props, verbatim)
}

async fn profile_nodes(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let query = "query($id: UUID!) { customer(id: $id) { touchpoints { edges { node { properties feedback { verbatim } } } } } }";
    let data = app.data(token, query, json!({ "id": id })).await;
    data["customer"]["touchpoints"]["edges"].as_array().expect("edges").iter().map(|e| e["node"].clone()).collect()
}

async fn feed_nodes(app: &TestApp, token: &str) -> Vec<Value> {
    let query = "{ touchpoints(first: 50) { edges { node { properties feedback { verbatim } } } } }";
    let data = app.data(token, query, json!({})).await;
    data["touchpoints"]["edges"].as_array().expect("edges").iter().map(|e| e["node"].clone()).collect()
}

/// Subscribes with `token`, then records touchpoints until the subscription delivers a page view and a survey.
async fn streamed_nodes(app: &TestApp, token: &str, round: &str) -> Vec<Value> {
    let mut request = format!("ws://{}/graphql/ws", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("websocket");
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await.expect("send");
    let _ack = socket.next().await;
    let subscribe = json!({ "type": "subscribe", "id": "t", "payload": {
        "query": "subscription { touchpointRecorded { properties feedback { verbatim } } }" } });
    socket.send(Message::Text(subscribe.to_string().into())).await.expect("send");

    let writer = async {
        for i in 0..60 {
            record(app, items(&format!("{round}-{i}"))).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let reader = async {
        let mut received: Vec<Value> = Vec::new();
        while !(received.iter().any(|n| !n["properties"].is_null())
            && received.iter().any(|n| !n["feedback"].is_null()))
        {
            let Some(Ok(Message::Text(text))) = socket.next().await else { break };
            let message: Value = serde_json::from_str(&text).expect("json");
            if message["type"] == "next" {
                received.push(message["payload"]["data"]["touchpointRecorded"].clone());
            }
        }
        received
    };
    tokio::select! {
        received = reader => received,
        () = writer => panic!("the stream delivered too little"),
    }
}

async fn free_form_personal_data_is_masked_on_every_path(app: TestApp) {
    let result = record(&app, items("m")).await;
    let id = result["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &id, "personalization", "GRANTED").await;
    let (masked, revealing) = (masked_token(&app), revealing_token(&app));

    let (props, verbatim) = split(&profile_nodes(&app, &masked, &id).await);
    assert_masked_properties(&props, "profile");
    assert_masked_verbatim(&verbatim, "profile");
    let (props, verbatim) = split(&profile_nodes(&app, &revealing, &id).await);
    assert_eq!((props, verbatim), (properties(), json!(VERBATIM)), "profile with pii:read");

    let (props, verbatim) = split(&feed_nodes(&app, &masked).await);
    assert_masked_properties(&props, "feed");
    assert_masked_verbatim(&verbatim, "feed");
    let (props, verbatim) = split(&feed_nodes(&app, &revealing).await);
    assert_eq!((props, verbatim), (properties(), json!(VERBATIM)), "feed with pii:read");

    let (props, verbatim) = split(&streamed_nodes(&app, &masked, "sm").await);
    assert_masked_properties(&props, "subscription");
    assert_masked_verbatim(&verbatim, "subscription");
    let (props, verbatim) = split(&streamed_nodes(&app, &revealing, "sr").await);
    assert_eq!((props, verbatim), (properties(), json!(VERBATIM)), "subscription with pii:read");
}

async fn custom_traits_declared_personal_or_holding_contact_data_are_masked(app: TestApp) {
    let rules = json!({ "defaultRule": "MOST_RECENT", "rules": [], "custom": [
        { "name": "nickname", "type": "STRING", "personal": true },
        { "name": "loyaltyTier", "type": "STRING" },
        { "name": "backupContact", "type": "STRING" },
        { "name": "visits", "type": "NUMBER" },
    ] });
    let declared = app
        .data(
            &app.admin(),
            "mutation($r: TraitRulesInput!) { updateTraitRules(rules: $r) { custom { name personal } } }",
            json!({ "r": rules }),
        )
        .await;
    assert_eq!(declared["updateTraitRules"]["custom"][0], json!({ "name": "nickname", "personal": true }));
    assert_eq!(declared["updateTraitRules"]["custom"][1], json!({ "name": "loyaltyTier", "personal": false }));
    let custom =
        json!({ "nickname": "Annie", "loyaltyTier": "gold", "backupContact": "bob@example.com", "visits": 12345678 });
    let ingested = app
        .data(
            &app.admin(),
            "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) { results { customerId } } }",
            json!({ "r": [{ "source": "crm", "sourceRecordId": "C-1", "identities": [{ "kind": "CRM_ID", "value": "C-1" }], "customTraits": custom }] }),
        )
        .await;
    let id = ingested["ingestCustomerRecords"]["results"][0]["customerId"].as_str().expect("id").to_owned();
    let query = "query($id: UUID!) { customer(id: $id) { traits { custom }
        nickname: traitHistory(name: \"nickname\") { value } contact: traitHistory(name: \"backupContact\") { value } } }";

    let data = app.data(&app.token("acme", &["profiles:read"], "support"), query, json!({ "id": id })).await;
    let shown = &data["customer"]["traits"]["custom"];
    assert_eq!(shown["nickname"], "A***", "declared personal: {shown}");
    assert_eq!(shown["backupContact"], "b***@example.com", "an e-mail address: {shown}");
    assert_eq!(shown["loyaltyTier"], "gold", "{shown}");
    assert_eq!(shown["visits"], 12345678, "{shown}");
    assert_eq!(data["customer"]["nickname"][0]["value"], "A***");
    assert_eq!(data["customer"]["contact"][0]["value"], "b***@example.com");

    let data = app.data(&app.admin(), query, json!({ "id": id })).await;
    assert_eq!(data["customer"]["traits"]["custom"], custom, "with pii:read");
    assert_eq!(data["customer"]["nickname"][0]["value"], "Annie");
}

on_every_backend!(
    free_form_personal_data_is_masked_on_every_path,
    custom_traits_declared_personal_or_holding_contact_data_are_masked,
);
