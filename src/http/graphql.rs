//! `/graphql` over HTTP, by the GraphQL-over-HTTP spec: content negotiation, status codes, GET rules, batching.
use std::{collections::HashMap, sync::Arc};

use async_graphql::{ErrorExtensions, ServerError, Variables, parser::types::ExecutableDocument};
use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::{
    auth::Caller,
    error::{ApiError, ErrorCode},
    graphql::{OperationKind, RequestContext, operation_kind},
};

/// The two response media types the spec defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    fn content_type(self) -> &'static str {
        match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        }
    }
}

/// A well-formed GraphQL-over-HTTP request.
struct Params {
    /// The document; absent when an automatic persisted query names it by hash only.
    query: Option<String>,
    /// `extensions.persistedQuery.sha256Hash` (automatic persisted queries), lower-case hex.
    persisted: Option<String>,
    operation_name: Option<String>,
    variables: Option<Map<String, Value>>,
}

pub async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    // A browser opening /graphql gets GraphiQL (when it is served); everything else follows the spec.
    if state.config.graphiql_enabled() && wants_html(&headers) && !query.contains_key("query") {
        let mut page = super::graphiql::page();
        page.headers_mut().insert(header::VARY, HeaderValue::from_static("accept"));
        return page;
    }
    let media = match negotiate(&headers) {
        Ok(media) => media,
        Err(refusal) => return refusal.into_response(),
    };
    let caller = match authenticate(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response.into_media(media),
    };
    let params = match params_from_query(&query) {
        Ok(params) => params,
        Err(message) => return request_error(media, StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message),
    };
    execute(&state, caller, params, media, Method::GET).await.into_response_with(media)
}

pub async fn graphql_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let media = match negotiate(&headers) {
        Ok(media) => media,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(message) = check_content_type(&headers) {
        return request_error(media, StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::BadRequest, &message);
    }
    let caller = match authenticate(&state, &headers) {
        Ok(caller) => caller,
        Err(response) => return response.into_media(media),
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(err) => {
            let message = format!("the request body is not valid JSON: {err}");
            return request_error(media, StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message);
        }
    };
    match body {
        Value::Array(items) => execute_batch(&state, caller, items, media).await,
        other => match params_from_json(other) {
            Ok(params) => execute(&state, caller, params, media, Method::POST).await.into_response_with(media),
            Err(message) => request_error(media, StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message),
        },
    }
}

async fn execute_batch(state: &AppState, caller: Caller, items: Vec<Value>, media: MediaType) -> Response {
    let max = state.config.max_batch;
    if max == 0 {
        return request_error(
            media,
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "batched requests are not enabled",
        );
    }
    if items.is_empty() || items.len() > max {
        let message = format!("a batch holds 1 to {max} operations");
        return request_error(media, StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message);
    }
    let mut results = Vec::with_capacity(items.len());
    let mut retry_after = None;
    for item in items {
        let outcome = match params_from_json(item) {
            Ok(params) => execute(state, caller.clone(), params, media, Method::POST).await,
            Err(message) => Outcome::request_error(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, &message),
        };
        retry_after = retry_after.max(outcome.retry_after);
        results.push(outcome.body);
    }
    // Each operation of a batch counts toward the rate limit; the batch keeps 200 (the others ran), and says when
    // the limited ones may be sent again.
    let mut response = json_response(media, StatusCode::OK, &results);
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The result of one operation: its JSON body and the status it would have on its own.
struct Outcome {
    status: StatusCode,
    body: Body,
    allow_post_only: bool,
    /// Seconds for `Retry-After` (a rate-limited operation).
    retry_after: Option<u64>,
}

impl Outcome {
    fn request_error(status: StatusCode, code: ErrorCode, message: &str) -> Self {
        Outcome { status, body: Body::Json(error_body(code, message)), allow_post_only: false, retry_after: None }
    }

    fn into_response_with(self, media: MediaType) -> Response {
        let mut response = json_response(media, self.status, &self.body);
        if self.allow_post_only {
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

async fn execute(state: &AppState, caller: Caller, params: Params, media: MediaType, method: Method) -> Outcome {
    let query = match state.documents.resolve(params.query, params.persisted) {
        Ok(query) => query,
        Err((code, message)) => {
            count_error(code);
            return Outcome::request_error(request_error_status(media), code, message);
        }
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = &params.operation_name {
        request = request.operation_name(name.clone());
    }
    if let Some(variables) = params.variables {
        request = request.variables(Variables::from_json(Value::Object(variables)));
    }

    // The limits are the execution path's (`graphql::guard`, which inspects the document whether it was parsed
    // here or taken from the cache); here only what the kind of operation means for HTTP.
    let parsed = state.documents.parse(&mut request);
    let operation = match parsed {
        Ok(doc) => operation_kind(doc, params.operation_name.as_deref()),
        Err(err) => {
            count_error(ErrorCode::GraphqlParseFailed);
            return Outcome {
                status: request_error_status(media),
                body: Body::Json(json!({ "errors": [tagged(err, ErrorCode::GraphqlParseFailed)] })),
                allow_post_only: false,
                retry_after: None,
            };
        }
    };
    if method == Method::GET && operation == Some(OperationKind::Mutation) {
        return Outcome {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: Body::Json(error_body(ErrorCode::BadRequest, "mutations are sent with POST")),
            allow_post_only: true,
            retry_after: None,
        };
    }
    if operation == Some(OperationKind::Subscription) {
        let message = "subscriptions are served over WebSocket at /graphql/ws";
        return Outcome::request_error(request_error_status(media), ErrorCode::GraphqlValidationFailed, message);
    }

    // Limits, the timeout, error codes, nulls for failed fields and metrics: the schema's `Guard` extension, the
    // one execution path every transport shares.
    request.data = RequestContext { caller, services: state.services.clone() }.into_data();
    let response = state.schema.execute(request).await;

    // Errors before execution (validation, limits) carry no path and leave no data: a request error.
    let request_failed = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let has_code = |code: ErrorCode| {
        response.errors.iter().any(|e| {
            e.extensions.as_ref().and_then(|x| x.get("code")) == Some(&async_graphql::Value::from(code.as_str()))
        })
    };
    let timed_out = request_failed && has_code(ErrorCode::Unavailable);
    // Refused by the rate limit (in `graphql::guard`, before any work): 429 with the wait it names.
    let retry_after = if request_failed && has_code(ErrorCode::RateLimited) {
        let seconds = response.errors.iter().find_map(|e| match e.extensions.as_ref()?.get("retryAfterSeconds")? {
            async_graphql::Value::Number(n) => n.as_u64(),
            _ => None,
        });
        Some(seconds.unwrap_or(1).max(1))
    } else {
        None
    };
    let errors: Vec<Value> = response.errors.into_iter().map(|e| tagged(e, ErrorCode::Validation)).collect();

    // Serialized straight from the executor's values (no intermediate JSON tree).
    let body =
        Body::Executed { data: (!request_failed).then_some(response.data), errors, extensions: response.extensions };
    let status = if retry_after.is_some() {
        StatusCode::TOO_MANY_REQUESTS
    } else if timed_out {
        StatusCode::SERVICE_UNAVAILABLE
    } else if request_failed {
        request_error_status(media)
    } else {
        StatusCode::OK
    };
    Outcome { status, body, allow_post_only: false, retry_after }
}

/// Documents already parsed, by their text: clients send the same few queries again and again, and parsing is
/// a good part of a small read's cost. Only documents that parsed and are at most `MAX_CACHED_BYTES` are kept (at
/// most `MAX_CACHED` of them), so the cache holds at most a few megabytes. Every limit is still checked on every
/// operation by the execution path (`graphql::guard::parse_query` inspects the document it is given).
///
/// It also holds automatic persisted queries (Apollo's protocol: `extensions.persistedQuery { version: 1,
/// sha256Hash }`): a client sends the hash alone, and the query with its hash once when told
/// `PERSISTED_QUERY_NOT_FOUND`. Kept per instance (at most `MAX_PERSISTED`), so behind several instances a client
/// may be asked once per instance.
#[derive(Clone)]
pub struct Documents {
    parsed: moka::sync::Cache<String, Arc<ExecutableDocument>>,
    persisted: moka::sync::Cache<String, Arc<str>>,
}

impl Documents {
    const MAX_CACHED: u64 = 1_000;
    const MAX_CACHED_BYTES: usize = 16 * 1024;

    const MAX_PERSISTED: u64 = 10_000;

    pub fn new() -> Self {
        Documents {
            parsed: moka::sync::Cache::new(Self::MAX_CACHED),
            persisted: moka::sync::Cache::new(Self::MAX_PERSISTED),
        }
    }

    /// The query text of a request: as sent (and remembered under its hash when one is given and matches), or the
    /// persisted query the hash names.
    fn resolve(&self, query: Option<String>, persisted: Option<String>) -> Result<String, (ErrorCode, &'static str)> {
        match (query, persisted) {
            (Some(query), None) => Ok(query),
            (Some(query), Some(hash)) => {
                if sha256_hex(&query) != hash {
                    return Err((
                        ErrorCode::BadRequest,
                        "`extensions.persistedQuery.sha256Hash` is not the SHA-256 of `query`",
                    ));
                }
                if query.len() <= Self::MAX_CACHED_BYTES {
                    self.persisted.insert(hash, Arc::from(query.as_str()));
                }
                Ok(query)
            }
            (None, Some(hash)) => self
                .persisted
                .get(&hash)
                .map(|query| query.to_string())
                .ok_or((ErrorCode::PersistedQueryNotFound, "PersistedQueryNotFound")),
            (None, None) => Err((ErrorCode::BadRequest, "`query` is required")),
        }
    }

    /// The request's document, parsed now or taken from the cache, and set on the request so the executor does not
    /// parse it again.
    fn parse<'r>(&self, request: &'r mut async_graphql::Request) -> Result<&'r ExecutableDocument, ServerError> {
        let cacheable = request.query.len() <= Self::MAX_CACHED_BYTES;
        if cacheable && let Some(doc) = self.parsed.get(&request.query) {
            request.set_parsed_query(doc.as_ref().clone());
        } else {
            let query = cacheable.then(|| request.query.clone());
            let doc = request.parsed_query()?;
            if let Some(query) = query {
                self.parsed.insert(query, Arc::new(doc.clone()));
            }
        }
        request.parsed_query()
    }
}

impl Default for Documents {
    fn default() -> Self {
        Self::new()
    }
}

/// The JSON body of one operation's answer.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Body {
    Json(Value),
    Executed {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<async_graphql::Value>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        errors: Vec<Value>,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        extensions: std::collections::BTreeMap<String, async_graphql::Value>,
    },
}

/// Serialises a GraphQL error, giving it `code` when the schema layer did not.
fn tagged(mut error: ServerError, default: ErrorCode) -> Value {
    if error.message.len() > crate::error::MAX_MESSAGE_BYTES {
        error.message = crate::error::bound_message(&error.message).into_owned();
    }
    let has_code = error.extensions.as_ref().and_then(|e| e.get("code")).is_some();
    if !has_code {
        error.extensions.get_or_insert_with(Default::default).set("code", default.as_str());
    }
    serde_json::to_value(&error).unwrap_or_else(|_| error_body_entry(ErrorCode::Internal, "internal error"))
}

fn count_error(code: ErrorCode) {
    metrics::counter!("kontakt_graphql_errors_total", "code" => code.as_str()).increment(1);
}

/// application/graphql-response+json says "this request failed" with 400; application/json keeps 200.
fn request_error_status(media: MediaType) -> StatusCode {
    match media {
        MediaType::GraphqlResponseJson => StatusCode::BAD_REQUEST,
        MediaType::Json => StatusCode::OK,
    }
}

fn error_body_entry(code: ErrorCode, message: &str) -> Value {
    json!({ "message": crate::error::bound_message(message), "extensions": { "code": code.as_str() } })
}

fn error_body(code: ErrorCode, message: &str) -> Value {
    json!({ "errors": [error_body_entry(code, message)] })
}

fn json_response(media: MediaType, status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes =
        serde_json::to_vec(body).unwrap_or_else(|_| b"{\"errors\":[{\"message\":\"internal error\"}]}".to_vec());
    (status, [(header::CONTENT_TYPE, media.content_type())], bytes).into_response()
}

fn request_error(media: MediaType, status: StatusCode, code: ErrorCode, message: &str) -> Response {
    count_error(code);
    json_response(media, status, &error_body(code, message))
}

/// An authentication failure, rendered once the media type is known.
struct Unauthenticated(ApiError);

impl Unauthenticated {
    fn into_media(self, media: MediaType) -> Response {
        count_error(ErrorCode::Unauthenticated);
        let mut response = json_response(media, StatusCode::UNAUTHORIZED, &json!({ "errors": [self.0.extend()] }));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"kontakt\""));
        response
    }
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, Unauthenticated> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Unauthenticated(ApiError::Unauthenticated("an Authorization: Bearer token is required".into()))
    })?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Unauthenticated(ApiError::Unauthenticated("the Authorization header must be `Bearer <token>`".into()))
        })?;
    let request_id = headers.get(super::REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    state.keys.verify(token).map(|caller| caller.with_request_id(request_id)).map_err(Unauthenticated)
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"))
}

/// Picks the response media type from `Accept` (by q-value); no `Accept` means application/json.
fn negotiate(headers: &HeaderMap) -> Result<MediaType, NotAcceptable> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(MediaType::Json);
    };
    if accept.trim().is_empty() {
        return Ok(MediaType::Json);
    }
    let mut ranges: Vec<(f32, usize, MediaType)> = Vec::new();
    for (position, range) in accept.split(',').enumerate() {
        let mut parts = range.split(';').map(str::trim);
        let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut charset_ok = true;
        for param in parts {
            if let Some((name, value)) = param.split_once('=') {
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "charset" => charset_ok = value.eq_ignore_ascii_case("utf-8"),
                    _ => {}
                }
            }
        }
        let media = match essence.as_str() {
            "application/graphql-response+json" => MediaType::GraphqlResponseJson,
            "application/json" | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if q > 0.0 && charset_ok {
            ranges.push((q, position, media));
        }
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    match ranges.first() {
        Some((_, _, media)) => Ok(*media),
        None => Err(NotAcceptable),
    }
}

/// The client accepts none of the media types this endpoint answers in.
struct NotAcceptable;

impl IntoResponse for NotAcceptable {
    fn into_response(self) -> Response {
        let message = "this endpoint answers application/graphql-response+json or application/json";
        json_response(MediaType::Json, StatusCode::NOT_ACCEPTABLE, &error_body(ErrorCode::BadRequest, message))
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let raw =
        headers.get(header::CONTENT_TYPE).ok_or_else(|| "a POST needs Content-Type: application/json".to_owned())?;
    let raw = raw.to_str().map_err(|_| "unreadable Content-Type".to_owned())?;
    let mut parts = raw.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default().to_ascii_lowercase();
    if essence != "application/json" && essence != "application/graphql-response+json" {
        return Err(format!("Content-Type `{essence}` is not supported; send application/json"));
    }
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("charset")
            && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return Err("only the utf-8 charset is supported".to_owned());
        }
    }
    Ok(())
}

fn sha256_hex(text: &str) -> String {
    use std::fmt::Write;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// `extensions.persistedQuery.sha256Hash`, when the extensions name a persisted query (version 1 only).
fn persisted_hash(extensions: Option<&Value>) -> Result<Option<String>, String> {
    let Some(persisted) = extensions.and_then(|e| e.get("persistedQuery")) else { return Ok(None) };
    if persisted.get("version").and_then(Value::as_u64) != Some(1) {
        return Err("`extensions.persistedQuery.version` must be 1".into());
    }
    match persisted.get("sha256Hash").and_then(Value::as_str) {
        Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(hash.to_ascii_lowercase()))
        }
        _ => Err("`extensions.persistedQuery.sha256Hash` must be 64 hexadecimal digits".into()),
    }
}

fn params_from_json(body: Value) -> Result<Params, String> {
    let Value::Object(mut map) = body else {
        return Err("the request body must be a JSON object".into());
    };
    let persisted = match map.get("extensions") {
        None | Some(Value::Null) | Some(Value::Object(_)) => persisted_hash(map.get("extensions"))?,
        Some(_) => return Err("`extensions` must be an object or null".into()),
    };
    let query = match map.remove("query") {
        Some(Value::String(q)) => Some(q),
        Some(_) => return Err("`query` must be a string".into()),
        None if persisted.is_some() => None,
        None => return Err("`query` is required".into()),
    };
    let operation_name = match map.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err("`operationName` must be a string or null".into()),
    };
    let variables = match map.remove("variables") {
        None | Some(Value::Null) => None,
        Some(Value::Object(vars)) => Some(vars),
        Some(_) => return Err("`variables` must be an object or null".into()),
    };
    Ok(Params { query, persisted, operation_name, variables })
}

fn params_from_query(query: &HashMap<String, String>) -> Result<Params, String> {
    let extensions = match query.get("extensions").map(|ext| serde_json::from_str::<Value>(ext)) {
        None | Some(Ok(Value::Null)) => None,
        Some(Ok(ext @ Value::Object(_))) => Some(ext),
        Some(_) => return Err("`extensions` must be a JSON object".into()),
    };
    let persisted = persisted_hash(extensions.as_ref())?;
    let text = match query.get("query") {
        Some(text) => Some(text.clone()),
        None if persisted.is_some() => None,
        None => return Err("`query` is required".into()),
    };
    let variables = match query.get("variables").map(|v| serde_json::from_str::<Value>(v)) {
        None => None,
        Some(Ok(Value::Object(vars))) => Some(vars),
        Some(Ok(Value::Null)) => None,
        Some(_) => return Err("`variables` must be a JSON object".into()),
    };
    Ok(Params {
        query: text,
        persisted,
        operation_name: query.get("operationName").filter(|n| !n.is_empty()).cloned(),
        variables,
    })
}
