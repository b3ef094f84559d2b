//! CX resolvers: metrics with their uncertainty, the link to purchases and touchpoints, the tenant's CX settings,
//! and a customer's own answers. Thin: the rules are in `crate::cx` and `consent::policy::cx_counting`.
use async_graphql::{Context, Enum, InputObject, Object, Scalar, ScalarType, SimpleObject, Value};
use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::request;
use crate::{
    consent::{Permitted, policy::CxBasis},
    cx::{
        self, CxSettings,
        feedback::{Answer, CustomerFeedback},
        journeys,
        links::{self, EffectRow, RetentionRow},
        metrics::{self, Bucket, Cell, Dimension, MetricsRequest},
        stats::{self, Change, IntervalMethod, ScoreCounts, Summary},
    },
    error::GqlResult,
    privacy::Disclosure,
    touchpoints::{
        Channel, FeedbackMetric, JourneyStage, TouchpointType,
        stages::{self, PropertyCondition, StageRule},
    },
};

/// A calendar day, `YYYY-MM-DD` (UTC where it bounds a window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> async_graphql::InputValueResult<Self> {
        match &value {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| async_graphql::InputValueError::custom(format!("`{s}` is not a date (YYYY-MM-DD)"))),
            _ => Err(async_graphql::InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// Days from `from` to `to`, both included (UTC).
#[derive(InputObject)]
pub struct CxWindowInput {
    from: Date,
    to: Date,
}

/// What cells are cut by.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum CxDimension {
    Channel,
    Stage,
    /// The type of the touchpoint the answer rates (`feedback.aboutTouchpointId`), else `SURVEY_RESPONSE`.
    TouchpointType,
    Source,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum CxBucket {
    Day,
    /// ISO weeks, Monday to Sunday.
    Week,
    Month,
}

/// The group an answer falls in: NPS promoter (9–10), passive (7–8), detractor (0–6); CSAT satisfied (4–5),
/// neutral (3), dissatisfied (1–2); CES easy (5–7), neutral (4), difficult (1–3).
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackCategory {
    Promoter,
    Passive,
    Detractor,
    Satisfied,
    Neutral,
    Dissatisfied,
    Easy,
    Difficult,
}

fn category(metric: FeedbackMetric, group: usize) -> FeedbackCategory {
    use FeedbackCategory as C;
    match (metric, group) {
        (FeedbackMetric::Nps, 0) => C::Promoter,
        (FeedbackMetric::Nps, 1) => C::Passive,
        (FeedbackMetric::Nps, _) => C::Detractor,
        (FeedbackMetric::Csat, 0) => C::Satisfied,
        (FeedbackMetric::Csat, 1) => C::Neutral,
        (FeedbackMetric::Csat, _) => C::Dissatisfied,
        (FeedbackMetric::Ces, 0) => C::Easy,
        (FeedbackMetric::Ces, 1) => C::Neutral,
        (FeedbackMetric::Ces, _) => C::Difficult,
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "IntervalMethod")]
pub enum IntervalMethodView {
    /// NPS: ¾ added to promoters and detractors and 3 to n (Rocks 2016).
    AdjustedWald,
    /// Shares (CSAT, the CES share of 5–7, rates).
    Wilson,
    /// Means (CES): mean ± t · s/√n.
    T,
}

/// A confidence interval, in the value's units.
#[derive(SimpleObject)]
pub struct ConfidenceInterval {
    low: f64,
    high: f64,
    level: f64,
    method: IntervalMethodView,
}

#[derive(SimpleObject)]
pub struct CxCategoryCount {
    category: FeedbackCategory,
    answers: u64,
}

#[derive(SimpleObject)]
pub struct CxScoreCount {
    score: i32,
    answers: u64,
}

/// The change against the previous bucket (or window): a two-sided z-test on the difference.
#[derive(SimpleObject)]
pub struct CxChange {
    previous: f64,
    delta: f64,
    z: Option<f64>,
    p_value: Option<f64>,
    /// `pValue` below 1 − the confidence level.
    significant: bool,
}

fn change_view(change: Option<Change>, significant: bool) -> Option<CxChange> {
    change.map(|c| CxChange { previous: c.previous, delta: c.delta, z: c.z, p_value: c.p_value, significant })
}

fn interval_view(summary: &Summary, level: f64) -> Option<ConfidenceInterval> {
    summary.interval.map(|i| ConfidenceInterval {
        low: i.low,
        high: i.high,
        level,
        method: match i.method {
            IntervalMethod::AdjustedWald => IntervalMethodView::AdjustedWald,
            IntervalMethod::Wilson => IntervalMethodView::Wilson,
            IntervalMethod::T => IntervalMethodView::T,
        },
    })
}

fn categories(metric: FeedbackMetric, counts: &ScoreCounts) -> Vec<CxCategoryCount> {
    stats::groups(metric)
        .iter()
        .enumerate()
        .map(|(i, (from, to))| CxCategoryCount {
            category: category(metric, i),
            answers: counts.between(metric, *from, *to),
        })
        .collect()
}

/// One cell of a CX report: a bucket (or the whole window) and one combination of the dimensions grouped by.
pub struct CxCellView {
    metric: FeedbackMetric,
    level: f64,
    cell: Cell,
}

impl CxCellView {
    fn dimension(&self, d: Dimension) -> Option<&str> {
        self.cell.group.iter().find(|(dim, _)| *dim == d).map(|(_, v)| v.as_str())
    }
}

#[Object(name = "CxCell")]
impl CxCellView {
    /// The bucket's first day inside the window (`null` for a cell over the whole window).
    async fn bucket_start(&self) -> Option<Date> {
        self.cell.bucket.map(|b| Date(b.0))
    }

    /// The bucket's last day inside the window.
    async fn bucket_end(&self) -> Option<Date> {
        self.cell.bucket.map(|b| Date(b.1))
    }

    /// Set when grouped by `CHANNEL`.
    async fn channel(&self) -> Option<Channel> {
        self.dimension(Dimension::Channel).and_then(Channel::parse)
    }

    async fn stage(&self) -> Option<JourneyStage> {
        self.dimension(Dimension::Stage).and_then(JourneyStage::parse)
    }

    async fn touchpoint_type(&self) -> Option<TouchpointType> {
        self.dimension(Dimension::TouchpointType).and_then(TouchpointType::parse)
    }

    async fn source(&self) -> Option<&str> {
        self.dimension(Dimension::Source)
    }

    /// Counted answers in the cell (scored answers only: the denominator of every share).
    async fn answers(&self) -> u64 {
        self.cell.counts.total()
    }

    /// Answers per category, best first. Shown even when the value is suppressed.
    async fn categories(&self) -> Vec<CxCategoryCount> {
        categories(self.metric, &self.cell.counts)
    }

    /// Answers per score, lowest first.
    async fn scores(&self) -> Vec<CxScoreCount> {
        let (low, _) = self.metric.range();
        self.cell
            .counts
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| CxScoreCount { score: low + i as i32, answers: *n })
            .collect()
    }

    /// NPS −100..100; CSAT % of 4–5; CES mean 1–7. `null` when suppressed.
    async fn value(&self) -> Option<f64> {
        self.cell.summary.as_ref().map(|s| s.value)
    }

    /// The mean score.
    async fn mean(&self) -> Option<f64> {
        self.cell.summary.as_ref().map(|s| s.mean)
    }

    /// The percentage of the best category (promoters, satisfied, easy).
    async fn share(&self) -> Option<f64> {
        self.cell.summary.as_ref().map(|s| s.share)
    }

    async fn interval(&self) -> Option<ConfidenceInterval> {
        self.cell.summary.as_ref().and_then(|s| interval_view(s, self.level))
    }

    /// Half the interval's width, in the value's units.
    async fn margin_of_error(&self) -> Option<f64> {
        self.cell.summary.as_ref().and_then(|s| s.margin)
    }

    /// Fewer answers than the tenant's `minAnswers`: counts are shown, figures are not.
    async fn suppressed(&self) -> bool {
        self.cell.suppressed
    }

    /// The margin of error, in percentage points (NPS points; the CSAT share; the CES share of 5–7), is above the
    /// tenant's `lowConfidenceMargin`.
    async fn low_confidence(&self) -> bool {
        self.cell.low_confidence
    }

    /// Against the same group's previous bucket (for the whole window: the window of the same length before it).
    async fn change(&self) -> Option<CxChange> {
        change_view(self.cell.change, self.cell.significant)
    }
}

/// A CX metric over a window, per cell, with the window's total.
pub struct CxMetricsView(metrics::Report);

#[Object(name = "CxMetrics")]
impl CxMetricsView {
    async fn metric(&self) -> FeedbackMetric {
        self.0.request.metric
    }

    async fn from(&self) -> Date {
        Date(self.0.request.from)
    }

    async fn to(&self) -> Date {
        Date(self.0.request.to)
    }

    async fn confidence_level(&self) -> f64 {
        self.0.request.level
    }

    /// The tenant's minimum answers per shown value.
    async fn min_answers(&self) -> u32 {
        self.0.settings.min_answers
    }

    /// One per bucket and group with answers, in bucket order, then by the groups' values. At most 10,000.
    async fn cells(&self) -> Vec<CxCellView> {
        let (metric, level) = (self.0.request.metric, self.0.request.level);
        self.0.cells.iter().map(|cell| CxCellView { metric, level, cell: cell.clone() }).collect()
    }

    /// The whole window, every group together.
    async fn total(&self) -> CxCellView {
        CxCellView { metric: self.0.request.metric, level: self.0.request.level, cell: self.0.total.clone() }
    }
}

#[derive(SimpleObject)]
pub struct Money {
    currency: String,
    amount: f64,
}

/// What customers of one answer category did in the days after answering.
#[derive(SimpleObject)]
pub struct CxRetentionRow {
    category: FeedbackCategory,
    answers: u64,
    customers: u64,
    /// Answers followed by at least one purchase within the horizon (0 when suppressed).
    repeat_purchases: u64,
    /// `repeatPurchases / answers`, a fraction.
    repeat_purchase_rate: Option<f64>,
    /// Wilson interval of the rate.
    repeat_purchase_interval: Option<ConfidenceInterval>,
    /// Mean revenue per answer within the horizon, per currency.
    revenue_per_answer: Option<Vec<Money>>,
    suppressed: bool,
}

#[derive(SimpleObject)]
pub struct CxRetention {
    metric: FeedbackMetric,
    horizon_days: u32,
    /// Answers in the window whose horizon has not passed yet: left out, their outcome is not known.
    immature_answers: u64,
    rows: Vec<CxRetentionRow>,
}

fn retention_row(metric: FeedbackMetric, level: f64, row: RetentionRow) -> CxRetentionRow {
    CxRetentionRow {
        category: category(metric, row.group),
        answers: row.answers,
        customers: row.customers,
        repeat_purchases: row.repeat,
        repeat_purchase_rate: row.rate.map(|r| r.0),
        repeat_purchase_interval: row.rate.map(|(_, low, high)| ConfidenceInterval {
            low,
            high,
            level,
            method: IntervalMethodView::Wilson,
        }),
        revenue_per_answer: row
            .revenue_per_answer
            .map(|amounts| amounts.into_iter().map(|(currency, amount)| Money { currency, amount }).collect()),
        suppressed: row.suppressed,
    }
}

/// The metric among one group of answers.
#[derive(SimpleObject)]
pub struct CxGroupFigures {
    answers: u64,
    value: Option<f64>,
    interval: Option<ConfidenceInterval>,
    suppressed: bool,
}

/// Customers who had a type of touchpoint on a channel in the window, against those who did not.
#[derive(SimpleObject)]
pub struct CxTouchpointEffect {
    touchpoint_type: TouchpointType,
    channel: Channel,
    with: CxGroupFigures,
    without: CxGroupFigures,
    /// `with` − `without`, tested.
    difference: Option<CxChange>,
}

fn effect_view(row: EffectRow, level: f64) -> Option<CxTouchpointEffect> {
    let figures = |(counts, summary): (ScoreCounts, Option<Summary>)| CxGroupFigures {
        answers: counts.total(),
        value: summary.as_ref().map(|s| s.value),
        interval: summary.as_ref().and_then(|s| interval_view(s, level)),
        suppressed: summary.is_none(),
    };
    Some(CxTouchpointEffect {
        touchpoint_type: TouchpointType::parse(&row.kind)?,
        channel: Channel::parse(&row.channel)?,
        with: figures(row.with),
        without: figures(row.without),
        difference: change_view(row.difference, row.significant),
    })
}

/// On what ground survey answers count in CX metrics.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum CxCountingBasis {
    /// Only customers whose `analytics` consent is granted and in force (the default).
    AnalyticsConsent,
    /// The tenant declares a legitimate interest in measuring its service: every customer counts unless they
    /// denied or withdrew `analytics`.
    LegitimateInterest,
}

/// The tenant's CX settings. Restricted customers never count, whatever the basis.
#[derive(SimpleObject)]
#[graphql(name = "CxSettings")]
pub struct CxSettingsView {
    basis: CxCountingBasis,
    min_answers: u32,
    low_confidence_margin: f64,
}

impl From<CxSettings> for CxSettingsView {
    fn from(s: CxSettings) -> Self {
        CxSettingsView {
            basis: match s.basis {
                CxBasis::AnalyticsConsent => CxCountingBasis::AnalyticsConsent,
                CxBasis::LegitimateInterest => CxCountingBasis::LegitimateInterest,
            },
            min_answers: s.min_answers,
            low_confidence_margin: s.low_confidence_margin,
        }
    }
}

#[derive(InputObject)]
pub struct CxSettingsInput {
    basis: CxCountingBasis,
    /// A cell with fewer answers shows counts but no figures (1–1000; default 5).
    #[graphql(default = 5)]
    min_answers: u32,
    /// Flag values whose margin of error is above this many points (default 10).
    #[graphql(default = 10.0)]
    low_confidence_margin: f64,
}

/// One journey-stage rule: a touchpoint whose sender named no stage gets `stage` when it matches every condition
/// given (an empty list is no condition); the highest `priority` wins, then the earlier rule.
#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "JourneyRuleInput", name = "JourneyRule")]
pub struct JourneyRuleView {
    priority: i32,
    stage: JourneyStage,
    #[graphql(default)]
    types: Vec<TouchpointType>,
    #[graphql(default)]
    channels: Vec<Channel>,
    #[graphql(default)]
    sources: Vec<String>,
    /// `properties[key]` equals this JSON value.
    property: Option<JourneyRulePropertyView>,
}

#[derive(SimpleObject, InputObject, Clone)]
#[graphql(input_name = "JourneyRulePropertyInput", name = "JourneyRuleProperty")]
pub struct JourneyRulePropertyView {
    key: String,
    equals: async_graphql::Json<serde_json::Value>,
}

impl From<&StageRule> for JourneyRuleView {
    fn from(r: &StageRule) -> Self {
        JourneyRuleView {
            priority: r.priority,
            stage: JourneyStage::parse(&r.stage).unwrap_or(JourneyStage::Usage),
            types: r.types.iter().filter_map(|t| TouchpointType::parse(t)).collect(),
            channels: r.channels.iter().filter_map(|c| Channel::parse(c)).collect(),
            sources: r.sources.clone(),
            property: r
                .property
                .as_ref()
                .map(|p| JourneyRulePropertyView { key: p.key.clone(), equals: async_graphql::Json(p.equals.clone()) }),
        }
    }
}

impl From<JourneyRuleView> for StageRule {
    fn from(r: JourneyRuleView) -> Self {
        StageRule {
            priority: r.priority,
            stage: r.stage.as_str().to_owned(),
            types: r.types.iter().map(|t| t.as_str().to_owned()).collect(),
            channels: r.channels.iter().map(|c| c.as_str().to_owned()).collect(),
            sources: r.sources,
            property: r.property.map(|p| PropertyCondition { key: p.key, equals: p.equals.0 }),
        }
    }
}

/// The tenant's journey-stage rules.
#[derive(SimpleObject)]
pub struct JourneyRules {
    /// Moves with every change.
    version: i64,
    rules: Vec<JourneyRuleView>,
}

/// What `updateJourneyRules` did: the rules now in force, and the job re-deriving stored touchpoints' stages.
#[derive(SimpleObject)]
pub struct JourneyRulesUpdate {
    rules: JourneyRules,
    job: super::jobs::JobView,
}

/// One step of a funnel.
#[derive(SimpleObject)]
pub struct FunnelStep {
    stage: JourneyStage,
    /// Customers who reached this stage after the step before (the first step: at all) within the window.
    customers: u64,
    /// `customers` over the step before's (`null` for the first step).
    conversion_from_previous: Option<f64>,
    /// `customers` over the first step's.
    conversion_from_start: Option<f64>,
    /// Median seconds from reaching the step before to reaching this one.
    median_seconds_from_previous: Option<f64>,
}

fn steps_view(steps: &[journeys::Step]) -> Vec<FunnelStep> {
    let first = steps.first().map_or(0, |s| s.customers);
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| FunnelStep {
            stage: s.stage,
            customers: s.customers,
            conversion_from_previous: (i > 0)
                .then(|| steps[i - 1].customers)
                .filter(|n| *n > 0)
                .map(|n| s.customers as f64 / n as f64),
            conversion_from_start: (first > 0).then(|| s.customers as f64 / first as f64),
            median_seconds_from_previous: s.median_seconds_from_previous,
        })
        .collect()
}

#[derive(SimpleObject)]
pub struct FunnelByChannel {
    /// The channel of the customers' first touchpoint in the window.
    channel: Channel,
    customers: u64,
    steps: Vec<FunnelStep>,
}

/// A kind of touchpoint on a channel and how many customers had one in the lookback before the moment.
#[derive(SimpleObject)]
pub struct JourneyPath {
    touchpoint_type: TouchpointType,
    channel: Channel,
    customers: u64,
    /// `customers` over the customers who reached the moment.
    share: f64,
}

/// How customers move through the journey within a window.
#[derive(SimpleObject)]
pub struct JourneyFunnel {
    from: Date,
    to: Date,
    /// Customers with a touchpoint in the window whom CX metrics count (their counting basis, never restricted).
    customers: u64,
    /// Customers with a touchpoint in the window left out by that rule.
    excluded_customers: u64,
    steps: Vec<FunnelStep>,
    by_first_channel: Vec<FunnelByChannel>,
    /// Customers with a purchase in the window.
    purchasers: u64,
    /// The touchpoints most often seen in the lookback before a customer's first purchase in the window.
    before_purchase: Vec<JourneyPath>,
    /// Customers with an NPS detractor answer (0–6) in the window.
    detractors: u64,
    /// The touchpoints most often seen in the lookback before a customer's first detractor answer in the window.
    before_detractor: Vec<JourneyPath>,
}

fn paths_view(paths: Vec<journeys::Path>, of: u64) -> Vec<JourneyPath> {
    paths
        .into_iter()
        .map(|p| JourneyPath {
            touchpoint_type: p.kind,
            channel: p.channel,
            customers: p.customers,
            share: if of > 0 { p.customers as f64 / of as f64 } else { 0.0 },
        })
        .collect()
}

#[derive(Default)]
pub struct CxQuery;

#[Object]
impl CxQuery {
    /// A CX metric per cell: per bucket (`bucket`) and per value of the dimensions in `groupBy`, with the window's
    /// total. Counts only answers the tenant's counting basis allows (`cxSettings`). Needs `cx:read`.
    async fn cx_metrics(
        &self,
        ctx: &Context<'_>,
        metric: FeedbackMetric,
        window: CxWindowInput,
        group_by: Option<Vec<CxDimension>>,
        bucket: Option<CxBucket>,
        #[graphql(default = 0.95)] confidence_level: f64,
    ) -> async_graphql::Result<CxMetricsView> {
        let rc = request(ctx)?;
        let request = MetricsRequest {
            metric,
            from: window.from.0,
            to: window.to.0,
            group_by: group_by
                .unwrap_or_default()
                .into_iter()
                .map(|d| match d {
                    CxDimension::Channel => Dimension::Channel,
                    CxDimension::Stage => Dimension::Stage,
                    CxDimension::TouchpointType => Dimension::TouchpointType,
                    CxDimension::Source => Dimension::Source,
                })
                .collect(),
            bucket: bucket.map(|b| match b {
                CxBucket::Day => Bucket::Day,
                CxBucket::Week => Bucket::Week,
                CxBucket::Month => Bucket::Month,
            }),
            level: confidence_level,
        };
        Ok(CxMetricsView(metrics::metrics(&rc.caller, &rc.services, request).await.gql()?))
    }

    /// Per answer category: the share of answers followed by a purchase within `horizonDays`, and the revenue.
    /// Needs `cx:read`.
    async fn cx_retention(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "FeedbackMetric::Nps")] metric: FeedbackMetric,
        window: CxWindowInput,
        #[graphql(default = 90)] horizon_days: u32,
        #[graphql(default = 0.95)] confidence_level: f64,
    ) -> async_graphql::Result<CxRetention> {
        let rc = request(ctx)?;
        let r = links::retention(
            &rc.caller,
            &rc.services,
            metric,
            window.from.0,
            window.to.0,
            horizon_days,
            confidence_level,
        )
        .await
        .gql()?;
        Ok(CxRetention {
            metric: r.metric,
            horizon_days: r.horizon_days,
            immature_answers: r.immature,
            rows: r.rows.into_iter().map(|row| retention_row(metric, confidence_level, row)).collect(),
        })
    }

    /// Per touchpoint type and channel seen in the window: the metric among customers who had one, against those
    /// who did not. Needs `cx:read`.
    async fn touchpoint_effect(
        &self,
        ctx: &Context<'_>,
        metric: FeedbackMetric,
        window: CxWindowInput,
        #[graphql(default = 0.95)] confidence_level: f64,
    ) -> async_graphql::Result<Vec<CxTouchpointEffect>> {
        let rc = request(ctx)?;
        let (rows, _) =
            links::touchpoint_effect(&rc.caller, &rc.services, metric, window.from.0, window.to.0, confidence_level)
                .await
                .gql()?;
        Ok(rows.into_iter().filter_map(|row| effect_view(row, confidence_level)).collect())
    }

    /// The tenant's journey-stage rules. Needs `cx:read`.
    async fn journey_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<JourneyRules> {
        let rc = request(ctx)?;
        rc.caller.require(crate::auth::Scope::CxRead).gql()?;
        let rules = stages::for_tenant(rc.services.db.conn(), rc.caller.tenant()).await.gql()?;
        Ok(JourneyRules { version: rules.version, rules: rules.rules.iter().map(JourneyRuleView::from).collect() })
    }

    /// The ordered funnel through journey stages within a window (UTC days): per step the customers who reached it
    /// after the step before, the conversion and the median time between; cut by each customer's first channel;
    /// and the touchpoints most often seen in the `lookbackDays` before a first purchase and a first detractor
    /// answer. Counts the customers CX metrics count. Needs `cx:read`.
    async fn journey_funnel(
        &self,
        ctx: &Context<'_>,
        window: CxWindowInput,
        #[graphql(
            desc = "The funnel's stages in order (default AWARENESS → CONSIDERATION → PURCHASE → ONBOARDING → USAGE → RENEWAL)."
        )]
        stages: Option<Vec<JourneyStage>>,
        #[graphql(default = 30)] lookback_days: u32,
    ) -> async_graphql::Result<JourneyFunnel> {
        let rc = request(ctx)?;
        let request = journeys::FunnelRequest {
            from: window.from.0,
            to: window.to.0,
            stages: stages.unwrap_or_else(|| journeys::DEFAULT_STAGES.to_vec()),
            lookback_days,
        };
        let f = journeys::funnel(&rc.caller, &rc.services, request).await.gql()?;
        Ok(JourneyFunnel {
            from: Date(f.request.from),
            to: Date(f.request.to),
            customers: f.customers,
            excluded_customers: f.excluded,
            steps: steps_view(&f.steps),
            by_first_channel: f
                .by_first_channel
                .iter()
                .map(|(channel, customers, steps)| FunnelByChannel {
                    channel: *channel,
                    customers: *customers,
                    steps: steps_view(steps),
                })
                .collect(),
            purchasers: f.purchasers,
            before_purchase: paths_view(f.before_purchase, f.purchasers),
            detractors: f.detractors,
            before_detractor: paths_view(f.before_detractor, f.detractors),
        })
    }

    /// The tenant's CX settings. Needs `cx:read`.
    async fn cx_settings(&self, ctx: &Context<'_>) -> async_graphql::Result<CxSettingsView> {
        let rc = request(ctx)?;
        rc.caller.require(crate::auth::Scope::CxRead).gql()?;
        let settings = cx::settings::of_tenant(rc.services.db.conn(), rc.caller.tenant()).await;
        Ok(settings.map_err(crate::error::ApiError::from).gql()?.into())
    }
}

#[derive(Default)]
pub struct CxMutation;

#[Object]
impl CxMutation {
    /// Replaces the tenant's journey-stage rules and starts the job that re-derives the stages of stored touchpoints
    /// (those whose sender named no stage); new touchpoints follow the new rules at once. Needs `cx:write`.
    async fn update_journey_rules(
        &self,
        ctx: &Context<'_>,
        rules: Vec<JourneyRuleView>,
    ) -> async_graphql::Result<JourneyRulesUpdate> {
        let rc = request(ctx)?;
        let rules: Vec<StageRule> = rules.into_iter().map(StageRule::from).collect();
        let (rules, job) = stages::update(&rc.caller, &rc.services, rules).await.gql()?;
        Ok(JourneyRulesUpdate {
            rules: JourneyRules {
                version: rules.version,
                rules: rules.rules.iter().map(JourneyRuleView::from).collect(),
            },
            job: super::jobs::JobView(job),
        })
    }

    /// Changes the tenant's CX settings. A change of basis recounts every answer in the same transaction. Needs
    /// `cx:write`.
    async fn update_cx_settings(
        &self,
        ctx: &Context<'_>,
        input: CxSettingsInput,
    ) -> async_graphql::Result<CxSettingsView> {
        let rc = request(ctx)?;
        let wanted = CxSettings {
            basis: match input.basis {
                CxCountingBasis::AnalyticsConsent => CxBasis::AnalyticsConsent,
                CxCountingBasis::LegitimateInterest => CxBasis::LegitimateInterest,
            },
            min_answers: input.min_answers,
            low_confidence_margin: input.low_confidence_margin,
        };
        Ok(cx::settings::update(&rc.caller, &rc.services, wanted).await.gql()?.into())
    }
}

/// The customer's latest survey answers, one per metric.
pub struct CustomerFeedbackView {
    feedback: CustomerFeedback,
    disclosure: Disclosure,
}

impl CustomerFeedbackView {
    pub fn new(feedback: Permitted<CustomerFeedback>, disclosure: Disclosure) -> Self {
        CustomerFeedbackView { feedback: feedback.into_value(), disclosure }
    }

    fn answer(&self, answer: &Option<Answer>) -> Option<FeedbackAnswerView> {
        answer.clone().map(|answer| FeedbackAnswerView { answer, disclosure: self.disclosure })
    }
}

#[Object(name = "CustomerFeedback")]
impl CustomerFeedbackView {
    async fn nps(&self) -> Option<FeedbackAnswerView> {
        self.answer(&self.feedback.nps)
    }

    async fn csat(&self) -> Option<FeedbackAnswerView> {
        self.answer(&self.feedback.csat)
    }

    async fn ces(&self) -> Option<FeedbackAnswerView> {
        self.answer(&self.feedback.ces)
    }
}

/// How an answer compares with the customer's answer before it.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackTrend {
    /// The first answer of this metric.
    First,
    Up,
    Down,
    Unchanged,
}

pub struct FeedbackAnswerView {
    answer: Answer,
    disclosure: Disclosure,
}

/// One survey answer of a customer.
#[Object(name = "FeedbackAnswer")]
impl FeedbackAnswerView {
    async fn metric(&self) -> FeedbackMetric {
        self.answer.metric
    }

    async fn score(&self) -> i32 {
        self.answer.score
    }

    async fn category(&self) -> FeedbackCategory {
        category(self.answer.metric, self.answer.group)
    }

    async fn answered_at(&self) -> DateTime<Utc> {
        self.answer.answered_at
    }

    async fn channel(&self) -> Option<Channel> {
        Channel::parse(&self.answer.channel)
    }

    async fn stage(&self) -> Option<JourneyStage> {
        JourneyStage::parse(&self.answer.stage)
    }

    /// The SURVEY_RESPONSE touchpoint the answer came with.
    async fn touchpoint_id(&self) -> Uuid {
        self.answer.touchpoint_id
    }

    /// The touchpoint the answer rates, when the survey named one.
    async fn about_touchpoint_id(&self) -> Option<Uuid> {
        self.answer.about_touchpoint_id
    }

    /// The type of the touchpoint rated (`SURVEY_RESPONSE` when none was named).
    async fn touchpoint_type(&self) -> Option<TouchpointType> {
        TouchpointType::parse(&self.answer.touchpoint_type)
    }

    /// The customer's own words; contact data in them masked unless the token has `pii:read`.
    async fn verbatim(&self) -> Option<String> {
        self.answer.verbatim.as_deref().map(|v| self.disclosure.free_text(v))
    }

    async fn previous_score(&self) -> Option<i32> {
        self.answer.previous_score
    }

    async fn trend(&self) -> FeedbackTrend {
        match self.answer.previous_score {
            None => FeedbackTrend::First,
            Some(before) if before < self.answer.score => FeedbackTrend::Up,
            Some(before) if before > self.answer.score => FeedbackTrend::Down,
            Some(_) => FeedbackTrend::Unchanged,
        }
    }
}
