//! Views of touchpoints, journeys and consent decisions.
use async_graphql::{ComplexObject, Context, Json, Object, OutputType, SimpleObject, connection::ConnectionNameType};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::request;
use crate::{
    consent::{ConsentEvent, ConsentStatus, Permit, Permitted},
    error::GqlResult,
    privacy::Disclosure,
    touchpoints::{
        Channel, FeedbackMetric, JourneyStage, Touchpoint, TouchpointType,
        timeline::{self, Journey, TouchpointFilter},
    },
};

/// A touchpoint is personalization data: its view is made only from a `Permitted` touchpoint.
pub struct TouchpointView(Touchpoint);

impl From<Permitted<Touchpoint>> for TouchpointView {
    fn from(permitted: Permitted<Touchpoint>) -> Self {
        TouchpointView(permitted.into_value())
    }
}

/// One interaction of a customer with the brand.
#[Object(name = "Touchpoint")]
impl TouchpointView {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn customer_id(&self) -> Uuid {
        self.0.customer_id
    }
    async fn channel(&self) -> Channel {
        self.0.channel
    }
    #[graphql(name = "type")]
    async fn kind(&self) -> TouchpointType {
        self.0.kind
    }
    async fn stage(&self) -> JourneyStage {
        self.0.stage
    }
    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }
    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at
    }
    async fn source(&self) -> &str {
        &self.0.source
    }
    async fn idempotency_key(&self) -> &str {
        &self.0.idempotency_key
    }
    /// Free-form; without `pii:read`, personal keys, e-mail addresses and phone numbers come masked.
    async fn properties(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Json<serde_json::Value>>> {
        let rc = request(ctx)?;
        Ok(self.0.properties.as_ref().map(|p| Json(Disclosure::for_request(&rc.caller, &rc.services).free_form(p))))
    }
    /// Monetary value (purchases, returns).
    async fn value(&self) -> Option<f64> {
        self.0.value
    }
    async fn currency(&self) -> Option<&str> {
        self.0.currency.as_deref()
    }
    async fn feedback(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<FeedbackView>> {
        let rc = request(ctx)?;
        let disclosure = Disclosure::for_request(&rc.caller, &rc.services);
        Ok(self.0.feedback.as_ref().map(|f| FeedbackView {
            metric: f.metric,
            score: i32::from(f.score),
            verbatim: f.verbatim.as_deref().map(|v| disclosure.free_text(v)),
        }))
    }
}

/// A survey answer: NPS 0–10, CSAT 1–5, CES 1–7.
#[derive(SimpleObject)]
#[graphql(name = "Feedback")]
pub struct FeedbackView {
    metric: FeedbackMetric,
    score: i32,
    /// The person's own words; without `pii:read`, e-mail addresses and phone numbers in it come masked.
    verbatim: Option<String>,
}

/// Extra fields of a customer's timeline.
pub struct TimelineFields {
    pub permit: Permit,
    pub filter: TouchpointFilter,
}

#[Object]
impl TimelineFields {
    /// How many touchpoints match the filter. Counted only when asked for.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let rc = request(ctx)?;
        let n = timeline::count(rc.caller.tenant(), &rc.services, &self.permit, &self.filter).await.gql()?;
        Ok(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

pub struct TimelineName;
impl ConnectionNameType for TimelineName {
    fn type_name<T: OutputType>() -> String {
        "TimelineConnection".into()
    }
}

/// Extra fields of the cross-customer feed.
#[derive(SimpleObject)]
pub struct FeedFields {
    /// Touchpoints on this page withheld because their customer has not consented to the caller's purpose
    /// (or restricted processing). Never silently dropped: counted here.
    pub excluded_count: i32,
    /// Resume from here even when every touchpoint of this page was withheld.
    pub resume_cursor: Option<String>,
}

pub struct FeedName;
impl ConnectionNameType for FeedName {
    fn type_name<T: OutputType>() -> String {
        "TouchpointFeedConnection".into()
    }
}

/// Where the customer is in the journey, stage by stage.
pub struct JourneyView(Journey);

impl From<Permitted<Journey>> for JourneyView {
    fn from(permitted: Permitted<Journey>) -> Self {
        JourneyView(permitted.into_value())
    }
}

#[Object(name = "Journey")]
impl JourneyView {
    /// The stage of the latest touchpoint.
    async fn current_stage(&self) -> Option<JourneyStage> {
        self.0.current_stage
    }
    async fn stages(&self) -> Vec<StageView> {
        self.0
            .stages
            .iter()
            .map(|s| StageView {
                stage: s.stage,
                first_at: s.first_at,
                last_at: s.last_at,
                count: s.count,
                channels: s
                    .channels
                    .iter()
                    .map(|(channel, count)| ChannelCount { channel: *channel, count: *count })
                    .collect(),
            })
            .collect()
    }
}

#[derive(SimpleObject)]
#[graphql(name = "JourneyStageSummary")]
pub struct StageView {
    stage: JourneyStage,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    count: i64,
    channels: Vec<ChannelCount>,
}

#[derive(SimpleObject)]
pub struct ChannelCount {
    channel: Channel,
    count: i64,
}

/// A consent decision (an entry of the ledger, or the one in force).
#[derive(SimpleObject)]
#[graphql(name = "Consent", complex)]
pub struct ConsentView {
    id: Uuid,
    /// `personalization`, `marketing`, `analytics`, `profiling` or `sharing` (the channel apart).
    purpose: String,
    /// Absent: the decision covers every channel of the purpose.
    channel: Option<String>,
    status: ConsentStatus,
    captured_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    source: String,
    policy_version: Option<String>,
    legal_basis: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    evidence: Option<Json<serde_json::Value>>,
}

#[ComplexObject]
impl ConsentView {
    /// Granted and not expired now.
    async fn effective(&self) -> bool {
        self.status == ConsentStatus::Granted && self.expires_at.is_none_or(|e| e > Utc::now())
    }
}

impl From<ConsentEvent> for ConsentView {
    fn from(e: ConsentEvent) -> Self {
        ConsentView {
            id: e.id,
            purpose: e.purpose.as_str().to_owned(),
            channel: e.channel,
            status: e.status,
            captured_at: e.captured_at,
            recorded_at: e.recorded_at,
            source: e.source,
            policy_version: e.policy_version,
            legal_basis: e.legal_basis,
            expires_at: e.expires_at,
            evidence: e.evidence.map(Json),
        }
    }
}
