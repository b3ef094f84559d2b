//! The one execution path: an async-graphql extension that every operation runs through, whatever carried it
//! (HTTP, WebSocket, a batch). It applies the document limits before validation does any work (size, aliases,
//! depth, expanded size, introspection), the request timeout, error codes, bounded error messages, metrics, and the
//! GraphQL rule that a field error makes the nearest nullable field `null` (async-graphql leaves a failed field out
//! of `data`).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_graphql::{
    PathSegment, Request, Response, ServerError, ServerResult, Value, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextRequest, NextSubscribe,
    },
    parser::types::{BaseType, ExecutableDocument, Type, TypeKind, TypeSystemDefinition},
};
use futures_util::{StreamExt, stream::BoxStream};

use super::document::{OperationKind, ResponseOrder, inspect};
use crate::{config::Config, error::ErrorCode, graphql::RequestContext, rate_limit::GraphqlLimiter};

/// The limits and the schema's field types, shared by every operation.
pub struct Guard {
    limits: Arc<Limits>,
}

struct Limits {
    max_document_bytes: usize,
    max_aliases: usize,
    max_depth: usize,
    max_expanded_fields: usize,
    introspection: bool,
    timeout: Duration,
    types: FieldTypes,
    /// Operations per tenant and subject (`KONTAKT_RATE_LIMIT_*`), when on.
    rate: Option<GraphqlLimiter>,
}

impl Guard {
    pub fn new(config: &Config) -> Self {
        Guard {
            limits: Arc::new(Limits {
                max_document_bytes: config.max_body_bytes,
                max_aliases: config.max_aliases,
                max_depth: config.max_depth,
                // Every field counts at least 1 toward complexity, so this refuses nothing the complexity limit
                // would let through; it only refuses earlier, before async-graphql expands fragments.
                max_expanded_fields: config.max_complexity,
                introspection: config.introspection_enabled(),
                timeout: config.request_timeout(),
                types: FieldTypes::of_served_schema(),
                rate: config.graphql_rate_limit().map(|limit| GraphqlLimiter::new("graphql", limit)),
            }),
        }
    }
}

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Operation { limits: self.limits.clone(), seen: Arc::new(Mutex::new(Seen::default())) })
    }
}

/// What one operation turned out to be, learnt while it is prepared.
#[derive(Default, Clone)]
struct Seen {
    name: Option<String>,
    kind: Option<OperationKind>,
    /// The order the document selects its fields in, which the response keeps.
    order: Option<Arc<ResponseOrder>>,
}

struct Operation {
    limits: Arc<Limits>,
    seen: Arc<Mutex<Seen>>,
}

impl Operation {
    fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn refusal(code: ErrorCode, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
    error
}

#[async_trait::async_trait]
impl Extension for Operation {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = match tokio::time::timeout(self.limits.timeout, next.run(ctx)).await {
            Ok(response) => response,
            Err(_) => Response::from_errors(vec![refusal(
                ErrorCode::Unavailable,
                format!("the request took longer than {} ms", self.limits.timeout.as_millis()),
            )]),
        };
        finish(&self.limits, &self.seen(), response, Some(started))
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let inner = next.run(ctx, stream);
        let limits = self.limits.clone();
        let seen = self.seen.clone();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        // A query or mutation sent over the socket answers once, within the request timeout; a subscription's
        // events come whenever they happen.
        futures_util::stream::unfold((inner, true, false), move |(mut inner, first, ended)| {
            let limits = limits.clone();
            let seen = seen.clone();
            async move {
                if ended {
                    return None;
                }
                let snapshot = || seen.lock().map(|s| s.clone()).unwrap_or_default();
                if !first {
                    let response = inner.next().await?;
                    return Some((finish(&limits, &snapshot(), response, None), (inner, false, false)));
                }
                let started = Instant::now();
                let mut deadline = deadline;
                loop {
                    tokio::select! {
                        response = inner.next() => {
                            let response = response?;
                            return Some((finish(&limits, &snapshot(), response, Some(started)), (inner, false, false)));
                        }
                        _ = tokio::time::sleep_until(deadline) => {
                            if snapshot().kind == Some(OperationKind::Subscription) {
                                deadline += Duration::from_secs(365 * 24 * 3600);
                                continue;
                            }
                            let message = format!("the request took longer than {} ms", limits.timeout.as_millis());
                            let response = Response::from_errors(vec![refusal(ErrorCode::Unavailable, message)]);
                            return Some((finish(&limits, &snapshot(), response, Some(started)), (inner, false, true)));
                        }
                    }
                }
            }
        })
        .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.name = request.operation_name.clone();
        }
        // Every operation decides consent with its own session: nothing is decided with state from before it.
        let request = request.data(crate::consent::ConsentSession::new());
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let limits = &self.limits;
        // The rate limit comes first, before any work on the document. Every transport passes here: HTTP puts the
        // caller in the operation's data, the WebSocket in the connection's, and `data_opt` reads both.
        if let Some(rate) = &limits.rate
            && let Some(context) = ctx.data_opt::<RequestContext>()
        {
            let caller = &context.caller;
            rate.check(&(caller.tenant().clone(), caller.subject().to_owned()), 1)
                .map_err(|limited| limited.graphql_error())?;
        }
        // With the database known to be down (its probe cannot connect), the answer is UNAVAILABLE now, not after
        // the pool's acquire timeout.
        if ctx.data_opt::<RequestContext>().is_some_and(|context| context.services.db.is_down()) {
            return Err(refusal(ErrorCode::Unavailable, "the database is unavailable, try again"));
        }
        if query.len() > limits.max_document_bytes {
            return Err(refusal(
                ErrorCode::GraphqlValidationFailed,
                format!("the document is {} bytes; at most {} are allowed", query.len(), limits.max_document_bytes),
            ));
        }
        let document = next.run(ctx, query, variables).await.map_err(|mut error| {
            if error.extensions.as_ref().and_then(|e| e.get("code")).is_none() {
                error
                    .extensions
                    .get_or_insert_with(Default::default)
                    .set("code", ErrorCode::GraphqlParseFailed.as_str());
            }
            error
        })?;
        let name = self.seen().name;
        let shape = inspect(&document, name.as_deref());
        if let Ok(mut seen) = self.seen.lock() {
            seen.kind = shape.operation;
        }
        let refuse = |message: String| Err(refusal(ErrorCode::GraphqlValidationFailed, message));
        if shape.introspection && !limits.introspection {
            return refuse("introspection is disabled on this server (KONTAKT_INTROSPECTION)".into());
        }
        if shape.aliases > limits.max_aliases {
            return refuse(format!(
                "the query uses {} aliases; at most {} are allowed",
                shape.aliases, limits.max_aliases
            ));
        }
        if shape.depth > limits.max_depth {
            return refuse(format!(
                "the query is nested {} deep; at most {} is allowed",
                shape.depth, limits.max_depth
            ));
        }
        if shape.expanded_fields > limits.max_expanded_fields {
            return refuse(format!(
                "the query selects {} fields once its fragments are expanded; the complexity limit is {}",
                shape.expanded_fields, limits.max_expanded_fields
            ));
        }
        // Within the limits, so expanding the fragments to learn the order is bounded.
        let order = ResponseOrder::of(&document, name.as_deref());
        if let Ok(mut seen) = self.seen.lock() {
            seen.order = Some(Arc::new(order));
        }
        Ok(document)
    }
}

/// The last step of every response: bounded messages and codes on every error, `null` where a field failed,
/// fields in the order the document selects them, metrics.
fn finish(limits: &Limits, seen: &Seen, mut response: Response, started: Option<Instant>) -> Response {
    let request_failed = response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let default_code = if request_failed { ErrorCode::GraphqlValidationFailed } else { ErrorCode::Validation };
    for error in &mut response.errors {
        // Messages can quote the request (a parse error shows the offending line): bounded, whatever the transport.
        if error.message.len() > crate::error::MAX_MESSAGE_BYTES {
            error.message = crate::error::bound_message(&error.message).into_owned();
        }
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", default_code.as_str());
        }
        if let Some(Value::String(code)) = extensions.get("code") {
            metrics::counter!("kontakt_graphql_errors_total", "code" => code.clone()).increment(1);
        }
    }
    if !request_failed {
        limits.types.null_failed_fields(seen.kind.unwrap_or(OperationKind::Query), &mut response);
    }
    if let Some(order) = &seen.order {
        order.apply(&mut response.data);
    }
    // Errors are collected as fields finish: list them in document order (then by path), so the same request
    // answers the same body.
    response.errors.sort_by(|a, b| {
        let at = |e: &ServerError| e.locations.first().map(|p| (p.line, p.column));
        at(a).cmp(&at(b)).then_with(|| compare_paths(&a.path, &b.path))
    });
    if let Some(started) = started {
        let operation = operation_label(seen.name.as_deref());
        metrics::histogram!("kontakt_graphql_request_duration_seconds", "operation" => operation.clone())
            .record(started.elapsed().as_secs_f64());
        let outcome = if response.errors.is_empty() {
            "ok"
        } else if request_failed {
            "rejected"
        } else {
            "partial"
        };
        metrics::counter!("kontakt_graphql_requests_total", "operation" => operation, "outcome" => outcome)
            .increment(1);
    }
    response
}

fn compare_paths(a: &[PathSegment], b: &[PathSegment]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    for (x, y) in a.iter().zip(b) {
        let order = match (x, y) {
            (PathSegment::Index(x), PathSegment::Index(y)) => x.cmp(y),
            (PathSegment::Field(x), PathSegment::Field(y)) => x.cmp(y),
            (PathSegment::Index(_), PathSegment::Field(_)) => Ordering::Less,
            (PathSegment::Field(_), PathSegment::Index(_)) => Ordering::Greater,
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// Bounded label cardinality: operation names are client-chosen.
fn operation_label(name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() && n.len() <= 64 && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
            n.to_owned()
        }
        Some(_) => "invalid".to_owned(),
        None => "anonymous".to_owned(),
    }
}

/// The output type of every field of every object type of the served schema, read from its SDL.
struct FieldTypes {
    fields: HashMap<String, HashMap<String, Type>>,
}

impl FieldTypes {
    fn of_served_schema() -> Self {
        let mut fields = HashMap::new();
        if let Ok(document) = async_graphql::parser::parse_schema(super::sdl()) {
            for definition in document.definitions {
                let TypeSystemDefinition::Type(definition) = definition else { continue };
                let definition = definition.node;
                let declared = match definition.kind {
                    TypeKind::Object(object) => object.fields,
                    TypeKind::Interface(interface) => interface.fields,
                    _ => continue,
                };
                let of_type: HashMap<String, Type> =
                    declared.into_iter().map(|f| (f.node.name.node.to_string(), f.node.ty.node)).collect();
                fields.entry(definition.name.node.to_string()).or_insert_with(HashMap::new).extend(of_type);
            }
        }
        FieldTypes { fields }
    }

    fn field(&self, parent: &str, name: &str) -> Option<&Type> {
        self.fields.get(parent).and_then(|f| f.get(name))
    }

    /// For each error at a field, sets the nearest nullable position of its path to `null` (the field itself when
    /// it is nullable, else the closest nullable ancestor, else the whole `data`), as the GraphQL spec's
    /// "handling field errors" says. Unknown types count as nullable.
    fn null_failed_fields(&self, kind: OperationKind, response: &mut Response) {
        let root = match kind {
            OperationKind::Query => "Query",
            OperationKind::Mutation => "Mutation",
            OperationKind::Subscription => "Subscription",
        };
        let paths: Vec<Vec<PathSegment>> =
            response.errors.iter().filter(|e| !e.path.is_empty()).map(|e| e.path.clone()).collect();
        if paths.is_empty() {
            return;
        }
        if response.data == Value::Null {
            // Every root field failed: async-graphql answers `data: null` even where the fields are nullable.
            response.data = Value::Object(Default::default());
        }
        let mut targets: Vec<&[PathSegment]> = Vec::with_capacity(paths.len());
        for path in &paths {
            match self.nullability(root, path).iter().rposition(|n| *n) {
                Some(k) => targets.push(&path[..=k]),
                None => {
                    response.data = Value::Null;
                    return;
                }
            }
        }
        // A null higher up wins over one below it, whatever order the errors came in.
        let covered = |t: &[PathSegment]| targets.iter().any(|u| u.len() < t.len() && t.starts_with(u));
        let kept: Vec<&[PathSegment]> = targets.iter().copied().filter(|t| !covered(t)).collect();
        for target in kept {
            set_null(&mut response.data, target);
        }
    }

    /// Whether each position of a response path may be `null`.
    fn nullability(&self, root: &str, path: &[PathSegment]) -> Vec<bool> {
        let mut parent = Some(root.to_owned());
        let mut current: Option<&Type> = None;
        let mut nullable = Vec::with_capacity(path.len());
        for segment in path {
            current = match segment {
                PathSegment::Field(name) => parent.as_deref().and_then(|p| self.field(p, name)),
                PathSegment::Index(_) => current.and_then(|t| match &t.base {
                    BaseType::List(item) => Some(item.as_ref()),
                    BaseType::Named(_) => None,
                }),
            };
            nullable.push(current.is_none_or(|t| t.nullable));
            parent = current.map(named);
        }
        nullable
    }
}

fn named(ty: &Type) -> String {
    match &ty.base {
        BaseType::Named(name) => name.to_string(),
        BaseType::List(item) => named(item),
    }
}

/// Sets the value at `path` to `null`. An object on the way that async-graphql answered with `null` because every
/// one of its selected fields failed becomes an object again (its fields get their own nulls); a parent that is
/// absent failed itself, and its own error places that null.
fn set_null(data: &mut Value, path: &[PathSegment]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = data;
    for (i, segment) in parents.iter().enumerate() {
        let next = match (segment, node) {
            (PathSegment::Field(name), Value::Object(map)) => map.get_mut(name.as_str()),
            (PathSegment::Index(i), Value::List(items)) => items.get_mut(*i),
            _ => None,
        };
        let Some(child) = next else { return };
        let descends_into_object = matches!(path.get(i + 1), Some(PathSegment::Field(_)));
        if *child == Value::Null && descends_into_object {
            *child = Value::Object(Default::default());
        }
        node = child;
    }
    match (last, node) {
        (PathSegment::Field(name), Value::Object(map)) => {
            map.insert(async_graphql::Name::new(name), Value::Null);
        }
        (PathSegment::Index(i), Value::List(items)) => {
            if let Some(item) = items.get_mut(*i) {
                *item = Value::Null;
            }
        }
        _ => {}
    }
}
