//! The HTTP edge: routes, middleware (request id, tracing, limits, metrics) and the GraphQL-over-HTTP rules.
mod graphiql;
mod graphql;
mod ops;
pub mod tracking;
mod ws;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::{HeaderName, Method, header},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    compression::CompressionLayer,
    cors::{AllowOrigin, CorsLayer},
    decompression::RequestDecompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    trace::TraceLayer,
};

use crate::{auth::KeyRing, config::Config, graphql::KontaktSchema, services::Services};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

pub use graphql::Documents;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub keys: Arc<KeyRing>,
    pub services: Services,
    pub schema: KontaktSchema,
    pub metrics: PrometheusHandle,
    /// Names this process in `/healthz` and in per-instance metrics.
    pub instance: Arc<str>,
    pub write_keys: Arc<tracking::WriteKeys>,
    /// Tracking events per write key (`KONTAKT_TRACKING_RATE_LIMIT_*`), when on.
    pub tracking_limiter: Option<Arc<crate::rate_limit::TrackingLimiter>>,
    /// Parsed documents by their text (`graphql::parsed`): a repeated query is not parsed again.
    pub documents: Documents,
}

/// CORS for browser frontends: only the configured origins, only what the API needs.
fn cors(config: &Config) -> CorsLayer {
    let origins = config.cors_origins.as_deref().unwrap_or_default();
    let allow = if origins.split(',').any(|o| o.trim() == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.split(',').map(str::trim).filter(|o| !o.is_empty()).filter_map(|o| o.parse().ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([REQUEST_ID_HEADER])
        .max_age(std::time::Duration::from_secs(600))
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let cors = cors(&state.config);
    let mut routes = Router::new()
        .route("/graphql", get(graphql::graphql_get).post(graphql::graphql_post))
        .route("/graphql/ws", get(ws::graphql_ws))
        .route("/v1/{kind}", axum::routing::post(tracking::track).layer(RequestDecompressionLayer::new()))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    // GraphiQL from the binary's own assets, when `KONTAKT_GRAPHIQL` is on (default: development only).
    if state.config.graphiql_enabled() {
        graphiql::prepare();
        routes = routes
            .route("/graphiql", get(graphiql::graphiql_page))
            .route("/graphiql/{version}/{file}", get(graphiql::graphiql_asset));
    }
    // With a separate metrics listener (`KONTAKT_METRICS_LISTEN`), `/metrics` is served there only.
    if state.config.metrics_listen.is_none() {
        routes = routes.route("/metrics", get(ops::metrics));
    }
    routes
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(record_http_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, header::COOKIE]))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let request_id =
                        req.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok()).unwrap_or("-");
                    // The path only: query strings can carry personal data in GET variables.
                    tracing::info_span!("request", request_id = %request_id, method = %req.method(), path = %req.uri().path())
                }))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
                .layer(CatchPanicLayer::new())
                .layer(cors)
                .layer(CompressionLayer::new()),
        )
        .with_state(state)
}

/// What the separate metrics listener (`KONTAKT_METRICS_LISTEN`) serves: `/metrics` and nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(CatchPanicLayer::new())
                .layer(CompressionLayer::new()),
        )
        .with_state(state)
}

async fn record_http_metrics(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("kontakt_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("kontakt_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
