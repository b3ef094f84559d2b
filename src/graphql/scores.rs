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
                band: Some(if *risk < 0.3 {
                    ChurnBand::Low
                } else if *risk <= 0.7 {
                    ChurnBand::Medium
                } else {
                    ChurnBand::High
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
