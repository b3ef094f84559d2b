//! Touchpoint and consent resolvers: ingestion, the feed, consent decisions and restriction.
use async_graphql::{
    Context, Enum, InputObject, Json, Object, SimpleObject,
    connection::{Connection, Edge, EmptyFields},
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    profiles::IdentityInput,
    request,
    touchpoint_views::{ConsentView, FeedFields, FeedName, TouchpointView},
};
use crate::{
    consent::{ConsentStatus, RecordConsent, ledger},
    error::{ApiError, GqlResult},
    pagination::{PageRequest, decode_feed_cursor, encode_feed_cursor},
    privacy::restriction,
    touchpoints::{
        Channel, FeedbackMetric, ItemOutcome, JourneyStage, TouchpointInput as DomainTouchpointInput, TouchpointType,
        ingest::FeedbackInput as DomainFeedbackInput,
        record_touchpoints,
        timeline::{self, TouchpointFilter},
    },
};

/// Narrows timelines and the feed. Lists are alternatives (any of); fields combine (all of).
#[derive(InputObject, Default, Clone)]
pub struct TouchpointFilterInput {
    pub channels: Option<Vec<Channel>>,
    pub types: Option<Vec<TouchpointType>>,
    pub stages: Option<Vec<JourneyStage>>,
    /// Occurred at or after.
    pub from: Option<DateTime<Utc>>,
    /// Occurred before.
    pub to: Option<DateTime<Utc>>,
    /// Received at or after.
    pub received_since: Option<DateTime<Utc>>,
}

impl From<TouchpointFilterInput> for TouchpointFilter {
    fn from(f: TouchpointFilterInput) -> Self {
        TouchpointFilter {
            channels: f.channels.unwrap_or_default(),
            types: f.types.unwrap_or_default(),
            stages: f.stages.unwrap_or_default(),
            from: f.from,
            to: f.to,
            received_since: f.received_since,
        }
    }
}

#[derive(Default)]
pub struct TouchpointsQuery;

#[Object]
impl TouchpointsQuery {
    /// Touchpoints across customers in commit order, for personalization engines: resume from `after`, and nothing
    /// committed is skipped or served twice.
    /// Customers who have not consented to the caller's purpose are left out and counted in `excludedCount`.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn touchpoints(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
        filter: Option<TouchpointFilterInput>,
    ) -> async_graphql::Result<Connection<String, TouchpointView, FeedFields, EmptyFields, FeedName>> {
        let rc = request(ctx)?;
        let page = PageRequest::parse_with(first, after.as_deref(), decode_feed_cursor).gql()?;
        let filter: TouchpointFilter = filter.unwrap_or_default().into();
        let feed = timeline::feed(&rc.caller, &rc.services, &filter, page).await.gql()?;
        let mut connection = Connection::with_additional_fields(
            feed.page.has_previous_page,
            feed.page.has_next_page,
            FeedFields {
                excluded_count: i32::try_from(feed.excluded).unwrap_or(i32::MAX),
                resume_cursor: feed.resume_after.map(encode_feed_cursor),
            },
        );
        connection.edges.extend(feed.page.items.into_iter().map(|item| {
            let at = item.value().0;
            Edge::new(encode_feed_cursor(at), TouchpointView::from(item.map(|(_, tp)| tp)))
        }));
        Ok(connection)
    }
}

#[derive(InputObject)]
pub struct FeedbackInput {
    metric: FeedbackMetric,
    /// NPS 0–10, CSAT 1–5, CES 1–7.
    score: i32,
    verbatim: Option<String>,
    /// The touchpoint the answer rates (a support call, a delivery) of the same customer: CX metrics group the
    /// answer under that touchpoint's type.
    about_touchpoint_id: Option<Uuid>,
}

/// One touchpoint to record. Name the customer by `customerId` or by `identities` (resolved, creating the
/// customer when none matches).
#[derive(InputObject)]
pub struct TouchpointInput {
    customer_id: Option<Uuid>,
    identities: Option<Vec<IdentityInput>>,
    channel: Channel,
    #[graphql(name = "type")]
    kind: TouchpointType,
    /// Derived from type and channel when absent.
    stage: Option<JourneyStage>,
    occurred_at: DateTime<Utc>,
    source: String,
    /// Unique per tenant: a replay with the same key records nothing new.
    idempotency_key: String,
    properties: Option<Json<serde_json::Value>>,
    value: Option<f64>,
    currency: Option<String>,
    feedback: Option<FeedbackInput>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ItemStatus {
    Created,
    Duplicate,
    Rejected,
    /// An identity belongs to an erased person: dropped, counted, never turned back into a person.
    Suppressed,
}

/// Why an item was rejected.
#[derive(SimpleObject)]
pub struct ItemError {
    code: String,
    message: String,
    field: Option<String>,
}

#[derive(SimpleObject)]
pub struct TouchpointResult {
    /// Position in the request.
    index: i32,
    status: ItemStatus,
    touchpoint_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    error: Option<ItemError>,
}

#[derive(SimpleObject)]
pub struct RecordTouchpointsPayload {
    results: Vec<TouchpointResult>,
    created: i32,
    duplicates: i32,
    rejected: i32,
    suppressed: i32,
}

pub(crate) fn item_error(err: &ApiError) -> ItemError {
    if let ApiError::Internal(cause) = err {
        tracing::error!(error = ?cause, "touchpoint item failed");
    }
    let field = match err {
        ApiError::Validation { field, .. } => Some(field.clone()),
        _ => None,
    };
    ItemError { code: err.code().as_str().to_owned(), message: err.to_string(), field }
}

#[derive(Default)]
pub struct TouchpointsMutation;

#[Object]
impl TouchpointsMutation {
    /// Records up to 5,000 touchpoints. Each item succeeds or fails on its own; replays are harmless.
    /// Needs `touchpoints:write`.
    async fn record_touchpoints(
        &self,
        ctx: &Context<'_>,
        touchpoints: Vec<TouchpointInput>,
    ) -> async_graphql::Result<RecordTouchpointsPayload> {
        let rc = request(ctx)?;
        let items = touchpoints
            .into_iter()
            .map(|t| DomainTouchpointInput {
                customer_id: t.customer_id,
                identities: t.identities.unwrap_or_default().into_iter().map(Into::into).collect(),
                channel: t.channel,
                kind: t.kind,
                stage: t.stage,
                occurred_at: t.occurred_at,
                source: t.source,
                idempotency_key: t.idempotency_key,
                properties: t.properties.map(|j| j.0),
                value: t.value,
                currency: t.currency,
                feedback: t.feedback.map(|f| DomainFeedbackInput {
                    metric: f.metric,
                    score: f.score,
                    verbatim: f.verbatim,
                    about_touchpoint_id: f.about_touchpoint_id,
                }),
                consents: Vec::new(),
                consent_context: None,
            })
            .collect();
        let outcomes = record_touchpoints(&rc.caller, &rc.services, items).await.gql()?;
        let mut payload =
            RecordTouchpointsPayload { results: Vec::new(), created: 0, duplicates: 0, rejected: 0, suppressed: 0 };
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let (status, touchpoint, error) = match outcome {
                ItemOutcome::Created(tp) => {
                    payload.created += 1;
                    (ItemStatus::Created, Some(tp), None)
                }
                ItemOutcome::Duplicate(tp) => {
                    payload.duplicates += 1;
                    (ItemStatus::Duplicate, Some(tp), None)
                }
                ItemOutcome::Rejected(err) => {
                    payload.rejected += 1;
                    (ItemStatus::Rejected, None, Some(item_error(&err)))
                }
                ItemOutcome::Suppressed => {
                    payload.suppressed += 1;
                    (ItemStatus::Suppressed, None, None)
                }
            };
            payload.results.push(TouchpointResult {
                index,
                status,
                touchpoint_id: touchpoint.as_ref().map(|tp| tp.id),
                customer_id: touchpoint.as_ref().map(|tp| tp.customer_id),
                error,
            });
        }
        Ok(payload)
    }
}

#[derive(InputObject)]
pub struct RecordConsentInput {
    customer_id: Uuid,
    /// personalization, marketing, analytics, profiling, sharing, or a purpose of the tenant's own; `marketing:email`
    /// stands for purpose `marketing` with channel `email`.
    purpose: String,
    /// For channel-specific decisions (marketing by email, SMS, push, phone). Absent: every channel.
    channel: Option<String>,
    status: ConsentStatus,
    /// When the person decided (defaults to now).
    captured_at: Option<DateTime<Utc>>,
    /// Where it was captured: a channel or system (for example `web`, `store`, `call_center`).
    source: String,
    policy_version: Option<String>,
    /// consent, contract, legal_obligation, vital_interests, public_task or legitimate_interests.
    legal_basis: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    /// Proof of the decision (form id, checkbox text, recording reference).
    evidence: Option<Json<serde_json::Value>>,
}

#[derive(Default)]
pub struct ConsentMutation;

#[Object]
impl ConsentMutation {
    /// Appends a consent decision to the customer's ledger; it applies to the very next read. Needs `consent:write`.
    async fn record_consent(&self, ctx: &Context<'_>, input: RecordConsentInput) -> async_graphql::Result<ConsentView> {
        let rc = request(ctx)?;
        let event = ledger::record_consent(
            &rc.caller,
            &rc.services,
            RecordConsent {
                customer_id: input.customer_id,
                purpose: input.purpose,
                channel: input.channel,
                status: input.status,
                captured_at: input.captured_at,
                source: input.source,
                policy_version: input.policy_version,
                legal_basis: input.legal_basis,
                expires_at: input.expires_at,
                evidence: input.evidence.map(|j| j.0),
            },
        )
        .await
        .gql()?;
        Ok(event.into())
    }

    /// Restricts processing (GDPR art. 18): the customer is kept but served to no purpose except
    /// `privacy_admin`. Needs `privacy:admin`. Answers `true` once the customer's processing is restricted
    /// (also when it already was); failures are errors, never `false`.
    async fn restrict_processing(&self, ctx: &Context<'_>, customer_id: Uuid) -> async_graphql::Result<bool> {
        let rc = request(ctx)?;
        restriction::set_restriction(&rc.caller, &rc.services, customer_id, true).await.gql()?;
        Ok(true)
    }

    /// Lifts a restriction of processing. Needs `privacy:admin`. Answers `true` once the customer's processing is
    /// no longer restricted (also when it was not); failures are errors, never `false`.
    async fn lift_restriction(&self, ctx: &Context<'_>, customer_id: Uuid) -> async_graphql::Result<bool> {
        let rc = request(ctx)?;
        restriction::set_restriction(&rc.caller, &rc.services, customer_id, false).await.gql()?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct TouchpointsSubscription;

#[async_graphql::Subscription]
impl TouchpointsSubscription {
    /// Touchpoints of the caller's tenant as they are recorded, for personalization engines. Customers who have
    /// not consented to the caller's purpose are not streamed. Needs `touchpoints:read`.
    async fn touchpoint_recorded(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl futures_util::Stream<Item = TouchpointView> + use<>> {
        use futures_util::StreamExt;
        let rc = request(ctx)?;
        let stream = timeline::watch(&rc.caller, &rc.services).await.gql()?;
        Ok(stream.map(TouchpointView::from))
    }
}
