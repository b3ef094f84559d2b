//! Derived-change resolvers: the `derivedChanges` subscription and webhooks. Thin: the rules are in
//! `crate::derived::events` (consent at send) and `crate::derived::webhooks` (delivery).
use async_graphql::{Context, InputObject, Object, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::request;
use crate::{
    derived::{
        events::{self, Delivery, EventKind},
        maintain::Cause,
        webhooks::{self, Webhook},
    },
    error::{ApiError, GqlResult},
};

/// One change to a customer's derived data, as this receiver may see it now.
#[derive(SimpleObject)]
#[graphql(name = "DerivedChange")]
pub struct DerivedChangeView {
    /// The outbox position: resume after it with `derivedChanges(after:)` or `replayWebhook`.
    position: String,
    kind: EventKind,
    customer_id: Uuid,
    /// The segment or computed trait, or for `SCORE_BAND_CHANGED` the score (`rfm`, `churnRisk`); none for
    /// `REVOKED`.
    key: Option<String>,
    /// The purpose the receiver acts for.
    purpose: String,
    cause: Cause,
    /// A computed trait's new value, or a score's new band (null when it has none).
    value: Option<async_graphql::Json<serde_json::Value>>,
    /// Its value before.
    previous: Option<async_graphql::Json<serde_json::Value>>,
    /// For `REVOKED`: why the receiver may no longer hold this customer's derived data (`WITHDRAWN`, `DENIED`,
    /// `EXPIRED`, `NOT_GIVEN`, `PROFILING_REFUSED`, `PROCESSING_RESTRICTED`).
    reason: Option<String>,
    at: DateTime<Utc>,
}

impl From<Delivery> for DerivedChangeView {
    fn from(d: Delivery) -> Self {
        let trait_value = matches!(d.kind, EventKind::TraitChanged | EventKind::ScoreBandChanged);
        DerivedChangeView {
            position: d.position.to_string(),
            kind: d.kind,
            customer_id: d.customer_id,
            key: d.key,
            purpose: d.purpose,
            cause: d.cause,
            value: trait_value.then(|| async_graphql::Json(d.value.unwrap_or(serde_json::Value::Null))),
            previous: trait_value.then(|| async_graphql::Json(d.previous.unwrap_or(serde_json::Value::Null))),
            reason: d.reason,
            at: d.at,
        }
    }
}

fn position(raw: Option<&str>, field: &str) -> Result<Option<i64>, ApiError> {
    raw.map(|p| {
        p.parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .ok_or_else(|| ApiError::validation(field, "a position this API gave (a whole number)"))
    })
    .transpose()
}

#[derive(Default)]
pub struct DerivedSubscription;

#[Subscription]
impl DerivedSubscription {
    /// Changes to derived data as they commit, from every instance: segment entered and exited, computed trait
    /// changed, score band changed — each with its cause (touchpoint, record, merge, unmerge, consent, window expiry,
    /// definition change, score model refit).
    /// Only definitions serving the caller's purpose, and consent applied when each event is sent: where the
    /// caller's permit for a customer is gone, a `REVOKED` event without payload says to purge what it holds.
    /// `after`: replay from the outbox first (the events after that position, at most 10,000), then go live, none
    /// twice. Needs `profiles:read`.
    async fn derived_changes(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        #[graphql(default)] kinds: Vec<EventKind>,
        #[graphql(default)] keys: Vec<String>,
    ) -> async_graphql::Result<impl Stream<Item = DerivedChangeView> + use<>> {
        let rc = request(ctx)?;
        let from = position(after.as_deref(), "after").gql()?;
        let stream = events::watch(&rc.caller, &rc.services, from, kinds, keys).await.gql()?;
        Ok(stream.map(DerivedChangeView::from))
    }
}

/// A webhook and where its delivery stands.
#[derive(SimpleObject)]
#[graphql(name = "Webhook")]
pub struct WebhookView {
    id: Uuid,
    url: String,
    /// The purpose deliveries are made for: only its definitions' events, consent applied at send.
    purpose: String,
    /// The kinds delivered (empty: all); `REVOKED` always is.
    kinds: Vec<EventKind>,
    created_at: DateTime<Utc>,
    /// The position of the last event delivered or passed over.
    cursor: String,
    delivered: i64,
    /// Failed attempts at the next event.
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    last_status: Option<i32>,
}

impl From<Webhook> for WebhookView {
    fn from(w: Webhook) -> Self {
        WebhookView {
            id: w.id,
            url: w.url,
            purpose: w.purpose,
            kinds: w.kinds,
            created_at: w.created_at,
            cursor: w.cursor.to_string(),
            delivered: w.delivered,
            attempts: w.attempts,
            next_attempt_at: w.next_attempt_at,
            last_error: w.last_error,
            last_status: w.last_status,
        }
    }
}

#[derive(InputObject)]
pub struct RegisterWebhookInput {
    /// An https:// URL (http and internal addresses only where `KONTAKT_WEBHOOK_ALLOW_INTERNAL` allows them).
    url: String,
    /// The consent purpose the receiver acts for (`personalization`, `marketing`, …).
    purpose: String,
    /// The kinds to deliver (default: all). `REVOKED` is always delivered.
    #[graphql(default)]
    kinds: Vec<EventKind>,
}

#[derive(SimpleObject)]
pub struct RegisteredWebhook {
    webhook: WebhookView,
    /// The HMAC-SHA256 key of the `Kontakt-Signature` header (`t=<unix>,v1=<hex of HMAC("<t>.<body>")>`). Shown
    /// only now.
    secret: String,
}

#[derive(Default)]
pub struct WebhooksQuery;

#[Object]
impl WebhooksQuery {
    /// The tenant's webhooks (at most 20), oldest first. Needs `profiles:read`.
    async fn webhooks(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<WebhookView>> {
        let rc = request(ctx)?;
        Ok(webhooks::list(&rc.caller, &rc.services).await.gql()?.into_iter().map(WebhookView::from).collect())
    }
}

#[derive(Default)]
pub struct WebhooksMutation;

#[Object]
impl WebhooksMutation {
    /// Registers an endpoint for derived changes: delivered in order, at least once (retried with backoff until it
    /// answers 2xx), each request signed and carrying `Idempotency-Key: <webhook>:<position>` (the same on every
    /// retry). It receives what changes from now on; `replayWebhook` reaches back. Needs `profiles:write`.
    async fn register_webhook(
        &self,
        ctx: &Context<'_>,
        input: RegisterWebhookInput,
    ) -> async_graphql::Result<RegisteredWebhook> {
        let rc = request(ctx)?;
        let (webhook, secret) =
            webhooks::register(&rc.caller, &rc.services, &input.url, &input.purpose, input.kinds).await.gql()?;
        Ok(RegisteredWebhook { webhook: webhook.into(), secret })
    }

    /// Delivers again from `fromPosition` on (consent applied as it stands now). Needs `profiles:write`.
    async fn replay_webhook(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
        from_position: String,
    ) -> async_graphql::Result<WebhookView> {
        let rc = request(ctx)?;
        let from = position(Some(&from_position), "fromPosition").gql()?.unwrap_or(1);
        Ok(webhooks::replay(&rc.caller, &rc.services, id, from).await.gql()?.into())
    }

    /// Deletes a webhook; nothing more is sent to it. `false` when there was none. Needs `profiles:write`.
    async fn delete_webhook(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<bool> {
        let rc = request(ctx)?;
        webhooks::delete(&rc.caller, &rc.services, id).await.gql()
    }
}
