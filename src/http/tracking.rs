//! The Segment-compatible HTTP Tracking API: `/v1/{batch,track,identify,page,screen,group,alias}` with write
//! keys (HTTP Basic, key as user name). Valid events of a batch are stored even when others are rejected.
use std::collections::HashMap;

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine;
use chrono::Utc;
use serde_json::{Value, json};

use super::AppState;
use crate::{
    auth::{Caller, TenantId},
    error::{ApiError, ErrorCode},
    profiles::customers,
    touchpoints::{
        ItemOutcome, record_touchpoints,
        tracking::{EventType, TrackedEvent, TrackingRequest, translate},
    },
};

/// Write keys: key → (tenant, source).
pub type WriteKeys = HashMap<String, (TenantId, String)>;

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "success": false, "error": message }))).into_response()
}

fn write_key(headers: &HeaderMap, body: &Value) -> Option<String> {
    let from_header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .map(|creds| creds.split_once(':').map(|(user, _)| user.to_owned()).unwrap_or(creds));
    from_header.filter(|k| !k.is_empty()).or_else(|| body.get("writeKey").and_then(Value::as_str).map(str::to_owned))
}

/// `POST /v1/{kind}`: one event, or a batch for `batch`.
pub async fn track(
    State(state): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => return refuse(StatusCode::BAD_REQUEST, &format!("the request body is not valid JSON: {err}")),
    };
    let Some(key) = write_key(&headers, &body) else {
        return refuse(StatusCode::UNAUTHORIZED, "send the write key as the HTTP Basic user name");
    };
    let Some((tenant, source)) = state.write_keys.get(&key).cloned() else {
        return refuse(StatusCode::UNAUTHORIZED, "unknown write key");
    };
    let caller = Caller::for_write_key(tenant, &source);
    let request = TrackingRequest {
        source: &source,
        global_privacy_control: headers.get("sec-gpc").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "1"),
        received_at: Utc::now(),
    };

    if kind == "batch" {
        let Some(events) = body.get("batch").and_then(Value::as_array) else {
            return refuse(StatusCode::BAD_REQUEST, "`batch` must be an array of events");
        };
        let shared_context = body.get("context").filter(|c| c.is_object());
        let mut summary = Summary::default();
        for (index, event) in events.iter().enumerate() {
            let mut event = event.clone();
            if let (Some(shared), Some(map)) = (shared_context, event.as_object_mut()) {
                map.entry("context").or_insert_with(|| shared.clone());
            }
            let outcome = ingest(&state, &caller, &request, &event, None).await;
            summary.add(index, &event, outcome);
        }
        return (StatusCode::OK, Json(summary.into_json(events.len()))).into_response();
    }

    let Some(forced) = EventType::parse(&kind) else {
        return refuse(StatusCode::NOT_FOUND, "unknown tracking endpoint");
    };
    match ingest(&state, &caller, &request, &body, Some(forced)).await {
        Ok(_) => (StatusCode::OK, Json(json!({ "success": true }))).into_response(),
        Err(err) => {
            // 4xx for events that will never be valid; 5xx for what a retry can fix (SDKs retry those).
            let status = match err.code() {
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, Json(json!({ "success": false, "error": error_json(&err) }))).into_response()
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Stored {
    Created,
    Duplicate,
    Identified,
    Suppressed,
}

async fn ingest(
    state: &AppState,
    caller: &Caller,
    request: &TrackingRequest<'_>,
    event: &Value,
    forced: Option<EventType>,
) -> Result<Stored, ApiError> {
    let services = &state.services;
    match translate(event, forced, request, &services.settings)? {
        TrackedEvent::Identify(input) => Ok(match customers::identify(caller, services, input).await? {
            Some(_) => Stored::Identified,
            None => Stored::Suppressed,
        }),
        TrackedEvent::Touchpoint(input) => {
            let mut outcomes = record_touchpoints(caller, services, vec![*input]).await?;
            match outcomes.pop() {
                Some(ItemOutcome::Created(_)) => Ok(Stored::Created),
                Some(ItemOutcome::Duplicate(_)) => Ok(Stored::Duplicate),
                Some(ItemOutcome::Rejected(err)) => Err(err),
                Some(ItemOutcome::Suppressed) => Ok(Stored::Suppressed),
                None => Err(ApiError::internal(anyhow::anyhow!("no outcome for a tracked event"))),
            }
        }
    }
}

fn error_json(err: &ApiError) -> Value {
    if let ApiError::Internal(cause) = err {
        tracing::error!(error = ?cause, "tracking event failed");
    }
    let mut value = json!({ "code": err.code().as_str(), "message": err.to_string() });
    if let ApiError::Validation { field, .. } = err {
        value["field"] = json!(field);
    }
    value
}

#[derive(Default)]
struct Summary {
    stored: usize,
    duplicates: usize,
    identified: usize,
    suppressed: usize,
    rejected: Vec<Value>,
}

impl Summary {
    fn add(&mut self, index: usize, event: &Value, outcome: Result<Stored, ApiError>) {
        match outcome {
            Ok(Stored::Created) => self.stored += 1,
            Ok(Stored::Duplicate) => self.duplicates += 1,
            Ok(Stored::Identified) => self.identified += 1,
            Ok(Stored::Suppressed) => self.suppressed += 1,
            Err(err) => {
                let mut entry = error_json(&err);
                entry["index"] = json!(index);
                if let Some(id) = event.get("messageId") {
                    entry["messageId"] = id.clone();
                }
                self.rejected.push(entry);
            }
        }
    }

    fn into_json(self, received: usize) -> Value {
        metrics::counter!("kontakt_tracking_events_total", "outcome" => "stored").increment(self.stored as u64);
        metrics::counter!("kontakt_tracking_events_total", "outcome" => "rejected")
            .increment(self.rejected.len() as u64);
        // `success` stays true: the batch was taken, and retrying it would not make a rejected event valid.
        json!({
            "success": true,
            "received": received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "identified": self.identified,
            "suppressed": self.suppressed,
            "rejected": self.rejected,
        })
    }
}
