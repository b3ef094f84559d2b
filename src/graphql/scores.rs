//! Score resolvers: a customer's RFM, CLV and churn risk, and the mutation that fits the tenant's models. Thin: the
//! rules are in `crate::derived::scores` and `consent::policy::profiling_allowed`.
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{jobs::JobView, request};
use crate::{
    consent::Permitted,
    derived::scores::{self, CustomerScores, ExternalOutcome, ExternalScore},
    error::GqlResult,
    jobs::{self, JobKind},
    scores::{clv::Refusal, rfm::Segment},
};

/// Why a score was not computed.
#[derive(SimpleObject)]
pub struct ScoreRefusal {
    /// `NOT_FITTED`, `TOO_FEW_CUSTOMERS`, `FIT_FAILED`, `NO_PURCHASES`, `ONE_TIME_BUYER`, `INVALID_INPUT`, `NUMERICAL`.
    code: String,
    message: String,
}

fn refusal(r: &Refusal) -> ScoreRefusal {
    ScoreRefusal { code: r.code().to_owned(), message: r.to_string() }
}

/// The named RFM segments (R × the mean of F and M).
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum RfmSegment {
    Champions,
    Loyal,
    PotentialLoyalist,
    NewCustomers,
    Promising,
    NeedAttention,
    AboutToSleep,
    AtRisk,
    CannotLoseThem,
    Hibernating,
    Lost,
}

impl From<Segment> for RfmSegment {
    fn from(s: Segment) -> Self {
        match s {
            Segment::Champions => RfmSegment::Champions,
            Segment::Loyal => RfmSegment::Loyal,
            Segment::PotentialLoyalist => RfmSegment::PotentialLoyalist,
            Segment::NewCustomers => RfmSegment::NewCustomers,
            Segment::Promising => RfmSegment::Promising,
            Segment::NeedAttention => RfmSegment::NeedAttention,
            Segment::AboutToSleep => RfmSegment::AboutToSleep,
            Segment::AtRisk => RfmSegment::AtRisk,
            Segment::CannotLoseThem => RfmSegment::CannotLoseThem,
            Segment::Hibernating => RfmSegment::Hibernating,
            Segment::Lost => RfmSegment::Lost,
        }
    }
}

/// Recency, frequency and monetary value, each scored 1–5 by the tenant's current quintiles (recency reversed: the
/// most recent fifth scores 5).
#[derive(SimpleObject)]
pub struct Rfm {
    /// Whole days since the last purchase, today.
    recency_days: f64,
    /// Purchases.
    frequency: u64,
    /// Mean order value.
    monetary: f64,
    recency_score: u8,
    frequency_score: u8,
    monetary_score: u8,
    /// The three scores as digits, e.g. `545`.
    code: String,
    segment: RfmSegment,
    /// When the quintiles were computed (refreshed every two minutes).
    breakpoints_at: DateTime<Utc>,
}

/// Customer lifetime value over the horizon, from the tenant's BG/NBD and Gamma-Gamma models.
#[derive(SimpleObject)]
pub struct Clv {
    /// Discounted value over `horizonMonths` (1 % a month); `null` with `refusal` when not computed.
    value: Option<f64>,
    /// Expected purchases over the horizon.
    expected_purchases: Option<f64>,
    /// Expected average order value (Gamma-Gamma).
    expected_order_value: Option<f64>,
    /// P(alive) today.
    probability_alive: Option<f64>,
    horizon_months: u32,
    /// The version of the fitted models used.
    model_version: Option<String>,
    model_fitted_at: Option<DateTime<Utc>>,
    refusal: Option<ScoreRefusal>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ChurnBand {
    /// Churn risk under 0.3.
    Low,
    /// 0.3 to 0.7.
    Medium,
    /// Over 0.7.
    High,
}

/// 1 − P(alive) today.
#[derive(SimpleObject)]
pub struct ChurnRisk {
    value: Option<f64>,
    band: Option<ChurnBand>,
    probability_alive: Option<f64>,
    refusal: Option<ScoreRefusal>,
}

/// A score the tenant's own model wrote.
#[derive(SimpleObject)]
#[graphql(name = "ExternalScore")]
pub struct ExternalScoreView {
    name: String,
    value: f64,
    model: Option<String>,
    computed_at: DateTime<Utc>,
}

/// One score to store: one per customer and name (a later write replaces it).
#[derive(InputObject)]
pub struct ExternalScoreInput {
    customer_id: Uuid,
    /// 1–64 of a–z, 0–9, `_`, `-`, `.` (e.g. `propensity.buy_30d`).
    name: String,
    value: f64,
    /// The model (and version) that computed it.
    model: Option<String>,
    /// When the model computed it (default: now).
    computed_at: Option<DateTime<Utc>>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ExternalScoreStatus {
    Stored,
    /// The customer may not be profiled: nothing stored (`reason`).
    Refused,
    Rejected,
}

#[derive(SimpleObject)]
pub struct ExternalScoreResult {
    index: i32,
    status: ExternalScoreStatus,
    /// For `REFUSED`: `PROFILING_REFUSED` or `PROCESSING_RESTRICTED`.
    reason: Option<String>,
    error: Option<super::touchpoints::ItemError>,
}

/// A customer's scores, computed at read time (exact today).
pub struct CustomerScoresView(pub Permitted<CustomerScores>);

#[Object(name = "CustomerScores")]
impl CustomerScoresView {
    /// `null` when the customer has no purchases or the tenant none to compare with.
    async fn rfm(&self) -> Option<Rfm> {
        let s = self.0.value();
        s.rfm.as_ref().map(|r| Rfm {
            recency_days: r.values.recency_days,
            frequency: r.values.frequency,
            monetary: r.values.monetary,
            recency_score: r.r,
            frequency_score: r.f,
            monetary_score: r.m,
            code: r.code(),
            segment: r.segment.into(),
            breakpoints_at: s.breakpoints_at,
        })
    }

    async fn clv(&self) -> Clv {
        let s = self.0.value();
        match &s.value {
            Ok(score) => Clv {
                value: Some(score.clv),
                expected_purchases: Some(score.expected_purchases),
                expected_order_value: Some(score.expected_order_value),
                probability_alive: Some(score.p_alive),
                horizon_months: s.options.months,
                model_version: score.purchase_model.version.clone(),
                model_fitted_at: score.purchase_model.fitted_at,
                refusal: None,
            },
            Err(r) => Clv {
                value: None,
                expected_purchases: None,
                expected_order_value: None,
                probability_alive: None,
                horizon_months: s.options.months,
                model_version: None,
                model_fitted_at: None,
                refusal: Some(refusal(r)),
            },
        }
    }

    /// Scores the tenant's own models wrote (`setExternalScores`), by name.
    async fn external(&self) -> Vec<ExternalScoreView> {
        self.0
            .value()
            .external
            .iter()
            .map(|e| ExternalScoreView {
                name: e.name.clone(),
                value: e.value,
                model: e.model.clone(),
                computed_at: e.computed_at,
            })
            .collect()
    }

    async fn churn_risk(&self) -> ChurnRisk {
        match &self.0.value().churn {
            Ok((risk, alive)) => ChurnRisk {
                value: Some(*risk),
                band: Some(match crate::scores::clv::ChurnBand::of(*risk) {
                    crate::scores::clv::ChurnBand::Low => ChurnBand::Low,
                    crate::scores::clv::ChurnBand::Medium => ChurnBand::Medium,
                    crate::scores::clv::ChurnBand::High => ChurnBand::High,
                }),
                probability_alive: Some(*alive),
                refusal: None,
            },
            Err(r) => ChurnRisk { value: None, band: None, probability_alive: None, refusal: Some(refusal(r)) },
        }
    }
}

#[derive(Default)]
pub struct ScoresMutation;

#[Object]
impl ScoresMutation {
    /// Fits the tenant's purchase (BG/NBD) and spend (Gamma-Gamma) models on the purchase histories of the
    /// customers who may be profiled, as a job; `customer { scores { clv churnRisk } }` uses the latest fit. The
    /// job's result gives the parameters, or why a model was refused (`TOO_FEW_CUSTOMERS`: fewer than 50 customers
    /// or 10 repeat buyers). Needs `profiles:write`.
    async fn fit_score_model(&self, ctx: &Context<'_>) -> async_graphql::Result<JobView> {
        let rc = request(ctx)?;
        Ok(JobView(jobs::enqueue(&rc.caller, &rc.services, JobKind::FitScoreModel).await.gql()?))
    }

    /// Stores scores the tenant's own models computed (up to 1,000, in one transaction), served in
    /// `customer { scores { external } }` under the same rules as Kontakt's own: none is stored for a customer who
    /// may not be profiled (`REFUSED`), and a later denial or withdrawal of `profiling`, a restriction or a merge
    /// deletes them in its own transaction. Needs `profiles:write`.
    async fn set_external_scores(
        &self,
        ctx: &Context<'_>,
        scores: Vec<ExternalScoreInput>,
    ) -> async_graphql::Result<Vec<ExternalScoreResult>> {
        let rc = request(ctx)?;
        let now = Utc::now();
        let input = scores
            .into_iter()
            .map(|s| ExternalScore {
                customer_id: s.customer_id,
                name: s.name,
                value: s.value,
                model: s.model,
                computed_at: s.computed_at.unwrap_or(now),
            })
            .collect();
        let outcomes = scores::set_external(&rc.caller, &rc.services, input).await.gql()?;
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| {
                let (status, reason, error) = match outcome {
                    ExternalOutcome::Stored => (ExternalScoreStatus::Stored, None, None),
                    ExternalOutcome::Refused(reason) => (ExternalScoreStatus::Refused, Some(reason.to_owned()), None),
                    ExternalOutcome::Rejected(err) => {
                        (ExternalScoreStatus::Rejected, None, Some(super::touchpoints::item_error(&err)))
                    }
                };
                ExternalScoreResult { index: i as i32, status, reason, error }
            })
            .collect())
    }
}

/// A customer's affinity to one value of a dimension.
#[derive(SimpleObject)]
#[graphql(name = "Affinity")]
pub struct AffinityView {
    value: String,
    /// Share of the decayed weight among the dimension's values, 0–1.
    score: f64,
    /// The decayed weight (a purchase 3, a review or click 2, anything else 1; halved every `halfLifeDays`).
    weight: f64,
    /// Touchpoints behind it.
    touchpoints: u64,
    last_seen_at: DateTime<Utc>,
}

impl AffinityView {
    pub fn list(affinities: Permitted<Vec<crate::derived::engagement::Affinity>>) -> Vec<AffinityView> {
        affinities
            .into_value()
            .into_iter()
            .map(|a| AffinityView {
                value: a.value,
                score: a.score,
                weight: a.weight,
                touchpoints: a.touchpoints,
                last_seen_at: a.last_seen_at,
            })
            .collect()
    }
}

/// A channel Kontakt can contact a person on.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ContactChannel {
    Email,
    Sms,
    Phone,
    Push,
}

impl From<crate::derived::engagement::ContactChannel> for ContactChannel {
    fn from(c: crate::derived::engagement::ContactChannel) -> Self {
        use crate::derived::engagement::ContactChannel as C;
        match c {
            C::Email => ContactChannel::Email,
            C::Sms => ContactChannel::Sms,
            C::Phone => ContactChannel::Phone,
            C::Push => ContactChannel::Push,
        }
    }
}

/// Why a channel is or is not the preferred one.
#[derive(SimpleObject)]
pub struct ChannelEvidence {
    channel: ContactChannel,
    /// The person has an identity this channel reaches (e-mail; phone for SMS and phone; a device for push).
    reachable: bool,
    /// `marketing` for this channel is in force.
    consented: bool,
    /// When not consented: `NOT_GIVEN`, `DENIED`, `WITHDRAWN` or `EXPIRED`.
    consent_reason: Option<String>,
    /// Touchpoints on the channel in the last 180 days (sends and impressions aside).
    engagements: u64,
    last_engagement_at: Option<DateTime<Utc>>,
    /// Reachable and consented.
    eligible: bool,
}

/// The channel to contact the person on, and the evidence for every channel.
#[derive(SimpleObject)]
#[graphql(name = "PreferredChannel")]
pub struct PreferredChannelView {
    /// The eligible channel with the most engagement (then the latest); `null` when none is eligible.
    channel: Option<ContactChannel>,
    evidence: Vec<ChannelEvidence>,
}

impl From<Permitted<crate::derived::engagement::PreferredChannel>> for PreferredChannelView {
    fn from(p: Permitted<crate::derived::engagement::PreferredChannel>) -> Self {
        let p = p.into_value();
        PreferredChannelView {
            channel: p.channel.map(ContactChannel::from),
            evidence: p
                .evidence
                .iter()
                .map(|e| ChannelEvidence {
                    channel: e.channel.into(),
                    reachable: e.reachable,
                    consented: e.consent_refusal.is_none(),
                    consent_reason: e.consent_refusal.map(str::to_owned),
                    engagements: e.engagements,
                    last_engagement_at: e.last_engagement_at,
                    eligible: e.eligible(),
                })
                .collect(),
        }
    }
}

/// What a definition defines.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionKind {
    Segment,
    ComputedTrait,
}

impl From<DefinitionKind> for crate::derived::catalog::Kind {
    fn from(k: DefinitionKind) -> Self {
        match k {
            DefinitionKind::Segment => crate::derived::catalog::Kind::Segment,
            DefinitionKind::ComputedTrait => crate::derived::catalog::Kind::ComputedTrait,
        }
    }
}

/// One version of a computed trait or segment definition.
#[derive(SimpleObject)]
#[graphql(name = "Definition")]
pub struct DefinitionView {
    id: Uuid,
    key: String,
    kind: DefinitionKind,
    /// The consent purpose it serves: only callers acting for it are served its values, and only for customers who
    /// consented to it.
    purpose: String,
    version: i32,
    /// The condition (segment) or aggregation (computed trait), as written.
    body: async_graphql::Json<serde_json::Value>,
    created_at: DateTime<Utc>,
    created_by: String,
    /// When this version began to answer reads. Unset while it is backfilled (the `BACKFILL_DEFINITIONS` job, its
    /// progress in `jobs`): the previous version answers meanwhile.
    activated_at: Option<DateTime<Utc>>,
}

impl From<crate::derived::catalog::Definition> for DefinitionView {
    fn from(d: crate::derived::catalog::Definition) -> Self {
        DefinitionView {
            id: d.id,
            key: d.key,
            kind: match d.kind {
                crate::derived::catalog::Kind::Segment => DefinitionKind::Segment,
                crate::derived::catalog::Kind::ComputedTrait => DefinitionKind::ComputedTrait,
            },
            purpose: d.purpose.as_str().to_owned(),
            version: d.version,
            body: async_graphql::Json(d.body),
            created_at: d.created_at,
            created_by: d.created_by,
            activated_at: d.activated_at,
        }
    }
}

#[derive(InputObject)]
pub struct DefineSegmentInput {
    /// 1–64 of a–z, 0–9 and `_`.
    key: String,
    /// `personalization`, `marketing`, `analytics`, `profiling` or `sharing`.
    purpose: String,
    /// `{all|any: [...]}`, `{not: ...}`, `{hasIdentity: EMAIL}`, `{inSegment: key}`,
    /// `{latestFeedback: {metric, category}}`, or a comparison `{aggregate|trait|computedTrait, op, value}`.
    condition: async_graphql::Json<serde_json::Value>,
}

#[derive(InputObject)]
pub struct DefineComputedTraitInput {
    key: String,
    purpose: String,
    /// `{aggregate: COUNT|SUM|MIN|MAX|AVG|FIRST|FIRST_AT|LAST|LAST_AT|TOP|UNIQUE, of, filter: {types, channels,
    /// stages, properties}, window: {lastDays}|{between: {from, to}}|{olderThanDays}, k}`.
    aggregation: async_graphql::Json<serde_json::Value>,
}

/// A segment the customer is in now.
#[derive(SimpleObject)]
pub struct SegmentMembership {
    key: String,
    version: i32,
    purpose: String,
    /// When time alone would take the customer out (a window's edge passing a touchpoint); `null`: not by time.
    changes_at: Option<DateTime<Utc>>,
}

/// A computed trait's value now.
#[derive(SimpleObject)]
pub struct ComputedTraitValue {
    key: String,
    version: i32,
    purpose: String,
    value: async_graphql::Json<serde_json::Value>,
    changes_at: Option<DateTime<Utc>>,
}

pub fn segments_view(d: &Permitted<crate::derived::catalog::Derived>) -> Vec<SegmentMembership> {
    d.value()
        .segments
        .iter()
        .map(|(def, changes_at)| SegmentMembership {
            key: def.key.clone(),
            version: def.version,
            purpose: def.purpose.as_str().to_owned(),
            changes_at: *changes_at,
        })
        .collect()
}

pub fn traits_view(d: &Permitted<crate::derived::catalog::Derived>) -> Vec<ComputedTraitValue> {
    d.value()
        .traits
        .iter()
        .map(|(def, value, changes_at)| ComputedTraitValue {
            key: def.key.clone(),
            version: def.version,
            purpose: def.purpose.as_str().to_owned(),
            value: async_graphql::Json(value.clone()),
            changes_at: *changes_at,
        })
        .collect()
}

#[derive(SimpleObject)]
pub struct DefinitionExample {
    customer_id: Uuid,
    value: async_graphql::Json<serde_json::Value>,
}

/// What a definition would answer now over a sample of the tenant's most recent customers.
#[derive(SimpleObject)]
pub struct DefinitionPreview {
    sampled: u64,
    /// Matched (a segment) or given a value (a computed trait).
    matched: u64,
    /// Of those, the customers the caller's purpose may be served.
    visible: u64,
    examples: Vec<DefinitionExample>,
}

/// One page of a segment's members, found by examining customers in id order.
#[derive(SimpleObject)]
pub struct SegmentMembers {
    customer_ids: Vec<Uuid>,
    /// Members left out because the caller may not be served derived data about them.
    excluded_count: u64,
    /// Customers examined by this call (at most 5,000).
    scanned: u64,
    /// Pass as `after` to go on; `null` when every customer was examined.
    end_cursor: Option<String>,
    has_next_page: bool,
}

#[derive(Default)]
pub struct DefinitionsQuery;

#[Object]
impl DefinitionsQuery {
    /// The tenant's computed traits and segments, the latest version of each. Needs `profiles:read`.
    async fn definitions(
        &self,
        ctx: &Context<'_>,
        kind: Option<DefinitionKind>,
    ) -> async_graphql::Result<Vec<DefinitionView>> {
        let rc = request(ctx)?;
        let list = crate::derived::catalog::list(&rc.caller, &rc.services).await.gql()?;
        Ok(list
            .into_iter()
            .filter(|d| kind.is_none_or(|k| crate::derived::catalog::Kind::from(k) == d.kind))
            .map(DefinitionView::from)
            .collect())
    }

    /// Checks a definition as `defineSegment`/`defineComputedTrait` would and evaluates it over the `sample` most
    /// recently created customers, storing nothing. Needs `profiles:read`.
    async fn preview_definition(
        &self,
        ctx: &Context<'_>,
        kind: DefinitionKind,
        #[graphql(default = "preview")] key: String,
        body: async_graphql::Json<serde_json::Value>,
        #[graphql(default = 1000)] sample: i32,
    ) -> async_graphql::Result<DefinitionPreview> {
        let rc = request(ctx)?;
        let sample = usize::try_from(sample).unwrap_or(0);
        let p = crate::derived::catalog::preview(&rc.caller, &rc.services, kind.into(), &key, &body.0, sample)
            .await
            .gql()?;
        Ok(DefinitionPreview {
            sampled: p.sampled,
            matched: p.matched,
            visible: p.visible,
            examples: p
                .examples
                .into_iter()
                .map(|(customer_id, value)| DefinitionExample { customer_id, value: async_graphql::Json(value) })
                .collect(),
        })
    }

    /// The customers in segment `key` now, in id order, examining at most 5,000 customers per call; go on with
    /// `after: endCursor` while `hasNextPage`. The caller must act for the segment's purpose; members it may not be
    /// served are left out and counted. Needs `profiles:read`; the members served are logged.
    async fn segment_members(
        &self,
        ctx: &Context<'_>,
        key: String,
        #[graphql(default = 100)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<SegmentMembers> {
        let rc = request(ctx)?;
        let after = match after {
            None => None,
            Some(cursor) => Some(
                crate::pagination::decode_cursor(&cursor)
                    .ok_or_else(|| crate::error::ApiError::validation("after", "not a cursor this API gave"))
                    .gql()?,
            ),
        };
        let first = usize::try_from(first).unwrap_or(0);
        let m = crate::derived::catalog::members(&rc.caller, &rc.services, &key, first, after).await.gql()?;
        Ok(SegmentMembers {
            customer_ids: m.members,
            excluded_count: m.excluded,
            scanned: m.scanned,
            end_cursor: m.resume_after.map(crate::pagination::encode_cursor),
            has_next_page: m.resume_after.is_some(),
        })
    }
}

#[derive(Default)]
pub struct DefinitionsMutation;

#[Object]
impl DefinitionsMutation {
    /// Stores a new version of a segment (the first is version 1), checked against the tenant's other definitions:
    /// size, depth, references, cycles; a refusal names the place (`condition.all[1].aggregate.window`). A new key
    /// answers at once (values are computed when read). A new version of a key is backfilled first — every
    /// customer's stored membership computed, the changes announced on `derivedChanges` and webhooks with cause
    /// `DEFINITION_CHANGE` — while the previous version keeps answering; then it is activated (`activatedAt`).
    /// Needs `profiles:write`.
    async fn define_segment(
        &self,
        ctx: &Context<'_>,
        input: DefineSegmentInput,
    ) -> async_graphql::Result<DefinitionView> {
        let rc = request(ctx)?;
        let d = crate::derived::catalog::define(
            &rc.caller,
            &rc.services,
            crate::derived::catalog::Kind::Segment,
            &input.key,
            &input.purpose,
            input.condition.0,
        )
        .await
        .gql()?;
        Ok(d.into())
    }

    /// Stores a new version of a computed trait, as `defineSegment` does. Needs `profiles:write`.
    async fn define_computed_trait(
        &self,
        ctx: &Context<'_>,
        input: DefineComputedTraitInput,
    ) -> async_graphql::Result<DefinitionView> {
        let rc = request(ctx)?;
        let d = crate::derived::catalog::define(
            &rc.caller,
            &rc.services,
            crate::derived::catalog::Kind::ComputedTrait,
            &input.key,
            &input.purpose,
            input.aggregation.0,
        )
        .await
        .gql()?;
        Ok(d.into())
    }
}
