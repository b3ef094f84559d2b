//! The link from CX to the business: what customers did after answering (repeat purchases and revenue over the
//! following days, per answer category), and which touchpoints go with better or worse scores. Aggregates over the
//! answers that count (`consent::policy::cx_counting`), read from `cx_answers` and the purchase history.
use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

use super::{
    CxSettings,
    stats::{self, Change, ScoreCounts, Summary},
};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{cx_answer, touchpoint},
    touchpoints::{FeedbackMetric, TouchpointType},
};

/// At most this many answers feed one analysis (a narrower window answers a larger tenant).
pub const MAX_ANSWERS: usize = 200_000;
/// Customers per `IN (…)` list.
const CHUNK: usize = 1000;

/// The counted answers of a metric answered within `from..=to` (UTC days).
async fn counted_answers(
    svc: &Services,
    tenant: &TenantId,
    metric: FeedbackMetric,
    from: NaiveDate,
    to: NaiveDate,
) -> ApiResult<Vec<cx_answer::Model>> {
    let now = Utc::now();
    let query = cx_answer::of_tenant(tenant)
        .filter(cx_answer::Column::Metric.eq(metric.as_str()))
        .filter(cx_answer::Column::Counted.eq(true))
        .filter(cx_answer::Column::Day.gte(from))
        .filter(cx_answer::Column::Day.lte(to))
        .limit(MAX_ANSWERS as u64 + 1);
    let answers: Vec<cx_answer::Model> = query.all(svc.db.conn()).await?;
    if answers.len() > MAX_ANSWERS {
        return Err(ApiError::validation("window", format!("more than {MAX_ANSWERS} answers: use a shorter window")));
    }
    // An answer whose consent expired since it was counted no longer counts.
    Ok(answers.into_iter().filter(|a| a.counts_until.is_none_or(|until| until > now)).collect())
}

/// A purchase: when, its value and currency.
type Purchase = (DateTime<Utc>, Option<f64>, Option<String>);

/// Money per currency (amounts in different currencies are never added up).
pub type Amounts = BTreeMap<String, f64>;

/// What the customers of one answer category did in the days after answering.
#[derive(Debug, Clone)]
pub struct RetentionRow {
    /// 0 best (promoters) … 2 worst (detractors).
    pub group: usize,
    pub answers: u64,
    pub customers: u64,
    /// Answers followed by at least one purchase within the horizon.
    pub repeat: u64,
    /// `repeat / answers` with its Wilson interval (fractions); absent when suppressed.
    pub rate: Option<(f64, f64, f64)>,
    /// Mean revenue per answer in the horizon, per currency; absent when suppressed.
    pub revenue_per_answer: Option<Amounts>,
    pub suppressed: bool,
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub metric: FeedbackMetric,
    pub horizon_days: u32,
    pub rows: Vec<RetentionRow>,
    /// Answers in the window whose horizon has not passed yet (left out: their outcome is not known).
    pub immature: u64,
    pub settings: CxSettings,
}

/// Per answer category, the share of answers followed by a purchase within `horizon_days`, and the revenue.
/// Needs `cx:read`.
pub async fn retention(
    caller: &Caller,
    svc: &Services,
    metric: FeedbackMetric,
    from: NaiveDate,
    to: NaiveDate,
    horizon_days: u32,
    level: f64,
) -> ApiResult<Retention> {
    caller.require(Scope::CxRead)?;
    super::check_window(from, to, super::metrics::MAX_WINDOW_DAYS)?;
    if !(1..=730).contains(&horizon_days) {
        return Err(ApiError::validation("horizonDays", "from 1 to 730"));
    }
    let tenant = caller.tenant();
    let settings = super::settings::of_tenant(svc.db.conn(), tenant).await?;
    let horizon = Duration::days(horizon_days as i64);
    let now = Utc::now();
    let all = counted_answers(svc, tenant, metric, from, to).await?;
    let (answers, immature): (Vec<_>, Vec<_>) = all.into_iter().partition(|a| a.answered_at + horizon <= now);
    let customers: Vec<Uuid> = answers.iter().map(|a| a.customer_id).collect::<HashSet<_>>().into_iter().collect();
    // Their purchases from the window's start to its end plus the horizon, per customer, in time order.
    let (start, end) = super::span(from, to);
    let end = end + horizon;
    let mut purchases: HashMap<Uuid, Vec<Purchase>> = HashMap::new();
    for chunk in customers.chunks(CHUNK) {
        let rows: Vec<(Uuid, Purchase)> = touchpoint::of_tenant(tenant)
            .filter(touchpoint::Column::CustomerId.is_in(chunk.iter().copied()))
            .filter(touchpoint::Column::Kind.eq(TouchpointType::Purchase.as_str()))
            .filter(touchpoint::Column::OccurredAt.gte(start))
            .filter(touchpoint::Column::OccurredAt.lte(end))
            .select_only()
            .column(touchpoint::Column::CustomerId)
            .column(touchpoint::Column::OccurredAt)
            .column(touchpoint::Column::Value)
            .column(touchpoint::Column::Currency)
            .into_tuple::<(Uuid, DateTime<Utc>, Option<f64>, Option<String>)>()
            .all(svc.db.conn())
            .await?
            .into_iter()
            .map(|(customer, at, value, currency)| (customer, (at, value, currency)))
            .collect();
        for (customer, purchase) in rows {
            purchases.entry(customer).or_default().push(purchase);
        }
    }
    for list in purchases.values_mut() {
        list.sort_by_key(|p| p.0);
    }
    struct Acc {
        answers: u64,
        customers: HashSet<Uuid>,
        repeat: u64,
        revenue: Amounts,
    }
    let mut acc: Vec<Acc> =
        (0..3).map(|_| Acc { answers: 0, customers: HashSet::new(), repeat: 0, revenue: Amounts::new() }).collect();
    for a in &answers {
        let group = &mut acc[stats::group_of(metric, a.score as i32)];
        group.answers += 1;
        group.customers.insert(a.customer_id);
        let bought: Vec<_> = purchases
            .get(&a.customer_id)
            .map(|list| list.iter().filter(|p| p.0 > a.answered_at && p.0 <= a.answered_at + horizon).collect())
            .unwrap_or_default();
        if !bought.is_empty() {
            group.repeat += 1;
        }
        for (_, value, currency) in bought {
            if let (Some(value), Some(currency)) = (value, currency) {
                *group.revenue.entry(currency.clone()).or_default() += value;
            }
        }
    }
    let z = stats::z_of(level);
    let rows = acc
        .into_iter()
        .enumerate()
        .filter(|(_, a)| a.answers > 0)
        .map(|(group, a)| {
            let suppressed = a.answers < settings.min_answers as u64;
            let rate = (!suppressed).then(|| {
                let (low, high) = stats::wilson(a.repeat, a.answers, z);
                (a.repeat as f64 / a.answers as f64, low, high)
            });
            let revenue_per_answer = (!suppressed)
                .then(|| a.revenue.iter().map(|(c, total)| (c.clone(), total / a.answers as f64)).collect());
            RetentionRow {
                group,
                answers: a.answers,
                customers: a.customers.len() as u64,
                repeat: if suppressed { 0 } else { a.repeat },
                rate,
                revenue_per_answer,
                suppressed,
            }
        })
        .collect();
    Ok(Retention { metric, horizon_days, rows, immature: immature.len() as u64, settings })
}

/// The scores of the customers who had a kind of touchpoint on a channel in the window, against those who did not.
#[derive(Debug, Clone)]
pub struct EffectRow {
    pub kind: String,
    pub channel: String,
    pub with: (ScoreCounts, Option<Summary>),
    pub without: (ScoreCounts, Option<Summary>),
    /// `with` against `without`.
    pub difference: Option<Change>,
    pub significant: bool,
}

/// Per touchpoint type and channel seen in the window: the metric among answers of customers who had such a
/// touchpoint in the window and among those who did not. Needs `cx:read`.
pub async fn touchpoint_effect(
    caller: &Caller,
    svc: &Services,
    metric: FeedbackMetric,
    from: NaiveDate,
    to: NaiveDate,
    level: f64,
) -> ApiResult<(Vec<EffectRow>, CxSettings)> {
    caller.require(Scope::CxRead)?;
    super::check_window(from, to, super::metrics::MAX_WINDOW_DAYS)?;
    let tenant = caller.tenant();
    let settings = super::settings::of_tenant(svc.db.conn(), tenant).await?;
    let answers = counted_answers(svc, tenant, metric, from, to).await?;
    let customers: Vec<Uuid> = answers.iter().map(|a| a.customer_id).collect::<HashSet<_>>().into_iter().collect();
    let (start, end) = super::span(from, to);
    // Who had what: distinct (customer, type, channel) in the window, surveys aside.
    let mut had: HashMap<(String, String), HashSet<Uuid>> = HashMap::new();
    for chunk in customers.chunks(CHUNK) {
        let rows: Vec<(Uuid, String, String)> = touchpoint::of_tenant(tenant)
            .filter(touchpoint::Column::CustomerId.is_in(chunk.iter().copied()))
            .filter(touchpoint::Column::Kind.ne(TouchpointType::SurveyResponse.as_str()))
            .filter(touchpoint::Column::OccurredAt.gte(start))
            .filter(touchpoint::Column::OccurredAt.lt(end))
            .select_only()
            .column(touchpoint::Column::CustomerId)
            .column(touchpoint::Column::Kind)
            .column(touchpoint::Column::Channel)
            .distinct()
            .into_tuple()
            .all(svc.db.conn())
            .await?;
        for (customer, kind, channel) in rows {
            had.entry((kind, channel)).or_default().insert(customer);
        }
    }
    let mut everyone = ScoreCounts::new(metric);
    for a in &answers {
        everyone.add(metric, a.score as i32, 1);
    }
    let figures = |counts: &ScoreCounts| {
        (counts.total() >= settings.min_answers as u64).then(|| stats::summarize(metric, counts, level)).flatten()
    };
    let mut rows: Vec<EffectRow> = had
        .into_iter()
        .map(|((kind, channel), who)| {
            let mut with = ScoreCounts::new(metric);
            for a in answers.iter().filter(|a| who.contains(&a.customer_id)) {
                with.add(metric, a.score as i32, 1);
            }
            let mut without = everyone.clone();
            for (slot, n) in without.counts.iter_mut().zip(&with.counts) {
                *slot -= n;
            }
            let (w, wo) = (figures(&with), figures(&without));
            let difference = w.as_ref().zip(wo.as_ref()).map(|(a, b)| stats::change(a, b));
            let significant = difference.and_then(|d| d.p_value).is_some_and(|p| p < 1.0 - level);
            EffectRow { kind, channel, with: (with, w), without: (without, wo), difference, significant }
        })
        .collect();
    rows.sort_by(|a, b| (&a.kind, &a.channel).cmp(&(&b.kind, &b.channel)));
    Ok((rows, settings))
}
