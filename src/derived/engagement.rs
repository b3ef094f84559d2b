//! Affinities and the preferred channel, computed from a customer's recent touchpoints when read.
//!
//! **Affinity** to the values of one touchpoint property (a dimension: `category`, `brand`, `topic`, …): each
//! touchpoint carrying the property adds its weight (a purchase 3, a review or a click 2, anything else 1), decayed
//! by half every `half_life_days` (0: no decay); a value's affinity is its share of the total, with the touchpoints
//! behind it. Over the customer's latest [`WINDOW_TOUCHPOINTS`] touchpoints of the last 365 days.
//!
//! **Preferred channel**: among the channels Kontakt can contact a person on (e-mail, SMS, phone, push), those the
//! person can be reached on (an identity of the kind the channel needs) and has consented to (`marketing` for that
//! channel in force, `consent::policy::in_force`), the one with the most engagement in the last 180 days (touchpoints
//! on that channel, sends and impressions aside); every channel comes with its evidence.
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope},
    consent::{ConsentPurpose, ConsentSession, Permitted, policy},
    error::{ApiError, ApiResult},
    privacy::access_log::AccessCategory,
    profiles::{IdentityKind, customers},
    services::Services,
    storage::entities::touchpoint,
    touchpoints::{Channel, TouchpointType},
};

/// At most this many recent touchpoints feed an affinity.
pub const WINDOW_TOUCHPOINTS: u64 = 5000;
/// How far back engagement counts for the preferred channel.
pub const ENGAGEMENT_DAYS: i64 = 180;

/// One value of a dimension and the customer's affinity to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Affinity {
    pub value: String,
    /// Share of the decayed weight, 0–1.
    pub score: f64,
    /// The decayed weight itself.
    pub weight: f64,
    /// Touchpoints behind it.
    pub touchpoints: u64,
    pub last_seen_at: DateTime<Utc>,
}

fn weight_of(kind: TouchpointType) -> f64 {
    match kind {
        TouchpointType::Purchase => 3.0,
        TouchpointType::Review | TouchpointType::EmailClick | TouchpointType::AdClick => 2.0,
        _ => 1.0,
    }
}

/// The customer's affinities to the values of `dimension`, strongest first. Needs `touchpoints:read`; logged.
pub async fn affinities(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    customer_id: Uuid,
    dimension: &str,
    half_life_days: u32,
    first: usize,
) -> ApiResult<Permitted<Vec<Affinity>>> {
    caller.require(Scope::TouchpointsRead)?;
    if dimension.is_empty() || dimension.len() > 64 {
        return Err(ApiError::validation("dimension", "a property name of 1–64 characters"));
    }
    if half_life_days > 3650 {
        return Err(ApiError::validation("halfLifeDays", "at most 3650 (0: no decay)"));
    }
    if !(1..=100).contains(&first) {
        return Err(ApiError::validation("first", "from 1 to 100"));
    }
    let permit = session.decide_derived(caller, svc, customer_id).await?;
    let now = Utc::now();
    let rows: Vec<(DateTime<Utc>, String, Option<Value>)> = touchpoint::of_tenant(caller.tenant())
        .filter(touchpoint::Column::CustomerId.eq(customer_id))
        .filter(touchpoint::Column::OccurredAt.gte(now - Duration::days(365)))
        .order_by_desc(touchpoint::Column::OccurredAt)
        .limit(WINDOW_TOUCHPOINTS)
        .select_only()
        .column(touchpoint::Column::OccurredAt)
        .column(touchpoint::Column::Kind)
        .column(touchpoint::Column::Properties)
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    let mut by_value: HashMap<String, Affinity> = HashMap::new();
    for (at, kind, properties) in rows {
        let Some(value) = properties.as_ref().and_then(|p| p.get(dimension)) else { continue };
        let value = match value {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        let age_days = (now - at).num_seconds().max(0) as f64 / 86_400.0;
        let decay = if half_life_days == 0 { 1.0 } else { 0.5f64.powf(age_days / half_life_days as f64) };
        let weight = TouchpointType::parse(&kind).map_or(1.0, weight_of) * decay;
        let entry = by_value.entry(value.clone()).or_insert(Affinity {
            value,
            score: 0.0,
            weight: 0.0,
            touchpoints: 0,
            last_seen_at: at,
        });
        entry.weight += weight;
        entry.touchpoints += 1;
        entry.last_seen_at = entry.last_seen_at.max(at);
    }
    let total: f64 = by_value.values().map(|a| a.weight).sum();
    let mut list: Vec<Affinity> = by_value
        .into_values()
        .map(|a| Affinity { score: if total > 0.0 { a.weight / total } else { 0.0 }, ..a })
        .collect();
    list.sort_by(|a, b| b.weight.total_cmp(&a.weight).then_with(|| a.value.cmp(&b.value)));
    list.truncate(first);
    svc.access_log.record(caller, [customer_id], AccessCategory::Scores);
    Ok(permit.serve(list))
}

/// A channel Kontakt can contact a person on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactChannel {
    Email,
    Sms,
    Phone,
    Push,
}

impl ContactChannel {
    pub const ALL: [ContactChannel; 4] =
        [ContactChannel::Email, ContactChannel::Sms, ContactChannel::Push, ContactChannel::Phone];

    /// The consent channel (`marketing:<this>`), the identity kind that reaches the person, and the touchpoint
    /// channel engagement is counted on.
    pub fn parts(self) -> (&'static str, IdentityKind, Channel) {
        match self {
            ContactChannel::Email => ("email", IdentityKind::Email, Channel::Email),
            ContactChannel::Sms => ("sms", IdentityKind::Phone, Channel::Sms),
            ContactChannel::Phone => ("phone", IdentityKind::Phone, Channel::CallCenter),
            ContactChannel::Push => ("push", IdentityKind::DeviceId, Channel::Push),
        }
    }
}

/// The evidence for one contact channel.
#[derive(Debug, Clone)]
pub struct ChannelEvidence {
    pub channel: ContactChannel,
    /// The person has an identity this channel reaches.
    pub reachable: bool,
    /// `None`: consented (`marketing` for the channel in force); else the refusal reason (`NOT_GIVEN`, `DENIED`,
    /// `WITHDRAWN`, `EXPIRED`).
    pub consent_refusal: Option<&'static str>,
    pub engagements: u64,
    pub last_engagement_at: Option<DateTime<Utc>>,
}

impl ChannelEvidence {
    pub fn eligible(&self) -> bool {
        self.reachable && self.consent_refusal.is_none()
    }
}

#[derive(Debug, Clone)]
pub struct PreferredChannel {
    /// `None` when no channel is both reachable and consented.
    pub channel: Option<ContactChannel>,
    pub evidence: Vec<ChannelEvidence>,
}

/// The customer's preferred contact channel with the evidence. Needs `touchpoints:read`; logged.
pub async fn preferred_channel(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    customer_id: Uuid,
) -> ApiResult<Permitted<PreferredChannel>> {
    caller.require(Scope::TouchpointsRead)?;
    let permit = session.decide_derived(caller, svc, customer_id).await?;
    let state = session.state(caller, svc, customer_id).await?;
    let now = Utc::now();
    let tenant = caller.tenant();
    let identities =
        customers::identities_of(tenant, svc, &[customer_id]).await?.remove(&customer_id).unwrap_or_default();
    let engaged: Vec<(String, i64, Option<DateTime<Utc>>)> = touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::CustomerId.eq(customer_id))
        .filter(touchpoint::Column::OccurredAt.gte(now - Duration::days(ENGAGEMENT_DAYS)))
        .filter(
            touchpoint::Column::Kind
                .is_not_in([TouchpointType::EmailSent.as_str(), TouchpointType::AdImpression.as_str()]),
        )
        .select_only()
        .column(touchpoint::Column::Channel)
        .column_as(touchpoint::Column::Id.count(), "engagements")
        .column_as(touchpoint::Column::OccurredAt.max(), "last_at")
        .group_by(touchpoint::Column::Channel)
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    let evidence: Vec<ChannelEvidence> = ContactChannel::ALL
        .iter()
        .map(|channel| {
            let (consent_channel, kind, touch_channel) = channel.parts();
            let reachable = identities.iter().any(|i| i.identity.kind() == kind);
            let decision = policy::in_force(&state.consents, ConsentPurpose::Marketing, Some(consent_channel), now);
            let consent_refusal = policy::refusal(decision, now);
            let (engagements, last_engagement_at) = engaged
                .iter()
                .find(|(c, _, _)| c == touch_channel.as_str())
                .map_or((0, None), |(_, n, at)| (*n as u64, *at));
            ChannelEvidence { channel: *channel, reachable, consent_refusal, engagements, last_engagement_at }
        })
        .collect();
    let channel = evidence
        .iter()
        .enumerate()
        .filter(|(_, e)| e.eligible())
        .max_by(|(i, a), (j, b)| {
            a.engagements.cmp(&b.engagements).then(a.last_engagement_at.cmp(&b.last_engagement_at)).then(j.cmp(i))
        })
        .map(|(_, e)| e.channel);
    svc.access_log.record(caller, [customer_id], AccessCategory::Scores);
    Ok(permit.serve(PreferredChannel { channel, evidence }))
}
