//! A customer's own survey answers: the latest per metric, with its category, the trend against the answer before
//! and the touchpoint it was given at. Derived personalization data: served only under a permit.
use chrono::{DateTime, Utc};
use sea_orm::{DbBackend, FromQueryResult, Statement};
use uuid::Uuid;

use super::stats;
use crate::{
    auth::{Caller, Scope},
    consent::{ConsentSession, DataCategory, Permitted},
    error::ApiResult,
    privacy::access_log::AccessCategory,
    services::Services,
    touchpoints::FeedbackMetric,
};

/// One answer as the customer gave it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub touchpoint_id: Uuid,
    pub metric: FeedbackMetric,
    pub score: i32,
    /// 0 best (promoter, satisfied, easy), 1 middle, 2 worst.
    pub group: usize,
    pub answered_at: DateTime<Utc>,
    pub channel: String,
    pub stage: String,
    pub about_touchpoint_id: Option<Uuid>,
    /// The type of the touchpoint rated (`survey_response` when none was named).
    pub touchpoint_type: String,
    pub verbatim: Option<String>,
    /// The score of the answer before this one, of the same metric.
    pub previous_score: Option<i32>,
}

/// The latest answer per metric.
#[derive(Debug, Clone, Default)]
pub struct CustomerFeedback {
    pub nps: Option<Answer>,
    pub csat: Option<Answer>,
    pub ces: Option<Answer>,
}

#[derive(FromQueryResult)]
struct Row {
    touchpoint_id: Uuid,
    metric: String,
    score: i16,
    answered_at: DateTime<Utc>,
    channel: String,
    stage: String,
    touchpoint_type: String,
    about_touchpoint_id: Option<Uuid>,
    verbatim: Option<String>,
    rank: i64,
}

/// The customer's latest answers. Needs `touchpoints:read` and the policy's permit for derived data; logged.
/// One statement: the two latest answers of each metric.
pub async fn read(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    customer_id: Uuid,
) -> ApiResult<Permitted<CustomerFeedback>> {
    caller.require(Scope::TouchpointsRead)?;
    let permit = session.decide(caller, svc, customer_id, DataCategory::DerivedInsights).await?;
    let backend = svc.db.backend();
    let (p1, p2) = if backend == DbBackend::Postgres { ("$1", "$2") } else { ("?", "?") };
    let sql = format!(
        "SELECT * FROM (SELECT a.touchpoint_id, a.metric, a.score, a.answered_at, a.channel, a.stage, \
         a.touchpoint_type, a.about_touchpoint_id, t.feedback_verbatim AS verbatim, ROW_NUMBER() OVER \
         (PARTITION BY a.metric ORDER BY a.answered_at DESC, a.touchpoint_id DESC) AS rank \
         FROM cx_answers a LEFT JOIN touchpoints t ON t.id = a.touchpoint_id AND t.tenant = a.tenant \
         WHERE a.tenant = {p1} AND a.customer_id = {p2}) latest WHERE rank <= 2 ORDER BY metric, rank"
    );
    let rows = Row::find_by_statement(Statement::from_sql_and_values(
        backend,
        sql,
        [caller.tenant().as_str().into(), customer_id.into()],
    ))
    .all(svc.db.conn())
    .await?;
    let mut feedback = CustomerFeedback::default();
    for row in &rows {
        let Some(metric) = FeedbackMetric::parse(&row.metric) else { continue };
        let slot = match metric {
            FeedbackMetric::Nps => &mut feedback.nps,
            FeedbackMetric::Csat => &mut feedback.csat,
            FeedbackMetric::Ces => &mut feedback.ces,
        };
        match (row.rank, slot.as_mut()) {
            (1, _) => {
                *slot = Some(Answer {
                    touchpoint_id: row.touchpoint_id,
                    metric,
                    score: row.score as i32,
                    group: stats::group_of(metric, row.score as i32),
                    answered_at: row.answered_at,
                    channel: row.channel.clone(),
                    stage: row.stage.clone(),
                    about_touchpoint_id: row.about_touchpoint_id,
                    touchpoint_type: row.touchpoint_type.clone(),
                    verbatim: row.verbatim.clone(),
                    previous_score: None,
                })
            }
            (_, Some(latest)) => latest.previous_score = Some(row.score as i32),
            _ => {}
        }
    }
    svc.access_log.record(caller, [customer_id], AccessCategory::Feedback);
    Ok(permit.serve(feedback))
}
