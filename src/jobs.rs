//! Durable jobs: tenant-wide work that does not fit in a request. A mutation enqueues a job and answers at once;
//! a runner started by `Application` claims it, works in batches (each committed with the job's progress and
//! checkpoint), and a job a stopped instance left RUNNING is claimed again once its heartbeat is stale and goes on
//! from its checkpoint.
use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    pagination::{Page, PageRequest},
    profiles::rules::{self, Reresolution},
    services::Services,
    storage::entities::{customer, job},
};

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum JobKind {
    /// Applies the tenant's current identity-resolution rules to its existing customers (`reresolveCustomers`).
    ReresolveCustomers,
    /// Re-derives the journey stages of stored touchpoints under the tenant's current journey rules
    /// (`updateJourneyRules` queues it).
    RederiveStages,
    /// Fits the tenant's purchase and spend models for CLV and churn risk (`fitScoreModel`).
    FitScoreModel,
    /// Computes new definition versions (and the definitions that refer to them) for every customer, announcing
    /// the changes, then activates them (`defineSegment`, `defineComputedTrait` queue it).
    BackfillDefinitions,
}

impl JobKind {
    pub const ALL: [JobKind; 4] =
        [JobKind::ReresolveCustomers, JobKind::RederiveStages, JobKind::FitScoreModel, JobKind::BackfillDefinitions];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::ReresolveCustomers => "reresolve_customers",
            JobKind::RederiveStages => "rederive_stages",
            JobKind::FitScoreModel => "fit_score_model",
            JobKind::BackfillDefinitions => "backfill_definitions",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "reresolve_customers" => Some(JobKind::ReresolveCustomers),
            "rederive_stages" => Some(JobKind::RederiveStages),
            "fit_score_model" => Some(JobKind::FitScoreModel),
            "backfill_definitions" => Some(JobKind::BackfillDefinitions),
            _ => None,
        }
    }

    /// The scope a caller needs to start a job of this kind, and to read it.
    pub fn scope(self) -> Scope {
        match self {
            JobKind::ReresolveCustomers => Scope::ProfilesWrite,
            JobKind::RederiveStages => Scope::CxWrite,
            JobKind::FitScoreModel => Scope::ProfilesWrite,
            JobKind::BackfillDefinitions => Scope::ProfilesWrite,
        }
    }
}

/// Where a job is. QUEUED → RUNNING → SUCCEEDED | FAILED; a running job whose instance stops goes back to QUEUED
/// (a clean stop) or stays RUNNING until its heartbeat is stale (a crash), and is claimed again either way.
/// CANCELLED is reserved: nothing cancels a job yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [JobState::Queued, JobState::Running, JobState::Succeeded, JobState::Failed, JobState::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// How far a job is: items done of the items there were when it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A job as callers see it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub kind: JobKind,
    pub state: JobState,
    pub progress: Progress,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    /// The subject who asked for it, or [`SCHEDULE`].
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<job::Model> for Job {
    type Error = ApiError;

    fn try_from(row: job::Model) -> ApiResult<Self> {
        let unreadable = |what: &str| ApiError::internal(anyhow::anyhow!("job {}: unreadable {what}", row.id));
        Ok(Job {
            id: row.id,
            kind: JobKind::parse(&row.kind).ok_or_else(|| unreadable("kind"))?,
            state: JobState::parse(&row.state).ok_or_else(|| unreadable("state"))?,
            progress: serde_json::from_value(row.progress.clone()).unwrap_or_default(),
            result: row.result,
            error: row.error,
            requested_by: row.requested_by,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
    }
}

/// The kinds whose jobs the caller may read: those it could start.
fn readable_kinds(caller: &Caller) -> ApiResult<Vec<&'static str>> {
    let kinds: Vec<&'static str> = JobKind::ALL.iter().filter(|k| caller.has(k.scope())).map(|k| k.as_str()).collect();
    match kinds.is_empty() {
        true => Err(ApiError::Forbidden(Scope::ProfilesWrite.as_str().to_owned())),
        false => Ok(kinds),
    }
}

/// Where a resumed job goes on: the id its last committed batch ended at (none: from the start).
fn checkpoint(row: &job::Model) -> ApiResult<Option<Uuid>> {
    row.checkpoint
        .as_deref()
        .map(|text| {
            text.parse().map_err(|_| ApiError::internal(anyhow::anyhow!("job {}: unreadable checkpoint", row.id)))
        })
        .transpose()
}

/// Queues a job of `kind` for the caller's tenant and returns it; the runner starts it within the poll interval.
pub async fn enqueue(caller: &Caller, svc: &Services, kind: JobKind) -> ApiResult<Job> {
    caller.require(kind.scope())?;
    insert(svc.db.conn(), caller.tenant(), kind, caller.subject()).await?.try_into()
}

/// Who asks for the jobs the schedule queues (and so who a scheduled model fit names as its author).
pub const SCHEDULE: &str = "kontakt:schedule";

/// Queues a refit of the score model of every tenant whose model was fitted more than `every` ago (at most 100 per
/// call; the next call takes the rest), unless a fit job of the tenant is queued or running or was queued within
/// `every` (so a fit that fails is tried once per interval, not in a loop). A tenant that never fitted is left
/// alone: its first fit is on demand (`fitScoreModel`). Safe from several instances at once: each tenant's check
/// and insert run under a per-tenant lock (PostgreSQL) or SQLite's one writer. Answers how many were queued.
pub async fn schedule_refits(svc: &Services, every: Duration) -> ApiResult<usize> {
    use crate::storage::entities::score_model;
    let now = Utc::now();
    let due_before = now - chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
    let due: Vec<String> = score_model::Entity::find()
        .filter(score_model::Column::FittedAt.lt(due_before))
        .order_by_asc(score_model::Column::FittedAt)
        .select_only()
        .column(score_model::Column::Tenant)
        .limit(100)
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    let mut queued = 0;
    for tenant in due {
        let Ok(tenant) = TenantId::parse(&tenant) else { continue };
        let txn = svc.db.begin_write().await?;
        crate::storage::db::lock_until_commit(&txn, &format!("kontakt-refit:{tenant}")).await?;
        let pending = job::of_tenant(&tenant)
            .filter(job::Column::Kind.eq(JobKind::FitScoreModel.as_str()))
            .filter(
                Condition::any()
                    .add(job::Column::State.is_in([JobState::Queued.as_str(), JobState::Running.as_str()]))
                    .add(job::Column::CreatedAt.gt(due_before)),
            )
            .count(&txn)
            .await?;
        if pending == 0 {
            insert(&txn, &tenant, JobKind::FitScoreModel, SCHEDULE).await?;
            queued += 1;
        }
        txn.commit().await?;
    }
    Ok(queued)
}

async fn insert(
    conn: &impl sea_orm::ConnectionTrait,
    tenant: &TenantId,
    kind: JobKind,
    requested_by: &str,
) -> ApiResult<job::Model> {
    Ok(job::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        kind: Set(kind.as_str().to_owned()),
        state: Set(JobState::Queued.as_str().to_owned()),
        progress: Set(serde_json::json!(Progress::default())),
        checkpoint: Set(None),
        result: Set(None),
        error: Set(None),
        requested_by: Set(requested_by.chars().take(256).collect()),
        runner: Set(None),
        created_at: Set(Utc::now()),
        started_at: Set(None),
        finished_at: Set(None),
        heartbeat_at: Set(None),
    }
    .insert(conn)
    .await?)
}

/// One of the caller's tenant's jobs; `NOT_FOUND` for an id of another tenant's.
pub async fn get(caller: &Caller, svc: &Services, id: Uuid) -> ApiResult<Job> {
    readable_kinds(caller)?;
    let job: Job = job::of_tenant(caller.tenant())
        .filter(job::Column::Id.eq(id))
        .one(svc.db.conn())
        .await?
        .ok_or_else(|| ApiError::NotFound("job".into()))?
        .try_into()?;
    caller.require(job.kind.scope())?;
    Ok(job)
}

/// The caller's tenant's jobs, newest first, keyset-paged on `(tenant, id)`.
pub async fn list(caller: &Caller, svc: &Services, page: PageRequest) -> ApiResult<Page<Job>> {
    let kinds = readable_kinds(caller)?;
    let mut query = job::of_tenant(caller.tenant())
        .filter(job::Column::Kind.is_in(kinds))
        .order_by_desc(job::Column::Id)
        .limit(page.first as u64 + 1);
    if let Some(after) = page.after {
        query = query.filter(job::Column::Id.lt(after));
    }
    let mut rows = query.all(svc.db.conn()).await?;
    let has_next_page = rows.len() > page.first;
    rows.truncate(page.first);
    Ok(Page {
        items: rows.into_iter().map(Job::try_from).collect::<ApiResult<_>>()?,
        has_next_page,
        has_previous_page: page.after.is_some(),
    })
}

/// A running job's heartbeat is refreshed this often…
const HEARTBEAT: Duration = Duration::from_secs(5);
/// …and a RUNNING job whose heartbeat is older than this is taken to be abandoned by a stopped instance.
const STALE_AFTER: Duration = Duration::from_secs(30);

/// The background runner; `stop` ends it between batches (the job goes back to QUEUED with its checkpoint).
pub struct JobRunner {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl JobRunner {
    /// Starts the runner on `svc` (whose database should be the jobs' own: no statement timeout).
    /// `refit_every`: how often each tenant's score model is fitted again (none: only on demand).
    pub fn start(svc: Services, poll: Duration, refit_every: Option<Duration>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let runner = Runner { svc, poll, stopped, id: Uuid::new_v4(), refit_every, scheduled_at: None };
        let task = tokio::spawn(runner.run());
        JobRunner { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Runner {
    svc: Services,
    poll: Duration,
    stopped: watch::Receiver<bool>,
    /// This runner's claim token: every write of a claimed job is conditional on it.
    id: Uuid,
    /// How often a tenant's score model is fitted again (none: never by schedule).
    refit_every: Option<Duration>,
    scheduled_at: Option<tokio::time::Instant>,
}

/// How often the runner looks for score models due a refit.
const SCHEDULE_EVERY: Duration = Duration::from_secs(60);

/// How a run ended short of an outcome.
enum Interrupted {
    /// Asked to stop: the job goes back to QUEUED.
    Stopped,
    /// Another runner holds the job now: leave it alone.
    Lost,
}

impl Runner {
    async fn run(mut self) {
        while !*self.stopped.borrow() {
            self.schedule().await;
            match self.claim().await {
                Ok(Some(job)) => self.work(job).await,
                Ok(None) => self.idle().await,
                Err(err) => {
                    tracing::error!(error = %err, "claiming a job failed");
                    self.idle().await;
                }
            }
        }
    }

    /// Queues the score-model refits that are due, at most once a minute (and at least once per refit interval).
    async fn schedule(&mut self) {
        let Some(every) = self.refit_every else { return };
        let now = tokio::time::Instant::now();
        if self.scheduled_at.is_some_and(|at| now.duration_since(at) < every.min(SCHEDULE_EVERY)) {
            return;
        }
        self.scheduled_at = Some(now);
        match schedule_refits(&self.svc, every).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tenants = n, "score-model refits queued"),
            Err(err) => tracing::warn!(error = %err, "queueing score-model refits failed"),
        }
    }

    async fn idle(&mut self) {
        tokio::select! {
            () = tokio::time::sleep(self.poll) => {}
            _ = self.stopped.changed() => {}
        }
    }

    fn claimable(now: DateTime<Utc>) -> Condition {
        let stale = now - chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
        Condition::any().add(job::Column::State.eq(JobState::Queued.as_str())).add(
            Condition::all()
                .add(job::Column::State.eq(JobState::Running.as_str()))
                .add(Condition::any().add(job::Column::HeartbeatAt.is_null()).add(job::Column::HeartbeatAt.lt(stale))),
        )
    }

    /// Takes the oldest claimable job: a conditional UPDATE (state and heartbeat as read), so of several instances
    /// only one wins; in a write transaction, which SQLite serializes.
    async fn claim(&self) -> ApiResult<Option<job::Model>> {
        let db = &self.svc.db;
        let now = Utc::now();
        let Some(candidate) = job::Entity::find()
            .filter(Self::claimable(now))
            .order_by_asc(job::Column::Id)
            .select_only()
            .column(job::Column::Id)
            .into_tuple::<Uuid>()
            .one(db.conn())
            .await?
        else {
            return Ok(None);
        };
        let txn = db.begin_write().await?;
        let claimed = job::update_by_id(candidate)
            .col_expr(job::Column::State, Expr::value(JobState::Running.as_str()))
            .col_expr(job::Column::Runner, Expr::value(self.id))
            .col_expr(job::Column::HeartbeatAt, Expr::value(now))
            .col_expr(
                job::Column::StartedAt,
                Expr::expr(sea_orm::sea_query::Func::coalesce([Expr::col(job::Column::StartedAt), Expr::value(now)])),
            )
            .filter(Self::claimable(now))
            .exec(&txn)
            .await?
            .rows_affected;
        let row = if claimed == 1 { job::Entity::find_by_id(candidate).one(&txn).await? } else { None };
        txn.commit().await?;
        Ok(row)
    }

    /// Runs a claimed job to its end (or to a stop), refreshing its heartbeat meanwhile.
    async fn work(&mut self, row: job::Model) {
        let id = row.id;
        tracing::info!(job = %id, kind = %row.kind, tenant = %row.tenant, "job started");
        let mut stopped = self.stopped.clone();
        let outcome = {
            let run = self.execute(row, &mut stopped);
            tokio::pin!(run);
            // The heartbeat runs beside the job, never instead of it: a heartbeat waiting for a connection must
            // not stop the job from finishing the transaction that holds one.
            let heartbeat = async {
                let mut beat = tokio::time::interval(HEARTBEAT);
                beat.tick().await;
                loop {
                    beat.tick().await;
                    let now = Utc::now();
                    if let Err(err) = self.update(id, |q| q.col_expr(job::Column::HeartbeatAt, Expr::value(now))).await
                    {
                        tracing::warn!(job = %id, error = %err, "job heartbeat failed");
                    }
                }
            };
            tokio::select! {
                outcome = &mut run => outcome,
                never = heartbeat => never,
            }
        };
        let now = Utc::now();
        let written = match outcome {
            Ok(Ok(result)) => {
                tracing::info!(job = %id, "job succeeded");
                self.update(id, |q| {
                    q.col_expr(job::Column::State, Expr::value(JobState::Succeeded.as_str()))
                        .col_expr(job::Column::Result, Expr::value(result))
                        .col_expr(job::Column::FinishedAt, Expr::value(now))
                        .col_expr(job::Column::HeartbeatAt, Expr::value(now))
                })
                .await
            }
            Ok(Err(Interrupted::Stopped)) => {
                tracing::info!(job = %id, "job paused for shutdown; it resumes from its checkpoint");
                self.update(id, |q| {
                    q.col_expr(job::Column::State, Expr::value(JobState::Queued.as_str()))
                        .col_expr(job::Column::Runner, Expr::value(Option::<Uuid>::None))
                        .col_expr(job::Column::HeartbeatAt, Expr::value(Option::<DateTime<Utc>>::None))
                })
                .await
            }
            Ok(Err(Interrupted::Lost)) => {
                tracing::warn!(job = %id, "another runner took the job over");
                Ok(0)
            }
            Err(err) => {
                let message = match &err {
                    ApiError::Internal(cause) => {
                        tracing::error!(job = %id, error = ?cause, "job failed");
                        "internal error".to_owned()
                    }
                    other => other.to_string(),
                };
                self.update(id, |q| {
                    q.col_expr(job::Column::State, Expr::value(JobState::Failed.as_str()))
                        .col_expr(job::Column::Error, Expr::value(message))
                        .col_expr(job::Column::FinishedAt, Expr::value(now))
                })
                .await
            }
        };
        if let Err(err) = written {
            tracing::error!(job = %id, error = %err, "recording the job's outcome failed; it is claimed again when stale");
        }
    }

    /// Updates the job while this runner holds it; returns the rows changed (0: it lost the job).
    async fn update(
        &self,
        id: Uuid,
        set: impl FnOnce(sea_orm::UpdateMany<job::Entity>) -> sea_orm::UpdateMany<job::Entity>,
    ) -> ApiResult<u64> {
        Ok(set(job::update_by_id(id))
            .filter(job::Column::Runner.eq(self.id))
            .filter(job::Column::State.eq(JobState::Running.as_str()))
            .exec(self.svc.db.conn())
            .await?
            .rows_affected)
    }

    async fn execute(
        &self,
        row: job::Model,
        stopped: &mut watch::Receiver<bool>,
    ) -> ApiResult<Result<serde_json::Value, Interrupted>> {
        let tenant = TenantId::parse(&row.tenant)?;
        let kind = JobKind::parse(&row.kind)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("job {}: unknown kind {}", row.id, row.kind)))?;
        // The job acts for the caller who asked for it, with the scope its kind needs and nothing else.
        let caller = Caller::for_job(tenant, row.requested_by.clone(), BTreeSet::from([kind.scope()]));
        match kind {
            JobKind::ReresolveCustomers => self.reresolve(&caller, row, stopped).await,
            JobKind::RederiveStages => self.rederive(&caller, row, stopped).await,
            JobKind::FitScoreModel => {
                let report = crate::derived::scores::fit(&caller, &self.svc).await?;
                Ok(Ok(serde_json::to_value(report).map_err(ApiError::internal)?))
            }
            JobKind::BackfillDefinitions => self.backfill(&caller, row, stopped).await,
        }
    }

    /// Definition backfill in batches of customers after the checkpoint; each batch's values, events, progress and
    /// checkpoint commit together. The versions to activate are fixed when the job starts (kept in its result).
    async fn backfill(
        &self,
        caller: &Caller,
        row: job::Model,
        stopped: &mut watch::Receiver<bool>,
    ) -> ApiResult<Result<serde_json::Value, Interrupted>> {
        use crate::derived::{catalog, events, maintain};
        let svc = &self.svc;
        let tenant = caller.tenant();
        let mut progress: Progress = serde_json::from_value(row.progress.clone()).unwrap_or_default();
        let mut after = checkpoint(&row)?;
        #[derive(Serialize, Deserialize, Default)]
        #[serde(rename_all = "camelCase")]
        struct Plan {
            /// The pending versions this job activates.
            definitions: Vec<Uuid>,
            /// The keys it computes (those versions' keys and their dependents).
            keys: Vec<String>,
            events: u64,
        }
        let mut plan: Plan = match (&after, row.result.clone().and_then(|r| serde_json::from_value(r).ok())) {
            (Some(_), Some(plan)) => plan,
            _ => {
                // The versions not backfilled yet (a job queued after another that took them finds none).
                let latest = catalog::latest(svc.db.conn(), tenant).await?;
                let pending: Vec<&catalog::Definition> =
                    latest.definitions().filter(|d| d.backfilled_at.is_none()).collect();
                let keys = maintain::with_dependents(&latest, &pending.iter().map(|d| d.key.clone()).collect());
                progress = Progress {
                    done: 0,
                    total: customer::of_tenant(tenant)
                        .filter(customer::Column::MergedInto.is_null())
                        .count(svc.db.conn())
                        .await?,
                };
                Plan {
                    definitions: pending.iter().map(|d| d.id).collect(),
                    keys: keys.into_iter().collect(),
                    events: 0,
                }
            }
        };
        let keys: std::collections::BTreeSet<String> = plan.keys.iter().cloned().collect();
        while !keys.is_empty() {
            if *stopped.borrow() {
                return Ok(Err(Interrupted::Stopped));
            }
            let Some((txn, last, customers, written)) = maintain::backfill_batch(svc, tenant, &keys, after).await?
            else {
                break;
            };
            progress.done += customers as u64;
            progress.total = progress.total.max(progress.done);
            plan.events += written.len() as u64;
            let recorded = job::update_by_id(row.id)
                .col_expr(job::Column::Progress, Expr::value(serde_json::json!(progress)))
                .col_expr(job::Column::Checkpoint, Expr::value(last.to_string()))
                .col_expr(job::Column::Result, Expr::value(serde_json::to_value(&plan).map_err(ApiError::internal)?))
                .col_expr(job::Column::HeartbeatAt, Expr::value(Utc::now()))
                .filter(job::Column::Runner.eq(self.id))
                .filter(job::Column::State.eq(JobState::Running.as_str()))
                .exec(&txn)
                .await?
                .rows_affected;
            if recorded == 0 {
                txn.rollback().await?;
                return Ok(Err(Interrupted::Lost));
            }
            txn.commit().await?;
            events::publish(svc, tenant, &written).await;
            after = Some(last);
        }
        let activated = catalog::activate(svc, tenant, &plan.definitions).await?;
        let mut result = serde_json::to_value(&plan).map_err(ApiError::internal)?;
        result["activated"] = serde_json::json!(activated);
        Ok(Ok(result))
    }

    /// Stage re-derivation in batches of touchpoints after the checkpoint, each committed with its progress.
    async fn rederive(
        &self,
        caller: &Caller,
        row: job::Model,
        stopped: &mut watch::Receiver<bool>,
    ) -> ApiResult<Result<serde_json::Value, Interrupted>> {
        use crate::storage::entities::touchpoint;
        use crate::touchpoints::stages;
        let svc = &self.svc;
        let tenant = caller.tenant();
        let rules = stages::for_tenant(svc.db.conn(), tenant).await?;
        let mut progress: Progress = serde_json::from_value(row.progress.clone()).unwrap_or_default();
        let mut changed: u64 = row
            .result
            .as_ref()
            .and_then(|r| r.get("touchpointsChanged"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        let mut after = checkpoint(&row)?;
        if after.is_none() {
            progress = Progress { done: 0, total: touchpoint::of_tenant(tenant).count(svc.db.conn()).await? };
        }
        let result = |changed: u64| serde_json::json!({ "touchpointsChanged": changed, "rulesVersion": rules.version });
        loop {
            if *stopped.borrow() {
                return Ok(Err(Interrupted::Stopped));
            }
            let Some(batch) = stages::rederive_batch(svc, tenant, &rules, after).await? else { break };
            progress.done += batch.touchpoints;
            progress.total = progress.total.max(progress.done);
            changed += batch.changed;
            let recorded = job::update_by_id(row.id)
                .col_expr(job::Column::Progress, Expr::value(serde_json::json!(progress)))
                .col_expr(job::Column::Checkpoint, Expr::value(batch.last.to_string()))
                .col_expr(job::Column::Result, Expr::value(result(changed)))
                .col_expr(job::Column::HeartbeatAt, Expr::value(Utc::now()))
                .filter(job::Column::Runner.eq(self.id))
                .filter(job::Column::State.eq(JobState::Running.as_str()))
                .exec(&batch.txn)
                .await?
                .rows_affected;
            if recorded == 0 {
                batch.txn.rollback().await?;
                return Ok(Err(Interrupted::Lost));
            }
            after = Some(batch.last);
            batch.commit(svc, tenant).await?;
        }
        Ok(Ok(result(changed)))
    }

    /// Re-resolution in batches of customers after the checkpoint; each batch's writes, progress, checkpoint and
    /// result so far commit together.
    async fn reresolve(
        &self,
        caller: &Caller,
        row: job::Model,
        stopped: &mut watch::Receiver<bool>,
    ) -> ApiResult<Result<serde_json::Value, Interrupted>> {
        let svc = &self.svc;
        let tenant = caller.tenant();
        let rules = rules::for_tenant(svc, tenant).await?;
        let mut progress: Progress = serde_json::from_value(row.progress.clone()).unwrap_or_default();
        let mut report: Reresolution =
            row.result.clone().and_then(|r| serde_json::from_value(r).ok()).unwrap_or_default();
        let mut after = checkpoint(&row)?;
        if after.is_none() {
            progress = Progress { done: 0, total: customer::of_tenant(tenant).count(svc.db.conn()).await? };
        }
        loop {
            if *stopped.borrow() {
                return Ok(Err(Interrupted::Stopped));
            }
            let Some(batch) = rules::reresolve_batch(caller, svc, &rules, after, &mut report).await? else { break };
            progress.done += batch.customers as u64;
            progress.total = progress.total.max(progress.done);
            let result = serde_json::to_value(&report).map_err(ApiError::internal)?;
            let recorded = job::update_by_id(row.id)
                .col_expr(job::Column::Progress, Expr::value(serde_json::json!(progress)))
                .col_expr(job::Column::Checkpoint, Expr::value(batch.last.to_string()))
                .col_expr(job::Column::Result, Expr::value(result))
                .col_expr(job::Column::HeartbeatAt, Expr::value(Utc::now()))
                .filter(job::Column::Runner.eq(self.id))
                .filter(job::Column::State.eq(JobState::Running.as_str()))
                .exec(&batch.txn)
                .await?
                .rows_affected;
            if recorded == 0 {
                batch.txn.rollback().await?;
                return Ok(Err(Interrupted::Lost));
            }
            after = Some(batch.last);
            batch.commit(svc, tenant).await?;
        }
        Ok(Ok(serde_json::to_value(&report).map_err(ApiError::internal)?))
    }
}
