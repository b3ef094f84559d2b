//! How the closed loop performs over the cases opened in a window: counts by state, time to first contact and to
//! close (p50, p90), the share within each deadline, the recovery rate of re-surveyed customers, and the root-cause
//! Pareto, overall and cut by the channel and by the journey stage of the answer that opened each case. Computed in
//! memory over at most `MAX_CASES` cases.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{CaseState, recovered};
use crate::{
    auth::{Caller, Scope},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{feedback_case, feedback_root_cause},
    touchpoints::model::FeedbackMetric,
};

/// Most cases a window may hold: a larger window is refused (narrow it).
pub const MAX_CASES: u64 = 50_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseStats {
    pub opened: u64,
    pub by_state: Vec<(CaseState, u64)>,
    /// Seconds from opening to first contact, over the cases contacted.
    pub first_contact_p50: Option<f64>,
    pub first_contact_p90: Option<f64>,
    /// Seconds from opening to closing, over the cases closed.
    pub close_p50: Option<f64>,
    pub close_p90: Option<f64>,
    /// Of the cases whose first-contact deadline is decided (contacted, or the deadline passed), the share contacted
    /// by it, in percent.
    pub first_contact_within_sla: Option<f64>,
    /// Of the cases whose resolution deadline is decided (resolved, or the deadline passed), the share resolved by
    /// it, in percent.
    pub resolution_within_sla: Option<f64>,
    pub resurveyed: u64,
    pub recovered: u64,
    /// `recovered / resurveyed`, in percent.
    pub recovery_rate: Option<f64>,
    /// Closed cases per root cause, most frequent first.
    pub root_causes: Vec<RootCauseCount>,
    /// The same Pareto per channel of the opening answer (channels by name; shares within the channel).
    pub root_causes_by_channel: Vec<(String, Vec<RootCauseCount>)>,
    /// The same Pareto per journey stage of the opening answer (stages by name; shares within the stage).
    pub root_causes_by_stage: Vec<(String, Vec<RootCauseCount>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RootCauseCount {
    pub code: String,
    pub label: String,
    pub count: u64,
    /// Of the closed cases with a root cause (in the cut), in percent.
    pub share: f64,
}

/// Counts per root cause as a Pareto: most frequent first (ties by code), each with its share of the whole.
fn pareto(causes: &HashMap<String, u64>, labels: &HashMap<String, String>) -> Vec<RootCauseCount> {
    let whole: u64 = causes.values().sum();
    let mut pareto: Vec<RootCauseCount> = causes
        .iter()
        .map(|(code, count)| RootCauseCount {
            label: labels.get(code).cloned().unwrap_or_else(|| code.clone()),
            code: code.clone(),
            count: *count,
            share: share(*count, whole).unwrap_or_default(),
        })
        .collect();
    pareto.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
    pareto
}

/// A Pareto per cut, cuts by name.
fn paretos(
    cuts: HashMap<String, HashMap<String, u64>>,
    labels: &HashMap<String, String>,
) -> Vec<(String, Vec<RootCauseCount>)> {
    let mut out: Vec<(String, Vec<RootCauseCount>)> =
        cuts.iter().map(|(cut, causes)| (cut.clone(), pareto(causes, labels))).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| 100.0 * part as f64 / whole as f64)
}

/// The stats of the cases opened in `[from, to)`. Needs `cx:read`.
pub async fn stats(caller: &Caller, svc: &Services, from: DateTime<Utc>, to: DateTime<Utc>) -> ApiResult<CaseStats> {
    caller.require(Scope::CxRead)?;
    if to <= from {
        return Err(ApiError::validation("to", "must be after `from`"));
    }
    let tenant = caller.tenant();
    let conn = svc.db.conn();
    let rows = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::OpenedAt.gte(from))
        .filter(feedback_case::Column::OpenedAt.lt(to))
        .order_by_asc(feedback_case::Column::OpenedAt)
        .limit(MAX_CASES + 1)
        .all(conn)
        .await?;
    if rows.len() as u64 > MAX_CASES {
        return Err(ApiError::validation("from", format!("more than {MAX_CASES} cases in the window: narrow it")));
    }
    let now = Utc::now();
    let mut stats = CaseStats { opened: rows.len() as u64, ..Default::default() };
    let mut states: HashMap<CaseState, u64> = HashMap::new();
    let (mut to_contact, mut to_close) = (Vec::new(), Vec::new());
    let (mut contact_decided, mut contact_on_time, mut resolve_decided, mut resolve_on_time) = (0, 0, 0, 0);
    let mut causes: HashMap<String, u64> = HashMap::new();
    let mut by_channel: HashMap<String, HashMap<String, u64>> = HashMap::new();
    let mut by_stage: HashMap<String, HashMap<String, u64>> = HashMap::new();
    for row in &rows {
        if let Some(state) = CaseState::parse(&row.state) {
            *states.entry(state).or_default() += 1;
        }
        let seconds = |at: DateTime<Utc>| (at - row.opened_at).num_milliseconds().max(0) as f64 / 1000.0;
        if let Some(at) = row.first_contacted_at {
            to_contact.push(seconds(at));
        }
        if let Some(at) = row.closed_at {
            to_close.push(seconds(at));
        }
        match row.first_contacted_at {
            Some(at) => {
                contact_decided += 1;
                contact_on_time += u64::from(at <= row.first_contact_due && !row.breached_first_contact);
            }
            None if row.first_contact_due <= now || row.breached_first_contact => contact_decided += 1,
            None => {}
        }
        match row.resolved_at {
            Some(at) => {
                resolve_decided += 1;
                resolve_on_time += u64::from(at <= row.resolution_due && !row.breached_resolution);
            }
            None if row.resolution_due <= now || row.breached_resolution => resolve_decided += 1,
            None => {}
        }
        if let (Some(score), Some(metric)) = (row.resurvey_score, FeedbackMetric::parse(&row.metric)) {
            stats.resurveyed += 1;
            stats.recovered += u64::from(recovered(metric, score));
        }
        if row.state == CaseState::Closed.as_str()
            && let Some(code) = &row.root_cause_code
        {
            *causes.entry(code.clone()).or_default() += 1;
            *by_channel.entry(row.channel.clone()).or_default().entry(code.clone()).or_default() += 1;
            *by_stage.entry(row.stage.clone()).or_default().entry(code.clone()).or_default() += 1;
        }
    }
    stats.by_state = CaseState::ALL.iter().map(|s| (*s, states.get(s).copied().unwrap_or_default())).collect();
    to_contact.sort_by(f64::total_cmp);
    to_close.sort_by(f64::total_cmp);
    stats.first_contact_p50 = percentile(&to_contact, 50.0);
    stats.first_contact_p90 = percentile(&to_contact, 90.0);
    stats.close_p50 = percentile(&to_close, 50.0);
    stats.close_p90 = percentile(&to_close, 90.0);
    stats.first_contact_within_sla = share(contact_on_time, contact_decided);
    stats.resolution_within_sla = share(resolve_on_time, resolve_decided);
    stats.recovery_rate = share(stats.recovered, stats.resurveyed);
    let labels: HashMap<String, String> = feedback_root_cause::of_tenant(tenant)
        .filter(feedback_root_cause::Column::Code.is_in(causes.keys().cloned()))
        .all(conn)
        .await?
        .into_iter()
        .map(|c| (c.code, c.label))
        .collect();
    stats.root_causes = pareto(&causes, &labels);
    stats.root_causes_by_channel = paretos(by_channel, &labels);
    stats.root_causes_by_stage = paretos(by_stage, &labels);
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&values, 50.0), Some(5.0));
        assert_eq!(percentile(&values, 90.0), Some(9.0));
        assert_eq!(percentile(&[42.0], 90.0), Some(42.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
