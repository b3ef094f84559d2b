//! Operational endpoints: liveness, readiness and Prometheus metrics.
use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::AppState;

/// The process is alive.
pub async fn healthz(State(state): State<AppState>) -> Response {
    Json(json!({ "status": "ok", "instance": state.instance.as_ref() })).into_response()
}

/// The database answers, and Redis too when it is configured.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.services.db.ping().await;
    let cache = state.services.cache.ping().await;
    let word = |r: &anyhow::Result<()>| if r.is_ok() { "ok" } else { "unavailable" };
    let ready = database.is_ok() && cache.is_ok();
    if let Err(err) = &database {
        tracing::warn!(error = %err, "readiness: database unavailable");
    }
    if let Err(err) = &cache {
        tracing::warn!(error = %err, "readiness: cache unavailable");
    }
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": word(&database),
        "cache": { "kind": state.services.cache.kind(), "status": word(&cache) },
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some((size, idle)) = state.services.db.pool_state() {
        metrics::gauge!("kontakt_db_pool_connections").set(size as f64);
        metrics::gauge!("kontakt_db_pool_idle_connections").set(idle as f64);
        metrics::gauge!("kontakt_db_pool_in_use_connections").set(size.saturating_sub(idle as u32) as f64);
    }
    metrics::gauge!("kontakt_db_statements", "instance" => state.instance.to_string())
        .set(state.services.db.statement_count() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}
