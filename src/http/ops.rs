//! Operational endpoints: liveness, readiness and Prometheus metrics.
use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
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
    let database = match state.services.db.is_down() {
        true => Err(anyhow::anyhow!("the database refuses connections (probe)")),
        false => state.services.db.ping().await,
    };
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

/// Prometheus text exposition; with `KONTAKT_METRICS_TOKEN` set, only for `Authorization: Bearer <that token>`.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &state.config.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        if !given.is_some_and(|given| same_secret(given.as_bytes(), expected.expose().as_bytes())) {
            let mut response =
                (StatusCode::UNAUTHORIZED, "/metrics needs Authorization: Bearer <KONTAKT_METRICS_TOKEN>\n")
                    .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"kontakt-metrics\""));
            return response;
        }
    }
    if let Some((size, idle)) = state.services.db.pool_state() {
        metrics::gauge!("kontakt_db_pool_connections").set(size as f64);
        metrics::gauge!("kontakt_db_pool_idle_connections").set(idle as f64);
        metrics::gauge!("kontakt_db_pool_in_use_connections").set(size.saturating_sub(idle as u32) as f64);
    }
    metrics::gauge!("kontakt_db_statements", "instance" => state.instance.to_string())
        .set(state.services.db.statement_count() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

/// Compares two secrets in constant time: their SHA-256 digests are compared byte by byte without an early exit, so
/// neither where they first differ nor how long the expected one is shows in the time taken.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use aws_lc_rs::digest::{SHA256, digest};
    let (given, expected) = (digest(&SHA256, given), digest(&SHA256, expected));
    let difference = given.as_ref().iter().zip(expected.as_ref()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(super::same_secret(b"metrics-token-1234", b"metrics-token-1234"));
        assert!(!super::same_secret(b"metrics-token-1235", b"metrics-token-1234"));
        assert!(!super::same_secret(b"metrics-token-123", b"metrics-token-1234"));
        assert!(!super::same_secret(b"", b"metrics-token-1234"));
    }
}
