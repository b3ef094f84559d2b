//! Subscriptions over WebSocket in both subprotocols, answering with the one actually spoken.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use crate::common::TestApp;

pub(crate) type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, offered: &str) -> (Socket, String) {
    let mut request = format!("ws://{}/graphql/ws", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(offered).expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("websocket");
    let chosen =
        response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (socket, chosen)
}

pub(crate) async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.ok()??.ok()?;
        match message {
            Message::Text(text) => return serde_json::from_str(&text).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

pub(crate) async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).await.expect("send");
}

/// Subscribes, then keeps writing customers until one arrives (the subscription becomes active asynchronously).
async fn round_trip(app: &TestApp, offered: &str, expected_protocol: &str) {
    let legacy = expected_protocol == "graphql-ws";
    let (mut socket, chosen) = connect(app, offered).await;
    assert_eq!(chosen, expected_protocol, "offered {offered}");
    let token = app.admin();
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
        .await;
    let ack = next_json(&mut socket).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let start = if legacy { "start" } else { "subscribe" };
    send(
        &mut socket,
        json!({ "type": start, "id": "1", "payload": { "query": "subscription { customerChanges { customerId created } }" } }),
    )
    .await;

    let round = uuid::Uuid::new_v4().simple().to_string();
    let writer = async {
        for i in 0..40 {
            app.upsert(&token, json!([{ "kind": "EMAIL", "value": format!("ws{i}-{round}@example.com") }]), None).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let reader = async {
        let message = next_json(&mut socket).await.expect("an event");
        let kind = if legacy { "data" } else { "next" };
        assert_eq!(message["type"], kind, "{message}");
        message["payload"]["data"]["customerChanges"].clone()
    };
    let event = tokio::select! {
        event = reader => event,
        () = writer => panic!("no event within the writes"),
    };
    assert_eq!(event["created"], true, "{event}");
    assert!(event["customerId"].is_string(), "{event}");
}

/// A `graphql-transport-ws` socket past `connection_ack`, for `token`.
pub(crate) async fn ready_socket(app: &TestApp, token: &str) -> Socket {
    let (mut socket, _) = connect(app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }))
        .await;
    let ack = next_json(&mut socket).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

/// Every write path announces what it changed on `customerChanges`, from the one after-commit step: upsert,
/// record ingest, a touchpoint that creates a customer, a merge, its unmerge, a consent decision, an erasure.
async fn every_write_path_announces_customer_changes(app: TestApp) {
    let officer = app.token(
        "acme",
        &["profiles:read", "profiles:write", "touchpoints:write", "consent:write", "pii:read", "privacy:admin"],
        "privacy_admin",
    );
    let mut socket = ready_socket(&app, &officer).await;
    let query = "subscription { customerChanges { customerId kind mergedInto } }";
    send(&mut socket, json!({ "type": "subscribe", "id": "c", "payload": { "query": query } })).await;
    // The subscription becomes active asynchronously: write until the first event arrives.
    let warm = async {
        for i in 0..40 {
            app.upsert(&officer, json!([{ "kind": "EMAIL", "value": format!("warm{i}@example.com") }]), None).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    tokio::select! {
        first = next_json(&mut socket) => assert_eq!(first.expect("an event")["type"], "next"),
        () = warm => panic!("no event within the writes"),
    }

    let records =
        "mutation($r: [CustomerRecordInput!]!) { ingestCustomerRecords(records: $r) { results { customerId } } }";
    let record = app
        .data(
            &officer,
            records,
            json!({ "r": [{ "source": "crm", "sourceRecordId": "r-1",
            "identities": [{ "kind": "EMAIL", "value": "rec@example.com" }] }] }),
        )
        .await;
    let from_record = record["ingestCustomerRecords"]["results"][0]["customerId"].as_str().expect("id").to_owned();
    let tp = crate::touchpoints::record(
        &app,
        json!([crate::touchpoints::touchpoint(
            "sub-1",
            json!([{ "kind": "EMAIL", "value": "tp@example.com" }]),
            "PAGE_VIEW",
            1
        )]),
    )
    .await;
    let from_touchpoint = tp["results"][0]["customerId"].as_str().expect("id").to_owned();
    let merge = app
        .data(
            &officer,
            "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m) { id } }",
            json!({ "s": from_record, "m": from_touchpoint }),
        )
        .await["mergeCustomers"]["id"]
        .as_str()
        .expect("merge id")
        .to_owned();
    app.data(&officer, "mutation($id: UUID!) { unmergeCustomer(mergeId: $id) { id } }", json!({ "id": merge })).await;
    crate::touchpoints::grant(&app, &from_record, "personalization", "GRANTED").await;
    app.data(&officer, "mutation($id: UUID!) { eraseCustomer(id: $id) { id } }", json!({ "id": from_touchpoint }))
        .await;

    let expected = [
        (from_record.as_str(), "CREATED"),
        (from_touchpoint.as_str(), "CREATED"),
        (from_record.as_str(), "MERGED"),
        (from_touchpoint.as_str(), "MERGED_AWAY"),
        (from_record.as_str(), "UNMERGED"),
        (from_touchpoint.as_str(), "UNMERGED"),
        (from_record.as_str(), "CONSENT_CHANGED"),
        (from_touchpoint.as_str(), "ERASED"),
    ];
    let mut seen: Vec<(String, String)> = Vec::new();
    while !expected.iter().all(|(id, kind)| seen.iter().any(|(i, k)| i == id && k == kind)) {
        let Some(message) = next_json(&mut socket).await else {
            panic!("the stream ended or went quiet; seen {seen:?}, expected {expected:?}")
        };
        let change = &message["payload"]["data"]["customerChanges"];
        if change["kind"] == "MERGED_AWAY" {
            assert_eq!(change["mergedInto"], from_record.as_str(), "{change}");
        }
        seen.push((
            change["customerId"].as_str().unwrap_or_default().to_owned(),
            change["kind"].as_str().unwrap_or_default().to_owned(),
        ));
    }
}

/// Queries and mutations sent over the socket run through the same limits and the same null rule as HTTP.
async fn the_socket_applies_the_same_limits_and_nulls(app: TestApp) {
    let token = app.admin();
    let mut socket = ready_socket(&app, &token).await;
    let aliases: String = (0..40).map(|i| format!("a{i}: viewer {{ tenant }} ")).collect();
    send(&mut socket, json!({ "type": "subscribe", "id": "a", "payload": { "query": format!("{{ {aliases} }}") } }))
        .await;
    let answer = next_json(&mut socket).await.expect("an answer");
    let errors =
        if answer["type"] == "error" { answer["payload"].clone() } else { answer["payload"]["errors"].clone() };
    assert!(errors[0]["message"].as_str().unwrap_or_default().contains("aliases"), "{answer}");
    assert_eq!(errors[0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED", "{answer}");

    let customer = app.upsert(&token, json!([{ "kind": "EMAIL", "value": "ws-null@example.com" }]), None).await;
    let no_history = app.token("acme", &["profiles:read"], "support");
    let mut socket = ready_socket(&app, &no_history).await;
    let query = "query($id: UUID!) { customer(id: $id) { id touchpoints(first: 5) { edges { node { id } } } } }";
    send(
        &mut socket,
        json!({ "type": "subscribe", "id": "n", "payload": { "query": query, "variables": { "id": customer } } }),
    )
    .await;
    let answer = next_json(&mut socket).await.expect("an answer");
    assert_eq!(answer["type"], "next", "{answer}");
    let served = answer["payload"]["data"]["customer"].as_object().expect("customer").clone();
    assert!(served.contains_key("touchpoints") && served["touchpoints"].is_null(), "{answer}");
    assert_eq!(answer["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{answer}");
}

async fn subscriptions_speak_both_protocols(app: TestApp) {
    round_trip(&app, "graphql-transport-ws", "graphql-transport-ws").await;
    round_trip(&app, "graphql-ws", "graphql-ws").await;
    // Legacy offered first (as Python's gql does): the answer must name the protocol actually spoken.
    round_trip(&app, "graphql-ws, graphql-transport-ws", "graphql-ws").await;
}

async fn a_subscription_needs_a_valid_token(app: TestApp) {
    let (mut socket, _) = connect(&app, "graphql-transport-ws").await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": "Bearer nope" } })).await;
    // graphql-transport-ws closes the socket (4403) instead of acknowledging.
    let answer = next_json(&mut socket).await;
    assert!(answer.as_ref().is_none_or(|m| m["type"] != "connection_ack"), "{answer:?}");
}

on_every_backend!(
    subscriptions_speak_both_protocols,
    a_subscription_needs_a_valid_token,
    every_write_path_announces_customer_changes,
    the_socket_applies_the_same_limits_and_nulls
);
