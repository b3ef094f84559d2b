//! Journey analytics across customers: the ordered funnel through journey stages within a window (how many reach
//! each stage after the one before, the conversion and the median time between), cut by the channel each customer
//! came in through, and the touchpoints most often seen before a purchase and before a detractor answer.
//!
//! One pass over the window's touchpoints in (customer, time) order, streamed, with a few numbers per customer. It
//! counts the customers CX metrics count (`consent::policy::cx_counting` under the tenant's basis): an aggregate of
//! behaviour, never one person's data.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures_util::TryStreamExt;
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope},
    consent::policy,
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::touchpoint,
    touchpoints::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
};

/// At most this many days in one window.
pub const MAX_WINDOW_DAYS: i64 = 366;
/// The (type, channel) pairs listed before purchases and detractor answers.
pub const TOP_PATHS: usize = 10;

/// The funnel a caller gets without naming one.
pub const DEFAULT_STAGES: [JourneyStage; 6] = [
    JourneyStage::Awareness,
    JourneyStage::Consideration,
    JourneyStage::Purchase,
    JourneyStage::Onboarding,
    JourneyStage::Usage,
    JourneyStage::Renewal,
];

#[derive(Debug, Clone)]
pub struct FunnelRequest {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub stages: Vec<JourneyStage>,
    /// How far back a touchpoint counts as "before" a purchase or a detractor answer.
    pub lookback_days: u32,
}

/// One step: the customers who reached it (after the step before), and the time it took them.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub stage: JourneyStage,
    pub customers: u64,
    /// Median seconds from reaching the step before to reaching this one (`None` for the first step, or nobody).
    pub median_seconds_from_previous: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub kind: TouchpointType,
    pub channel: Channel,
    /// Customers who had such a touchpoint in the lookback before their first purchase (or detractor answer).
    pub customers: u64,
}

#[derive(Debug, Clone)]
pub struct Funnel {
    pub request: FunnelRequest,
    /// Customers with a touchpoint in the window who count.
    pub customers: u64,
    /// Customers with a touchpoint in the window left out by the counting rule (consent, restriction).
    pub excluded: u64,
    pub steps: Vec<Step>,
    /// The same funnel per channel of each customer's first touchpoint in the window.
    pub by_first_channel: Vec<(Channel, u64, Vec<Step>)>,
    pub purchasers: u64,
    pub before_purchase: Vec<Path>,
    pub detractors: u64,
    pub before_detractor: Vec<Path>,
}

/// What one customer did in the window, as the pass saw it.
struct Walk {
    first_channel: Option<Channel>,
    /// When each funnel step was reached (in funnel order; shorter when a step was not reached).
    reached: Vec<DateTime<Utc>>,
    /// The latest time each (type, channel) was seen so far.
    seen: HashMap<(TouchpointType, Channel), DateTime<Utc>>,
    before_purchase: Option<Vec<(TouchpointType, Channel)>>,
    before_detractor: Option<Vec<(TouchpointType, Channel)>>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            first_channel: None,
            reached: Vec::new(),
            seen: HashMap::new(),
            before_purchase: None,
            before_detractor: None,
        }
    }

    fn recent(&self, at: DateTime<Utc>, lookback: Duration) -> Vec<(TouchpointType, Channel)> {
        self.seen.iter().filter(|(_, seen)| **seen >= at - lookback).map(|(k, _)| *k).collect()
    }
}

/// The (type, channel) pairs seen before a moment.
type Seen = Vec<(TouchpointType, Channel)>;

type Row = (Uuid, DateTime<Utc>, String, String, String, Option<String>, Option<i16>);

/// The ordered funnel through `stages` within the window. Needs `cx:read`.
pub async fn funnel(caller: &Caller, svc: &Services, request: FunnelRequest) -> ApiResult<Funnel> {
    caller.require(Scope::CxRead)?;
    super::check_window(request.from, request.to, MAX_WINDOW_DAYS)?;
    if request.stages.is_empty() || request.stages.len() > 7 {
        return Err(ApiError::validation("stages", "1 to 7 stages"));
    }
    if !(1..=365).contains(&request.lookback_days) {
        return Err(ApiError::validation("lookbackDays", "from 1 to 365"));
    }
    let tenant = caller.tenant();
    let conn = svc.db.conn();
    let (start, end) = super::span(request.from, request.to);
    let lookback = Duration::days(request.lookback_days as i64);
    let mut stream = touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::OccurredAt.gte(start))
        .filter(touchpoint::Column::OccurredAt.lt(end))
        .order_by_asc(touchpoint::Column::CustomerId)
        .order_by_asc(touchpoint::Column::OccurredAt)
        .order_by_asc(touchpoint::Column::Id)
        .select_only()
        .column(touchpoint::Column::CustomerId)
        .column(touchpoint::Column::OccurredAt)
        .column(touchpoint::Column::Kind)
        .column(touchpoint::Column::Channel)
        .column(touchpoint::Column::Stage)
        .column(touchpoint::Column::FeedbackMetric)
        .column(touchpoint::Column::FeedbackScore)
        .into_tuple::<Row>()
        .stream(conn)
        .await?;
    let mut walks: HashMap<Uuid, Walk> = HashMap::new();
    let mut current: Option<(Uuid, Walk)> = None;
    while let Some((customer, at, kind, channel, stage, metric, score)) = stream.try_next().await? {
        let (Some(kind), Some(channel), Some(stage)) =
            (TouchpointType::parse(&kind), Channel::parse(&channel), JourneyStage::parse(&stage))
        else {
            continue;
        };
        if current.as_ref().is_none_or(|(id, _)| *id != customer) {
            if let Some((id, walk)) = current.take() {
                walks.insert(id, walk);
            }
            current = Some((customer, Walk::new()));
        }
        let Some((_, walk)) = current.as_mut() else { continue };
        walk.first_channel.get_or_insert(channel);
        if let Some(next) = request.stages.get(walk.reached.len())
            && *next == stage
        {
            walk.reached.push(at);
        }
        if kind == TouchpointType::Purchase && walk.before_purchase.is_none() {
            walk.before_purchase = Some(walk.recent(at, lookback));
        }
        let detractor = metric.as_deref() == Some(FeedbackMetric::Nps.as_str()) && score.is_some_and(|s| s <= 6);
        if detractor && walk.before_detractor.is_none() {
            walk.before_detractor = Some(walk.recent(at, lookback));
        }
        walk.seen.insert((kind, channel), at);
    }
    drop(stream);
    if let Some((id, walk)) = current.take() {
        walks.insert(id, walk);
    }

    // Only the customers CX metrics count.
    let basis = super::settings::of_tenant(conn, tenant).await?.basis;
    let ids: Vec<Uuid> = walks.keys().copied().collect();
    let now = Utc::now();
    let mut counted = std::collections::HashSet::new();
    for chunk in ids.chunks(1000) {
        let states = policy::states_of(conn, tenant, chunk).await?;
        counted
            .extend(states.into_iter().filter(|(_, s)| policy::cx_counting(s, basis, now).is_some()).map(|(id, _)| id));
    }
    let excluded = (walks.len() - counted.len()) as u64;
    walks.retain(|id, _| counted.contains(id));

    let steps_of = |walks: &mut dyn Iterator<Item = &Walk>| -> Vec<Step> {
        let mut reached = vec![0u64; request.stages.len()];
        let mut gaps: Vec<Vec<f64>> = vec![Vec::new(); request.stages.len()];
        for walk in walks {
            for (i, at) in walk.reached.iter().enumerate() {
                reached[i] += 1;
                if i > 0 {
                    gaps[i].push((*at - walk.reached[i - 1]).num_milliseconds() as f64 / 1000.0);
                }
            }
        }
        request
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| Step {
                stage: *stage,
                customers: reached[i],
                median_seconds_from_previous: median(&mut gaps[i]),
            })
            .collect()
    };
    let steps = steps_of(&mut walks.values());
    let mut channels: BTreeMap<&'static str, (Channel, Vec<&Walk>)> = BTreeMap::new();
    for walk in walks.values() {
        if let Some(channel) = walk.first_channel {
            channels.entry(channel.as_str()).or_insert_with(|| (channel, Vec::new())).1.push(walk);
        }
    }
    let by_first_channel = channels
        .into_values()
        .map(|(channel, list)| (channel, list.len() as u64, steps_of(&mut list.into_iter())))
        .collect();
    let paths = |pick: fn(&Walk) -> Option<&Seen>| -> (u64, Vec<Path>) {
        let mut counts: HashMap<(TouchpointType, Channel), u64> = HashMap::new();
        let mut who = 0;
        for walk in walks.values() {
            if let Some(seen) = pick(walk) {
                who += 1;
                for key in seen {
                    *counts.entry(*key).or_default() += 1;
                }
            }
        }
        let mut list: Vec<Path> =
            counts.into_iter().map(|((kind, channel), customers)| Path { kind, channel, customers }).collect();
        list.sort_by(|a, b| {
            b.customers
                .cmp(&a.customers)
                .then(a.kind.as_str().cmp(b.kind.as_str()))
                .then(a.channel.as_str().cmp(b.channel.as_str()))
        });
        list.truncate(TOP_PATHS);
        (who, list)
    };
    let (purchasers, before_purchase) = paths(|w| w.before_purchase.as_ref());
    let (detractors, before_detractor) = paths(|w| w.before_detractor.as_ref());
    Ok(Funnel {
        customers: walks.len() as u64,
        excluded,
        steps,
        by_first_channel,
        purchasers,
        before_purchase,
        detractors,
        before_detractor,
        request,
    })
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] })
}
