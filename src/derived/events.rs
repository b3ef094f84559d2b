//! Derived-data change events: read from the outbox (`derived_events`, written by `derived::maintain` in the
//! transaction that made the change), published after commit to the tenant's `derived` topic for live subscribers,
//! and delivered to webhooks from the outbox by position.
//!
//! Consent is applied when an event is sent, not when it was written ([`deliver`]): the receiver's purpose must be
//! the one the definition serves, and the customer's derived data must be permitted for that purpose *now*. When it
//! is not — consent withdrawn, profiling refused, processing restricted — the receiver gets a `REVOKED` event with
//! the customer, purpose and reason and no payload, so an engine that cached the data knows to purge it.
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream::BoxStream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::maintain::Cause;
use crate::{
    auth::{Caller, PurposeKind, Scope, TenantId},
    consent::policy,
    error::{ApiError, ApiResult},
    privacy::access_log::AccessCategory,
    services::Services,
    storage::entities::derived_event,
};

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventKind {
    SegmentEntered,
    SegmentExited,
    /// A computed trait has a new value (`value`, with the `previous` one; null when it has none).
    TraitChanged,
    /// A score moved to another band: `key` is the score (`rfm`: the named RFM segment; `churnRisk`: `LOW`,
    /// `MEDIUM`, `HIGH`), `value` the new band (null when it has none now), `previous` the old one.
    ScoreBandChanged,
    /// A consent decision or restriction changed (outbox only: sent as `REVOKED` where it withdraws the receiver's
    /// permit, not sent otherwise).
    ConsentChanged,
    /// The receiver may no longer hold derived data about this customer for its purpose: purge it. No payload.
    Revoked,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SegmentEntered => "SEGMENT_ENTERED",
            EventKind::SegmentExited => "SEGMENT_EXITED",
            EventKind::TraitChanged => "TRAIT_CHANGED",
            EventKind::ScoreBandChanged => "SCORE_BAND_CHANGED",
            EventKind::ConsentChanged => "CONSENT_CHANGED",
            EventKind::Revoked => "REVOKED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            EventKind::SegmentEntered,
            EventKind::SegmentExited,
            EventKind::TraitChanged,
            EventKind::ScoreBandChanged,
            EventKind::ConsentChanged,
            EventKind::Revoked,
        ]
        .into_iter()
        .find(|k| k.as_str() == raw)
    }
}

/// One outbox event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DerivedEvent {
    pub position: i64,
    pub customer_id: Uuid,
    pub kind: EventKind,
    pub key: Option<String>,
    pub purpose: Option<String>,
    pub cause: Cause,
    pub payload: Option<Value>,
    pub at: DateTime<Utc>,
}

impl DerivedEvent {
    pub fn from_row(row: derived_event::Model) -> Option<Self> {
        Some(DerivedEvent {
            position: row.position,
            customer_id: row.customer_id,
            kind: EventKind::parse(&row.kind)?,
            key: row.key,
            purpose: row.purpose,
            cause: Cause::parse(&row.cause)?,
            payload: row.payload,
            at: row.at,
        })
    }
}

/// An event as one receiver gets it, consent applied.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub position: i64,
    pub kind: EventKind,
    pub customer_id: Uuid,
    pub key: Option<String>,
    pub purpose: String,
    pub cause: Cause,
    /// A computed trait's new value.
    pub value: Option<Value>,
    pub previous: Option<Value>,
    /// Why a `REVOKED` was sent (`WITHDRAWN`, `DENIED`, `EXPIRED`, `NOT_GIVEN`, `PROFILING_REFUSED`,
    /// `PROCESSING_RESTRICTED`).
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

pub fn topic(tenant: &TenantId) -> String {
    format!("derived:{tenant}")
}

/// Publishes committed events to the tenant's live subscribers (best effort: a subscriber that misses one can
/// resume from its last position, the outbox keeps them).
pub async fn publish(svc: &Services, tenant: &TenantId, events: &[DerivedEvent]) {
    if events.is_empty() {
        return;
    }
    svc.webhook_wake.wake();
    let topic = topic(tenant);
    for event in events {
        let Ok(payload) = serde_json::to_string(event) else { continue };
        if let Err(err) = svc.pubsub.publish(&topic, payload).await {
            metrics::counter!("kontakt_publish_failures_total").increment(1);
            tracing::warn!(error = %err, "publishing a derived change failed");
            break;
        }
    }
}

/// Whether events of a definition serving `purpose` go to this receiver.
fn serves(receiver: &Caller, purpose: Option<&str>) -> bool {
    match (receiver.purpose().kind(), purpose) {
        (PurposeKind::PrivacyAdmin, _) | (_, None) => true,
        (_, Some(p)) => receiver.purpose().consent().is_some_and(|(wanted, _)| wanted.as_str() == p),
    }
}

/// What `receiver` is sent for `event`, with consent as it stands now: the event with its payload, a `REVOKED`
/// without one, or nothing (another purpose's definition; a consent change that leaves the permit standing).
/// Payloads served are access-logged.
pub async fn deliver(receiver: &Caller, svc: &Services, event: &DerivedEvent) -> ApiResult<Option<Delivery>> {
    if !serves(receiver, event.purpose.as_deref()) {
        return Ok(None);
    }
    use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
    let id = event.customer_id;
    // A customer merged into another is that person now: the survivor's consent decides (their exit events go out
    // under it).
    let row: Option<Option<Uuid>> = crate::storage::entities::customer::of_tenant(receiver.tenant())
        .filter(crate::storage::entities::customer::Column::Id.eq(id))
        .select_only()
        .column(crate::storage::entities::customer::Column::MergedInto)
        .into_tuple()
        .one(svc.db.conn())
        .await?;
    let person = match row {
        None => return Ok(None),
        Some(merged_into) => merged_into.unwrap_or(id),
    };
    let state = policy::states_of(svc.db.conn(), receiver.tenant(), &[person]).await?.remove(&person);
    let now = Utc::now();
    let refused = match &state {
        // Erased since: nothing about them may go out, and there is nothing left to revoke.
        None => return Ok(None),
        Some(state) => match policy::decide_derived(receiver, person, state, now) {
            Ok(_) => None,
            Err(ApiError::ConsentRequired { reason, .. }) => Some(reason.to_owned()),
            Err(other) => return Err(other),
        },
    };
    let purpose = receiver.purpose().as_str().to_owned();
    if let Some(reason) = refused {
        return Ok(Some(Delivery {
            position: event.position,
            kind: EventKind::Revoked,
            customer_id: id,
            key: None,
            purpose,
            cause: event.cause,
            value: None,
            previous: None,
            reason: Some(reason),
            at: event.at,
        }));
    }
    if event.kind == EventKind::ConsentChanged {
        return Ok(None);
    }
    svc.access_log.record(receiver, [id], AccessCategory::Scores);
    let field = |name: &str| event.payload.as_ref().and_then(|p| p.get(name)).cloned();
    Ok(Some(Delivery {
        position: event.position,
        kind: event.kind,
        customer_id: id,
        key: event.key.clone(),
        purpose,
        cause: event.cause,
        value: field("value"),
        previous: field("previous"),
        reason: None,
        at: event.at,
    }))
}

/// Events of the tenant after `after`, oldest first, at most `limit`.
pub async fn after(svc: &Services, tenant: &TenantId, after: i64, limit: u64) -> ApiResult<Vec<DerivedEvent>> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
    let rows = derived_event::of_tenant(tenant)
        .filter(derived_event::Column::Position.gt(after))
        .order_by_asc(derived_event::Column::Position)
        .limit(limit)
        .all(svc.db.conn())
        .await?;
    Ok(rows.into_iter().filter_map(DerivedEvent::from_row).collect())
}

/// Most events a subscription replays from the outbox before it goes live (a receiver further behind pages with
/// webhooks' replay or subscribes again from its last position).
pub const MAX_REPLAY: u64 = 10_000;

/// The tenant's derived changes for the caller, consent applied at send: the events after `from` (replayed from
/// the outbox, at most [`MAX_REPLAY`]) and then those committed from now on, never one twice. Needs
/// `profiles:read`.
pub async fn watch(
    caller: &Caller,
    svc: &Services,
    from: Option<i64>,
    kinds: Vec<EventKind>,
    keys: Vec<String>,
) -> ApiResult<BoxStream<'static, Delivery>> {
    caller.require(Scope::ProfilesRead)?;
    let tenant = caller.tenant().clone();
    // Live first, so nothing committed during the replay is missed; duplicates are dropped by position.
    let live = svc.pubsub.subscribe(&topic(&tenant)).await.map_err(|err| {
        tracing::error!(error = %err, "subscribing to derived changes failed");
        ApiError::Unavailable("derived-change notifications are unavailable, try again".into())
    })?;
    let replayed = match from {
        Some(position) => after(svc, &tenant, position, MAX_REPLAY).await?,
        None => Vec::new(),
    };
    let last_replayed = replayed.last().map_or(from.unwrap_or(0), |e| e.position);
    let live = live.filter_map(move |payload| {
        let event = serde_json::from_str::<DerivedEvent>(&payload).ok().filter(|e| e.position > last_replayed);
        async move { event }
    });
    let (caller, svc) = (caller.clone(), svc.clone());
    let wanted = move |e: &DerivedEvent| {
        (kinds.is_empty() || kinds.contains(&e.kind) || e.kind == EventKind::ConsentChanged)
            && (keys.is_empty() || e.key.as_ref().is_none_or(|k| keys.contains(k)))
    };
    Ok(futures_util::stream::iter(replayed)
        .chain(live)
        .filter(move |e| std::future::ready(wanted(e)))
        .filter_map(move |event| {
            let (caller, svc) = (caller.clone(), svc.clone());
            async move {
                match deliver(&caller, &svc, &event).await {
                    Ok(delivery) => delivery,
                    Err(err) => {
                        // Consent could not be checked: nothing goes out.
                        tracing::warn!(error = %err, "derived change withheld: consent could not be checked");
                        None
                    }
                }
            }
        })
        .boxed())
}

/// The tenant's last outbox position (0 when it has none).
pub async fn last_position(svc: &Services, tenant: &TenantId) -> ApiResult<i64> {
    use sea_orm::{ColumnTrait, QuerySelect};
    Ok(derived_event::of_tenant(tenant)
        .select_only()
        .column_as(derived_event::Column::Position.max(), "last")
        .into_tuple::<Option<i64>>()
        .one(svc.db.conn())
        .await?
        .flatten()
        .unwrap_or(0))
}
