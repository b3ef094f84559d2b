//! The Segment-compatible HTTP Tracking API: `/v1/{batch,track,identify,page,screen,group,alias}` with write
//! keys (HTTP Basic, key as user name). Valid events of a batch are stored even when others are rejected; a batch
//! in which an event failed for a reason a retry can fix answers 5xx, so SDKs send it again (safe: `messageId` is the
//! idempotency key).
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
    touchpoints::tracking::{EventOutcome, EventType, TrackingRequest, record_events},
};

/// Seconds an SDK is asked to wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "5";

/// Write keys: key → (tenant, source).
pub type WriteKeys = HashMap<String, (TenantId, String)>;

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "success": false, "error": crate::error::bound_message(message) }))).into_response()
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
    if let Some(limiter) = &state.tracking_limiter {
        // Each event of a batch counts, so a batch of 100 costs what 100 single calls cost.
        let events = if kind == "batch" { body.get("batch").and_then(Value::as_array).map_or(1, Vec::len) } else { 1 };
        if let Err(limited) = limiter.check(&key, u32::try_from(events).unwrap_or(u32::MAX)) {
            return rate_limited(limited.retry_after_secs());
        }
    }
    if state.services.db.is_down() {
        return failed(&ApiError::Unavailable("the database is unavailable, try again".into()));
    }
    let caller = Caller::for_write_key(tenant, &source);
    let request = TrackingRequest {
        source: &source,
        global_privacy_control: headers.get("sec-gpc").and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() == "1"),
        received_at: Utc::now(),
    };

    let services = &state.services;
    if kind == "batch" {
        let Some(events) = body.get("batch").and_then(Value::as_array) else {
            return refuse(StatusCode::BAD_REQUEST, "`batch` must be an array of events");
        };
        let mut events = events.clone();
        if let Some(shared) = body.get("context").filter(|c| c.is_object()) {
            for map in events.iter_mut().filter_map(Value::as_object_mut) {
                map.entry("context").or_insert_with(|| shared.clone());
            }
        }
        let outcomes = match record_events(&caller, services, &request, &events, None).await {
            Ok(outcomes) => outcomes,
            Err(err) => return failed(&err),
        };
        let mut summary = Summary::default();
        for ((index, event), outcome) in events.iter().enumerate().zip(outcomes) {
            summary.add(index, event, outcome);
        }
        return summary.into_response(events.len());
    }

    let Some(forced) = EventType::parse(&kind) else {
        return refuse(StatusCode::NOT_FOUND, "unknown tracking endpoint");
    };
    match record_events(&caller, services, &request, std::slice::from_ref(&body), Some(forced)).await {
        Ok(mut outcomes) => match outcomes.pop() {
            Some(EventOutcome::Rejected(err)) => failed(&err),
            Some(_) => (StatusCode::OK, Json(json!({ "success": true }))).into_response(),
            None => failed(&ApiError::internal(anyhow::anyhow!("no outcome for a tracked event"))),
        },
        Err(err) => failed(&err),
    }
}

/// 429 with `Retry-After`: the write key sent more events than its limit allows; nothing of the request was stored.
fn rate_limited(seconds: u64) -> Response {
    let body = json!({
        "success": false,
        "error": {
            "code": ErrorCode::RateLimited.as_str(),
            "message": format!("this write key sent more events than its rate limit allows; nothing was stored, retry in {seconds} s"),
            "retryAfterSeconds": seconds,
        },
    });
    (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, seconds.to_string())], Json(body)).into_response()
}

/// 4xx for events that will never be valid; 5xx for what a retry can fix (SDKs retry those), 503 with `Retry-After`.
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn with_status(status: StatusCode, body: Value) -> Response {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        (status, [(header::RETRY_AFTER, RETRY_AFTER_SECS)], Json(body)).into_response()
    } else {
        (status, Json(body)).into_response()
    }
}

/// A request whose one event, or whose whole batch, failed.
fn failed(err: &ApiError) -> Response {
    with_status(status_of(err.code()), json!({ "success": false, "error": error_json(err) }))
}

fn error_json(err: &ApiError) -> Value {
    if let ApiError::Internal(cause) = err {
        tracing::error!(error = ?cause, "tracking event failed");
    }
    let mut value = json!({ "code": err.code().as_str(), "message": crate::error::bound_message(&err.to_string()) });
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
    /// The error class of events that failed for a reason a retry can fix (`UNAVAILABLE` over `INTERNAL`).
    retry: Option<ErrorCode>,
}

impl Summary {
    fn add(&mut self, index: usize, event: &Value, outcome: EventOutcome) {
        match outcome {
            EventOutcome::Stored => self.stored += 1,
            EventOutcome::Duplicate => self.duplicates += 1,
            EventOutcome::Identified => self.identified += 1,
            EventOutcome::Suppressed => self.suppressed += 1,
            EventOutcome::Rejected(err) => {
                if err.is_retryable() && self.retry != Some(ErrorCode::Unavailable) {
                    self.retry = Some(err.code());
                }
                let mut entry = error_json(&err);
                entry["index"] = json!(index);
                if let Some(id) = event.get("messageId") {
                    entry["messageId"] = id.clone();
                }
                self.rejected.push(entry);
            }
        }
    }

    fn into_response(self, received: usize) -> Response {
        metrics::counter!("kontakt_tracking_events_total", "outcome" => "stored").increment(self.stored as u64);
        metrics::counter!("kontakt_tracking_events_total", "outcome" => "rejected")
            .increment(self.rejected.len() as u64);
        let mut body = json!({
            "success": true,
            "received": received,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "identified": self.identified,
            "suppressed": self.suppressed,
            "rejected": self.rejected,
        });
        match self.retry {
            // Events that will never be valid are reported and the batch is taken: a retry would not fix them.
            None => (StatusCode::OK, Json(body)).into_response(),
            // Answering 200 here would make SDKs drop the batch. The retry is safe: stored events come back as
            // duplicates (`messageId` is the idempotency key), identify calls link nothing new.
            Some(code) => {
                body["success"] = json!(false);
                body["error"] = json!({
                    "code": code.as_str(),
                    "message": "some events failed for a reason a retry can fix; send the batch again",
                });
                with_status(status_of(code), body)
            }
        }
    }
}
