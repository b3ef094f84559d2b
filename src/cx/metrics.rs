//! `cxMetrics`: a metric per cell (bucket × the dimensions asked for) summed from the rollups, with its interval,
//! margin of error, suppression below the tenant's minimum, and the change against the cell's previous bucket.
//! O(days × cells) rows, whatever the number of answers.
use std::collections::BTreeMap;

use chrono::{Datelike, Duration, NaiveDate, Utc};
use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};

use super::{
    CxSettings, answers,
    stats::{self, Change, ScoreCounts, Summary},
};
use crate::{
    auth::{Caller, Scope},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::cx_rollup,
    touchpoints::FeedbackMetric,
};

/// At most this many days in one window (three years).
pub const MAX_WINDOW_DAYS: i64 = 3 * 366;
/// At most this many cells in one answer.
pub const MAX_CELLS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Channel,
    Stage,
    TouchpointType,
    Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Day,
    Week,
    Month,
}

impl Bucket {
    /// The first day of the bucket `day` is in (weeks start on Monday, ISO 8601).
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        match self {
            Bucket::Day => day,
            Bucket::Week => day - Duration::days(day.weekday().num_days_from_monday() as i64),
            Bucket::Month => day.with_day(1).unwrap_or(day),
        }
    }

    /// The first day of the bucket after the one starting at `start`.
    pub fn next(self, start: NaiveDate) -> NaiveDate {
        match self {
            Bucket::Day => start + Duration::days(1),
            Bucket::Week => start + Duration::days(7),
            Bucket::Month => start.checked_add_months(chrono::Months::new(1)).unwrap_or(start),
        }
    }

    /// The first day of the bucket before the one starting at `start`.
    pub fn previous(self, start: NaiveDate) -> NaiveDate {
        match self {
            Bucket::Day => start - Duration::days(1),
            Bucket::Week => start - Duration::days(7),
            Bucket::Month => start.checked_sub_months(chrono::Months::new(1)).unwrap_or(start),
        }
    }
}

/// What a caller asks for: one metric over the days `from..=to` (UTC), per bucket and dimension values.
#[derive(Debug, Clone)]
pub struct MetricsRequest {
    pub metric: FeedbackMetric,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub group_by: Vec<Dimension>,
    pub bucket: Option<Bucket>,
    /// The confidence level of intervals and tests, e.g. 0.95.
    pub level: f64,
}

/// One cell: the answers of a bucket (or the whole window) and one combination of dimension values.
#[derive(Debug, Clone)]
pub struct Cell {
    /// The bucket's first and last day, inside the window (`None`: the whole window).
    pub bucket: Option<(NaiveDate, NaiveDate)>,
    pub group: Vec<(Dimension, String)>,
    pub counts: ScoreCounts,
    /// The figures, absent when the cell has fewer answers than the tenant's minimum (`suppressed`).
    pub summary: Option<Summary>,
    pub suppressed: bool,
    pub low_confidence: bool,
    /// Against the previous bucket of the same group (the previous window of the same length, for the whole
    /// window); absent when either side has no figures.
    pub change: Option<Change>,
    pub significant: bool,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub request: MetricsRequest,
    pub settings: CxSettings,
    pub cells: Vec<Cell>,
    /// The whole window, every group together.
    pub total: Cell,
}

impl MetricsRequest {
    fn validate(&self) -> ApiResult<()> {
        super::check_window(self.from, self.to, MAX_WINDOW_DAYS)?;
        if !(self.level >= 0.5 && self.level <= 0.999) {
            return Err(ApiError::validation("confidenceLevel", "from 0.5 to 0.999"));
        }
        let mut dims = self.group_by.clone();
        dims.sort();
        dims.dedup();
        if dims.len() != self.group_by.len() {
            return Err(ApiError::validation("groupBy", "names a dimension twice"));
        }
        Ok(())
    }
}

/// A cell's key: its bucket's first day (none: the whole window) and its dimension values.
type CellKey = (Option<NaiveDate>, Vec<(Dimension, String)>);

/// A rollup row as read: day, channel, stage, touchpoint type, source, score, answers.
type Row = (NaiveDate, String, String, String, String, i16, i64);

/// The metric per cell. Needs `cx:read`. Aggregates only: which answers count is `consent::policy::cx_counting`,
/// applied when the rollups were written; answers whose consent expired since are taken out here.
pub async fn metrics(caller: &Caller, svc: &Services, request: MetricsRequest) -> ApiResult<Report> {
    caller.require(Scope::CxRead)?;
    request.validate()?;
    let tenant = caller.tenant();
    let conn = svc.db.conn();
    let settings = super::settings::of_tenant(conn, tenant).await?;
    let metric = request.metric;
    let days = (request.to - request.from).num_days() + 1;
    // The previous window of the same length (for the total) and the bucket before the first (for its change).
    let previous_from = request.from - Duration::days(days);
    let fetch_from = match request.bucket {
        Some(bucket) => previous_from.min(bucket.previous(bucket.start_of(request.from))),
        None => previous_from,
    };
    let mut rows: Vec<Row> = cx_rollup::of_tenant(tenant)
        .filter(cx_rollup::Column::Metric.eq(metric.as_str()))
        .filter(cx_rollup::Column::Day.gte(fetch_from))
        .filter(cx_rollup::Column::Day.lte(request.to))
        .filter(cx_rollup::Column::Answers.ne(0))
        .select_only()
        .column(cx_rollup::Column::Day)
        .column(cx_rollup::Column::Channel)
        .column(cx_rollup::Column::Stage)
        .column(cx_rollup::Column::TouchpointType)
        .column(cx_rollup::Column::Source)
        .column(cx_rollup::Column::Score)
        .column(cx_rollup::Column::Answers)
        .into_tuple()
        .all(conn)
        .await?;
    // Answers whose consent expired since they were counted stop counting now, not when the sweeper comes by.
    for a in answers::expired_since_counted(conn, tenant, metric.as_str(), Utc::now()).await? {
        if a.day >= fetch_from && a.day <= request.to {
            rows.push((a.day, a.channel, a.stage, a.touchpoint_type, a.source, a.score, -1));
        }
    }

    let group_of = |row: &Row| -> Vec<(Dimension, String)> {
        request
            .group_by
            .iter()
            .map(|d| {
                let value = match d {
                    Dimension::Channel => &row.1,
                    Dimension::Stage => &row.2,
                    Dimension::TouchpointType => &row.3,
                    Dimension::Source => &row.4,
                };
                (*d, value.clone())
            })
            .collect()
    };
    // (bucket start, group) → counts; and the whole window and the window before it.
    let mut cells: BTreeMap<CellKey, ScoreCounts> = BTreeMap::new();
    let (mut total, mut total_before) = (ScoreCounts::new(metric), ScoreCounts::new(metric));
    // Without buckets: each group's counts in the previous window of the same length.
    let mut groups_before: BTreeMap<Vec<(Dimension, String)>, ScoreCounts> = BTreeMap::new();
    let first_bucket = request.bucket.map(|b| b.start_of(request.from));
    for row in &rows {
        let (day, score, n) = (row.0, row.5 as i32, row.6);
        if day >= request.from {
            total.add(metric, score, n);
        } else if day >= previous_from {
            total_before.add(metric, score, n);
        }
        let bucket = match request.bucket {
            None if day < request.from => {
                if day >= previous_from {
                    groups_before
                        .entry(group_of(row))
                        .or_insert_with(|| ScoreCounts::new(metric))
                        .add(metric, score, n);
                }
                continue;
            }
            None => None,
            Some(b) => {
                let start = b.start_of(day);
                // Days of the first bucket before the window are not the window's, nor the previous bucket's.
                if day < request.from && Some(start) == first_bucket {
                    continue;
                }
                Some(start)
            }
        };
        cells.entry((bucket, group_of(row))).or_insert_with(|| ScoreCounts::new(metric)).add(metric, score, n);
        if cells.len() > MAX_CELLS * 2 {
            return Err(ApiError::validation(
                "groupBy",
                format!(
                    "more than {MAX_CELLS} cells: group by fewer dimensions, use larger buckets or a shorter window"
                ),
            ));
        }
    }

    let figure = |bucket: Option<(NaiveDate, NaiveDate)>,
                  group: Vec<(Dimension, String)>,
                  counts: ScoreCounts,
                  before: Option<&ScoreCounts>| {
        let suppressed = counts.total() < settings.min_answers as u64;
        let summary = if suppressed { None } else { stats::summarize(metric, &counts, request.level) };
        let low_confidence =
            summary.as_ref().and_then(|s| s.margin_points).is_some_and(|m| m > settings.low_confidence_margin);
        let previous = before
            .filter(|b| b.total() >= settings.min_answers as u64)
            .and_then(|b| stats::summarize(metric, b, request.level));
        let change = summary.as_ref().zip(previous.as_ref()).map(|(now, then)| stats::change(now, then));
        let significant = change.and_then(|c| c.p_value).is_some_and(|p| p < 1.0 - request.level);
        Cell { bucket, group, counts, summary, suppressed, low_confidence, change, significant }
    };

    let mut out = Vec::new();
    for ((start, group), counts) in &cells {
        if start.is_some_and(|s| s < first_bucket.unwrap_or(s)) || counts.total() == 0 {
            continue;
        }
        let bucket = match (request.bucket, start) {
            (Some(b), Some(s)) => Some(((*s).max(request.from), (b.next(*s) - Duration::days(1)).min(request.to))),
            _ => None,
        };
        let before = match (request.bucket, start) {
            (Some(b), Some(s)) => cells.get(&(Some(b.previous(*s)), group.clone())),
            _ => groups_before.get(group),
        };
        out.push(figure(bucket, group.clone(), counts.clone(), before));
        if out.len() > MAX_CELLS {
            return Err(ApiError::validation(
                "groupBy",
                format!(
                    "more than {MAX_CELLS} cells: group by fewer dimensions, use larger buckets or a shorter window"
                ),
            ));
        }
    }
    let total = figure(None, Vec::new(), total, Some(&total_before));
    Ok(Report { request, settings, cells: out, total })
}
