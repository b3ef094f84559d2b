//! Subscriptions over WebSocket in both subprotocols, answering with the one actually spoken.
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};

use crate::common::TestApp;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(app: &TestApp, offered: &str) -> (Socket, String) {
    let mut request = format!("ws://{}/graphql/ws", app.addr).into_client_request().expect("request");
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(offered).expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("websocket");
    let chosen =
        response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (socket, chosen)
}

async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.ok()??.ok()?;
        match message {
            Message::Text(text) => return serde_json::from_str(&text).ok(),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
}

async fn send(socket: &mut Socket, value: Value) {
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

on_every_backend!(subscriptions_speak_both_protocols, a_subscription_needs_a_valid_token);
