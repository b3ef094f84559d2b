//! Webhooks: a tenant registers an HTTPS endpoint and the purpose it receives derived changes for; every instance
//! runs a [`WebhookDispatcher`] that delivers the outbox (`derived_events`) to each endpoint in position order.
//!
//! - At least once: an event is delivered until the endpoint answers 2xx; the cursor moves only then. Retries back
//!   off exponentially (`KONTAKT_WEBHOOK_RETRY_MS` doubled per failed attempt, at most 10 minutes).
//! - Deduplication: every request carries `Idempotency-Key: <webhook>:<position>`, the same on every retry.
//! - Signed: `Kontakt-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the webhook's secret>`;
//!   a receiver checks the signature and refuses an old `t` (replays).
//! - Consent at send (`events::deliver`): the payload goes only while the customer's derived data is permitted for
//!   the webhook's purpose; otherwise a `REVOKED` event without payload.
//! - Replay from a position: `replayWebhook` moves the cursor back.
//! - One instance delivers to a webhook at a time (a lease in its row), so deliveries stay in order.
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
    sea_query::{Expr, ExprTrait},
};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::events::{self, EventKind};
use crate::{
    auth::{Caller, Purpose, Scope, TenantId},
    consent::ConsentPurpose,
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::webhook,
};

/// At most this many webhooks per tenant.
pub const MAX_WEBHOOKS: u64 = 20;
/// Events delivered per webhook per turn.
const TURN: u64 = 100;
/// How long one instance holds a webhook while delivering.
const LEASE: Duration = Duration::from_secs(30);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long the endpoint has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook as callers see it (never its secret).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub purpose: String,
    pub kinds: Vec<EventKind>,
    pub created_at: DateTime<Utc>,
    pub cursor: i64,
    pub delivered: i64,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
}

impl From<webhook::Model> for Webhook {
    fn from(row: webhook::Model) -> Self {
        let kinds = row
            .kinds
            .as_array()
            .map(|list| list.iter().filter_map(|k| k.as_str().and_then(EventKind::parse)).collect())
            .unwrap_or_default();
        Webhook {
            id: row.id,
            url: row.url,
            purpose: row.purpose,
            kinds,
            created_at: row.created_at,
            cursor: row.cursor,
            delivered: row.delivered,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_error: row.last_error,
            last_status: row.last_status,
        }
    }
}

/// Whether a host is one a production server must not call (loopback, private, link-local: SSRF).
fn internal_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback() || ip.is_private() || ip.is_link_local() || ip.is_unspecified(),
        url::Host::Ipv6(ip) => ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        url::Host::Domain(name) => *name == "localhost" || name.ends_with(".localhost") || name.ends_with(".internal"),
    }
}

/// Registers a webhook; answers it with its secret (shown only now). Needs `profiles:write`.
pub async fn register(
    caller: &Caller,
    svc: &Services,
    url: &str,
    purpose: &str,
    kinds: Vec<EventKind>,
) -> ApiResult<(Webhook, String)> {
    caller.require(Scope::ProfilesWrite)?;
    let parsed = url::Url::parse(url).map_err(|e| ApiError::validation("url", format!("not a URL: {e}")))?;
    if url.len() > 2048 {
        return Err(ApiError::validation("url", "at most 2048 characters"));
    }
    match parsed.scheme() {
        "https" => {}
        "http" if svc.settings.webhook_allow_internal => {}
        _ => return Err(ApiError::validation("url", "an https:// URL")),
    }
    let Some(host) = parsed.host() else { return Err(ApiError::validation("url", "a URL with a host")) };
    if internal_host(&host) && !svc.settings.webhook_allow_internal {
        return Err(ApiError::validation(
            "url",
            "a loopback, private or link-local address (allowed with KONTAKT_WEBHOOK_ALLOW_INTERNAL=true)",
        ));
    }
    let purpose: ConsentPurpose = purpose.parse().map_err(|e: String| ApiError::validation("purpose", e))?;
    if kinds.contains(&EventKind::ConsentChanged) {
        return Err(ApiError::validation("kinds", "CONSENT_CHANGED is not delivered (REVOKED is, always)"));
    }
    let tenant = caller.tenant();
    if webhook::of_tenant(tenant).count(svc.db.conn()).await? >= MAX_WEBHOOKS {
        return Err(ApiError::validation("url", format!("at most {MAX_WEBHOOKS} webhooks per tenant")));
    }
    let secret = {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ApiError::internal(anyhow::anyhow!("no randomness for a webhook secret")))?;
        format!("whsec_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    // A new webhook starts at the current end of the outbox: it receives what changes from now on (replay reaches
    // back).
    let end = events::last_position(svc, tenant).await?;
    let row = webhook::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        url: Set(url.to_owned()),
        purpose: Set(purpose.as_str().to_owned()),
        kinds: Set(serde_json::json!(kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>())),
        secret: Set(secret.clone()),
        created_at: Set(Utc::now()),
        created_by: Set(caller.subject().chars().take(256).collect()),
        active: Set(true),
        cursor: Set(end),
        attempts: Set(0),
        next_attempt_at: Set(None),
        last_error: Set(None),
        last_status: Set(None),
        delivered: Set(0),
        lease_owner: Set(None),
        lease_until: Set(None),
    }
    .insert(svc.db.conn())
    .await?;
    svc.webhook_wake.wake();
    Ok((row.into(), secret))
}

/// The tenant's webhooks (at most [`MAX_WEBHOOKS`]), oldest first. Needs `profiles:read`.
pub async fn list(caller: &Caller, svc: &Services) -> ApiResult<Vec<Webhook>> {
    caller.require(Scope::ProfilesRead)?;
    let rows = webhook::of_tenant(caller.tenant()).order_by_asc(webhook::Column::Id).all(svc.db.conn()).await?;
    Ok(rows.into_iter().map(Webhook::from).collect())
}

/// Delivers again from `position` (the events after `position - 1`), at once. Needs `profiles:write`.
pub async fn replay(caller: &Caller, svc: &Services, id: Uuid, position: i64) -> ApiResult<Webhook> {
    caller.require(Scope::ProfilesWrite)?;
    if position < 1 {
        return Err(ApiError::validation("fromPosition", "a position of 1 or more"));
    }
    let changed = webhook::update_of_tenant(caller.tenant())
        .col_expr(webhook::Column::Cursor, Expr::value(position - 1))
        .col_expr(webhook::Column::Attempts, Expr::value(0))
        .col_expr(webhook::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(webhook::Column::Id.eq(id))
        .exec(svc.db.conn())
        .await?
        .rows_affected;
    if changed == 0 {
        return Err(ApiError::not_found(format!("webhook {id}")));
    }
    svc.webhook_wake.wake();
    let row = webhook::of_tenant(caller.tenant()).filter(webhook::Column::Id.eq(id)).one(svc.db.conn()).await?;
    row.map(Webhook::from).ok_or_else(|| ApiError::not_found(format!("webhook {id}")))
}

/// Deletes a webhook; nothing more is sent to it. Needs `profiles:write`.
pub async fn delete(caller: &Caller, svc: &Services, id: Uuid) -> ApiResult<bool> {
    caller.require(Scope::ProfilesWrite)?;
    let gone = webhook::delete_of_tenant(caller.tenant())
        .filter(webhook::Column::Id.eq(id))
        .exec(svc.db.conn())
        .await?
        .rows_affected;
    Ok(gone > 0)
}

/// The signature header value for `body` at `t`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", tag.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    /// Unique per webhook and event: the idempotency key.
    id: String,
    webhook_id: Uuid,
    #[serde(flatten)]
    delivery: &'a events::Delivery,
}

/// The background task that delivers webhooks; one per instance.
pub struct WebhookDispatcher {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// Wakes the instance's webhook dispatcher (events committed, a webhook registered or replayed).
#[derive(Clone, Default)]
pub struct WebhookWake(std::sync::Arc<Notify>);

impl WebhookWake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

impl WebhookDispatcher {
    pub fn start(svc: Services, poll: Duration, retry: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let owner = Uuid::new_v4().simple().to_string();
        let wake = svc.webhook_wake.0.clone();
        let handle = tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .timeout(TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("kontakt-webhooks/", env!("CARGO_PKG_VERSION")))
                .build()
            {
                Ok(client) => client,
                Err(err) => {
                    tracing::error!(error = %err, "webhooks: no HTTP client; webhooks are not delivered");
                    return;
                }
            };
            loop {
                if let Err(err) = turn(&svc, &client, &owner, retry).await {
                    tracing::warn!(error = %err, "webhooks: a delivery turn failed");
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = stopped.changed() => {}
                }
                if *stopped.borrow() {
                    break;
                }
            }
        });
        WebhookDispatcher { stop, handle }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// One turn: every due webhook this instance can lease gets up to [`TURN`] events.
async fn turn(svc: &Services, client: &reqwest::Client, owner: &str, retry: Duration) -> ApiResult<()> {
    let now = Utc::now();
    let due = webhook::Entity::find()
        .filter(webhook::Column::Active.eq(true))
        .filter(webhook::Column::NextAttemptAt.is_null().or(webhook::Column::NextAttemptAt.lte(now)))
        .filter(webhook::Column::LeaseUntil.is_null().or(webhook::Column::LeaseUntil.lt(now)))
        .all(svc.db.conn())
        .await?;
    for hook in due {
        let Ok(tenant) = TenantId::parse(&hook.tenant) else { continue };
        let tenant = &tenant;
        if events::after(svc, tenant, hook.cursor, 1).await?.is_empty() {
            continue;
        }
        let leased = webhook::update_of_tenant(tenant)
            .col_expr(webhook::Column::LeaseOwner, Expr::value(owner))
            .col_expr(webhook::Column::LeaseUntil, Expr::value(now + LEASE))
            .filter(webhook::Column::Id.eq(hook.id))
            .filter(webhook::Column::LeaseUntil.is_null().or(webhook::Column::LeaseUntil.lt(now)))
            .exec(svc.db.conn())
            .await?
            .rows_affected;
        if leased == 1 {
            let outcome = deliver_some(svc, client, tenant, &hook, retry).await;
            webhook::update_of_tenant(tenant)
                .col_expr(webhook::Column::LeaseOwner, Expr::value(Option::<String>::None))
                .col_expr(webhook::Column::LeaseUntil, Expr::value(Option::<DateTime<Utc>>::None))
                .filter(webhook::Column::Id.eq(hook.id))
                .filter(webhook::Column::LeaseOwner.eq(owner))
                .exec(svc.db.conn())
                .await?;
            outcome?;
        }
    }
    Ok(())
}

/// Delivers the events after the webhook's cursor in order until one fails or a turn's worth went.
async fn deliver_some(
    svc: &Services,
    client: &reqwest::Client,
    tenant: &TenantId,
    hook: &webhook::Model,
    retry: Duration,
) -> ApiResult<()> {
    let Ok(purpose) = Purpose::parse(&hook.purpose) else { return Ok(()) };
    let receiver = Caller::for_webhook(tenant.clone(), hook.id, purpose);
    let wanted: Vec<EventKind> = Webhook::from(hook.clone()).kinds;
    let mut cursor = hook.cursor;
    let mut delivered = hook.delivered;
    let mut attempts = hook.attempts;
    for event in events::after(svc, tenant, hook.cursor, TURN).await? {
        let passes = wanted.is_empty() || wanted.contains(&event.kind) || event.kind == EventKind::ConsentChanged;
        let delivery = if passes { events::deliver(&receiver, svc, &event).await? } else { None };
        let Some(delivery) =
            delivery.filter(|d| wanted.is_empty() || wanted.contains(&d.kind) || d.kind == EventKind::Revoked)
        else {
            cursor = event.position;
            continue;
        };
        let id = format!("{}:{}", hook.id, event.position);
        let body = serde_json::to_string(&Body { id: id.clone(), webhook_id: hook.id, delivery: &delivery })
            .map_err(ApiError::internal)?;
        let t = Utc::now().timestamp();
        let sent = client
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("idempotency-key", &id)
            .header("kontakt-signature", signature(&hook.secret, t, &body))
            .body(body)
            .send()
            .await;
        let (ok, status, error) = match sent {
            Ok(response) if response.status().is_success() => (true, Some(response.status().as_u16() as i32), None),
            Ok(response) => {
                let status = response.status();
                (false, Some(status.as_u16() as i32), Some(format!("the endpoint answered {status}")))
            }
            Err(err) => (false, None, Some(format!("the endpoint could not be reached: {}", err.without_url()))),
        };
        if ok {
            cursor = event.position;
            delivered += 1;
            attempts = 0;
            metrics::counter!("kontakt_webhook_deliveries_total", "outcome" => "delivered").increment(1);
            webhook::update_of_tenant(tenant)
                .col_expr(webhook::Column::Cursor, Expr::value(cursor))
                .col_expr(webhook::Column::Delivered, Expr::value(delivered))
                .col_expr(webhook::Column::Attempts, Expr::value(0))
                .col_expr(webhook::Column::LastStatus, Expr::value(status))
                .col_expr(webhook::Column::LastError, Expr::value(Option::<String>::None))
                .col_expr(webhook::Column::NextAttemptAt, Expr::value(Option::<DateTime<Utc>>::None))
                .filter(webhook::Column::Id.eq(hook.id))
                .exec(svc.db.conn())
                .await?;
            continue;
        }
        attempts += 1;
        metrics::counter!("kontakt_webhook_deliveries_total", "outcome" => "failed").increment(1);
        let backoff = retry.saturating_mul(1u32 << attempts.clamp(1, 16).saturating_sub(1)).min(MAX_BACKOFF);
        let next = Utc::now() + chrono::Duration::from_std(backoff).unwrap_or(chrono::Duration::seconds(600));
        webhook::update_of_tenant(tenant)
            .col_expr(webhook::Column::Cursor, Expr::value(cursor))
            .col_expr(webhook::Column::Attempts, Expr::value(attempts))
            .col_expr(webhook::Column::LastStatus, Expr::value(status))
            .col_expr(webhook::Column::LastError, Expr::value(error))
            .col_expr(webhook::Column::NextAttemptAt, Expr::value(Some(next)))
            .filter(webhook::Column::Id.eq(hook.id))
            .exec(svc.db.conn())
            .await?;
        return Ok(());
    }
    // Events passed over (other purposes, filtered kinds) move the cursor too.
    if cursor != hook.cursor {
        webhook::update_of_tenant(tenant)
            .col_expr(webhook::Column::Cursor, Expr::value(cursor))
            .filter(webhook::Column::Id.eq(hook.id))
            .filter(webhook::Column::Cursor.lt(cursor))
            .exec(svc.db.conn())
            .await?;
    }
    Ok(())
}
