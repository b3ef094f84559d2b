//! The CX sweeper: a task every instance runs (`Application` starts it, every `KONTAKT_CX_SWEEP_MS`) that marks
//! breached feedback-case deadlines and escalates those cases, and recounts survey answers whose consent expired.
//!
//! All its state is in the database, so it survives restarts, and each breach is one conditional UPDATE (the flag
//! still false, the deadline passed, the version read) with its SLA_BREACHED event in the same transaction, appended
//! only when the update changed the row: several instances sweeping at once mark each breach exactly once.
use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    TransactionOptions, TransactionTrait, sea_query::Expr,
};
use tokio::sync::watch;

use super::{CaseState, Deadline, EventKind, NewEvent, Priority, SYSTEM, announce, append};
use crate::{
    auth::TenantId,
    changes::{self, CaseChange},
    storage::{Database, entities::feedback_case, pubsub::PubSub},
};

/// Most breaches of one kind marked per sweep (the next sweep takes the rest).
const BATCH: u64 = 200;

/// What one sweep did.
#[derive(Debug, Clone, Default)]
pub struct SweepReport {
    /// Deadlines this sweep marked breached.
    pub breaches: usize,
    /// Of those, cases it escalated.
    pub escalated: usize,
    /// The committed breaches, to announce on `feedbackCaseChanged`.
    pub changes: Vec<(TenantId, CaseChange)>,
}

/// Marks every deadline passed before `now` and not yet marked (up to a batch of each kind): the case's flag is set,
/// an SLA_BREACHED event appended, its priority raised one step, and a working case not yet ESCALATED escalated.
pub async fn sweep(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<SweepReport, DbErr> {
    let mut report = SweepReport::default();
    for deadline in [Deadline::FirstContact, Deadline::Resolution] {
        let (flag, due) = columns(deadline);
        // Every tenant's cases: the sweeper serves them all, and each write below is scoped to the case's tenant.
        let mut query = feedback_case::Entity::find()
            .filter(flag.eq(false))
            .filter(due.lt(now))
            .filter(feedback_case::Column::State.is_not_in([CaseState::Resolved.as_str(), CaseState::Closed.as_str()]));
        if deadline == Deadline::FirstContact {
            query = query.filter(feedback_case::Column::FirstContactedAt.is_null());
        }
        let due_rows = query.order_by_asc(due).limit(BATCH).all(db).await?;
        for row in due_rows {
            if let Some((escalated, tenant, change)) = breach(db, row, deadline, now).await? {
                report.breaches += 1;
                report.escalated += usize::from(escalated);
                report.changes.push((tenant, change));
            }
        }
    }
    Ok(report)
}

fn columns(deadline: Deadline) -> (feedback_case::Column, feedback_case::Column) {
    match deadline {
        Deadline::FirstContact => (feedback_case::Column::BreachedFirstContact, feedback_case::Column::FirstContactDue),
        Deadline::Resolution => (feedback_case::Column::BreachedResolution, feedback_case::Column::ResolutionDue),
    }
}

/// Marks one breach; `Some((escalated, tenant, change))` when this sweep marked it, `None` when another sweep or a
/// change won.
async fn breach(
    db: &DatabaseConnection,
    row: feedback_case::Model,
    deadline: Deadline,
    now: DateTime<Utc>,
) -> Result<Option<(bool, TenantId, CaseChange)>, DbErr> {
    let (Ok(tenant), Some(from), Some(priority)) =
        (TenantId::parse(&row.tenant), CaseState::parse(&row.state), Priority::parse(&row.priority))
    else {
        tracing::warn!(case = %row.id, "feedback case unreadable; the sweeper skips it");
        return Ok(None);
    };
    let escalate = from.is_working() && from != CaseState::Escalated;
    let to = if escalate { CaseState::Escalated } else { from };
    let raised = priority.raised();
    let (flag, due) = columns(deadline);
    let txn = db
        .begin_with_options(TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        })
        .await?;
    let updated = feedback_case::update_of_tenant(&tenant)
        .col_expr(flag, Expr::value(true))
        .col_expr(feedback_case::Column::State, Expr::value(to.as_str()))
        .col_expr(feedback_case::Column::Priority, Expr::value(raised.as_str()))
        .col_expr(feedback_case::Column::Version, Expr::value(row.version + 1))
        .col_expr(feedback_case::Column::UpdatedAt, Expr::value(now))
        .filter(feedback_case::Column::Id.eq(row.id))
        .filter(feedback_case::Column::Version.eq(row.version))
        .filter(flag.eq(false))
        .filter(due.lt(now))
        .exec(&txn)
        .await?
        .rows_affected;
    if updated == 0 {
        txn.rollback().await?;
        return Ok(None);
    }
    let what = match deadline {
        Deadline::FirstContact => "first-contact",
        Deadline::Resolution => "resolution",
    };
    let event = NewEvent {
        actor: SYSTEM,
        at: Some(now),
        kind: Some(EventKind::SlaBreached),
        from: Some(from),
        to: Some(to),
        reason: Some(format!("the {what} deadline passed")),
        note: Some(format!("priority {} → {}", priority.as_str(), raised.as_str())),
        priority: Some(raised),
        deadline: Some(deadline),
        ..Default::default()
    };
    append(&txn, &tenant, row.id, event).await?;
    txn.commit().await?;
    tracing::info!(case = %row.id, tenant = %tenant, deadline = what, escalated = escalate, "feedback case deadline breached");
    let change = announce(&feedback_case::Model { state: to.as_str().to_owned(), ..row }, EventKind::SlaBreached, now);
    Ok(Some((escalate, tenant, change)))
}

/// The background task; `stop` ends it after its current sweep.
pub struct CxSweeper {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl CxSweeper {
    /// Starts sweeping `db` (whose statements should not count toward requests: `Database::uncounted`) every `every`,
    /// announcing the breaches it marks on `pubsub`.
    pub fn start(db: Database, pubsub: Arc<dyn PubSub>, every: Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => {}
                }
                if *stopped.borrow() {
                    break;
                }
                match sweep(db.conn(), Utc::now()).await {
                    Ok(report) => {
                        for (tenant, change) in &report.changes {
                            changes::publish_case_changes(pubsub.as_ref(), tenant, std::slice::from_ref(change)).await;
                        }
                    }
                    Err(err) => tracing::error!(error = %err, "sweeping feedback-case deadlines failed"),
                }
                if let Err(err) = crate::cx::answers::recount_expired(db.conn()).await {
                    tracing::error!(error = %err, "recounting expired survey answers failed");
                }
            }
        });
        CxSweeper { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
