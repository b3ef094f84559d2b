//! GraphQL subscriptions over WebSocket (`graphql-transport-ws` and legacy `graphql-ws`); the token travels in
//! `connection_init`.
use std::str::FromStr;

use async_graphql::{ErrorExtensions, http::WebSocketProtocols};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::{
    extract::{State, WebSocketUpgrade},
    http::{HeaderMap, header},
    response::Response,
};

use super::AppState;
use crate::{error::ApiError, graphql::RequestContext};

pub async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    let AppState { schema, keys, services, .. } = state;
    // Answer with the subprotocol async-graphql will actually speak (the first supported one the client offered,
    // the same rule `GraphQLProtocol` uses), not the one axum would prefer.
    let spoken = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|offered| offered.split(',').find_map(|p| WebSocketProtocols::from_str(p.trim()).ok()))
        .map(|p| p.sec_websocket_protocol())
        .unwrap_or("graphql-transport-ws");
    upgrade.protocols([spoken]).on_upgrade(move |socket| {
        GraphQLWebSocket::new(socket, schema, protocol)
            .on_connection_init(move |payload| async move {
                let token = token_from_init(&payload).ok_or_else(|| {
                    ApiError::Unauthenticated("connection_init needs an Authorization bearer token".into()).extend()
                })?;
                let caller = keys.verify(&token).map_err(|e| e.extend())?;
                Ok(RequestContext { caller, services }.into_data())
            })
            .serve()
    })
}

/// Accepts the shapes clients use: `{"Authorization": "Bearer …"}`, `{"headers": {…}}` or `{"token": "…"}`.
fn token_from_init(payload: &serde_json::Value) -> Option<String> {
    let header = |obj: &serde_json::Value| {
        ["Authorization", "authorization"]
            .iter()
            .find_map(|k| obj.get(k).and_then(|v| v.as_str()))
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::to_owned)
    };
    header(payload)
        .or_else(|| payload.get("headers").and_then(header))
        .or_else(|| payload.get("token").and_then(|v| v.as_str()).map(str::to_owned))
}
