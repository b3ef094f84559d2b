//! Survey answers and the rollups CX metrics are read from. Every write here runs inside the transaction of the
//! change that caused it — the answer's touchpoint, a consent or restriction change, a merge, an unmerge, an
//! erasure, a change of the tenant's counting basis — so the rollups always hold exactly the answers that count.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use uuid::Uuid;

use crate::{
    auth::TenantId,
    consent::policy::{self, CxBasis},
    storage::entities::{customer, cx_answer, cx_rollup, touchpoint},
};

/// The rollup cell an answer counts in.
fn cell(a: &cx_answer::Model) -> cx_rollup::ActiveModel {
    cx_rollup::ActiveModel {
        tenant: Set(a.tenant.clone()),
        metric: Set(a.metric.clone()),
        day: Set(a.day),
        channel: Set(a.channel.clone()),
        stage: Set(a.stage.clone()),
        touchpoint_type: Set(a.touchpoint_type.clone()),
        source: Set(a.source.clone()),
        score: Set(a.score),
        answers: Set(0),
    }
}

/// Adds `delta` answers to the answer's rollup cell (one upsert).
async fn add(conn: &impl ConnectionTrait, a: &cx_answer::Model, delta: i64) -> Result<(), DbErr> {
    let mut row = cell(a);
    row.answers = Set(delta);
    cx_rollup::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                cx_rollup::Column::Tenant,
                cx_rollup::Column::Metric,
                cx_rollup::Column::Day,
                cx_rollup::Column::Channel,
                cx_rollup::Column::Stage,
                cx_rollup::Column::TouchpointType,
                cx_rollup::Column::Source,
                cx_rollup::Column::Score,
            ])
            .value(cx_rollup::Column::Answers, Expr::col((cx_rollup::Entity, cx_rollup::Column::Answers)).add(delta))
            .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// Records the answer a SURVEY_RESPONSE touchpoint carries, counting it when the customer's state allows: in the
/// touchpoint's transaction. `about` is the touchpoint the answer rates, already checked to be the customer's.
pub(crate) async fn recorded(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    tp: &touchpoint::Model,
    about: Option<&touchpoint::Model>,
) -> Result<(), DbErr> {
    let (Some(metric), Some(score)) = (tp.feedback_metric.clone(), tp.feedback_score) else { return Ok(()) };
    if conn.get_database_backend() == sea_orm::DbBackend::Postgres {
        // A concurrent consent change holds this row until it commits (`bump_consent_version`), and its recount
        // cannot see this answer: wait for it, and read the state it committed.
        customer::of_tenant(tenant)
            .filter(customer::Column::Id.eq(tp.customer_id))
            .select_only()
            .column(customer::Column::Id)
            .lock_exclusive()
            .into_tuple::<Uuid>()
            .one(conn)
            .await?;
    }
    let basis = super::settings::of_tenant(conn, tenant).await?.basis;
    let states = policy::states_of(conn, tenant, &[tp.customer_id]).await?;
    let now = Utc::now();
    let counting = states.get(&tp.customer_id).and_then(|s| policy::cx_counting(s, basis, now));
    let answer = cx_answer::Model {
        touchpoint_id: tp.id,
        tenant: tenant.as_str().to_owned(),
        customer_id: tp.customer_id,
        metric,
        score,
        answered_at: tp.occurred_at,
        day: tp.occurred_at.date_naive(),
        channel: tp.channel.clone(),
        stage: tp.stage.clone(),
        touchpoint_type: about.map_or_else(|| tp.kind.clone(), |a| a.kind.clone()),
        source: tp.source.clone(),
        about_touchpoint_id: about.map(|a| a.id),
        counted: counting.is_some(),
        counts_until: counting.flatten(),
    };
    if answer.counted {
        add(conn, &answer, 1).await?;
    }
    super::cases::on_answer(conn, tenant, &answer).await?;
    cx_answer::Entity::insert(cx_answer::ActiveModel::from(answer)).exec_without_returning(conn).await?;
    Ok(())
}

/// Applies the counting rule again to the answers of customers whose privacy state or touchpoints just changed
/// (in that change's transaction): answers whose touchpoint moved follow it, and an answer that starts or stops
/// counting is added to or taken from its rollup cell.
pub(crate) async fn recount(conn: &impl ConnectionTrait, tenant: &TenantId, customers: &[Uuid]) -> Result<(), DbErr> {
    if customers.is_empty() {
        return Ok(());
    }
    // The answers held by these customers, and those whose touchpoint now belongs to one of them.
    let moved_here = touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::CustomerId.is_in(customers.iter().copied()))
        .filter(touchpoint::Column::FeedbackMetric.is_not_null())
        .select_only()
        .column(touchpoint::Column::Id)
        .into_query();
    let answers = cx_answer::of_tenant(tenant)
        .filter(
            cx_answer::Column::CustomerId
                .is_in(customers.iter().copied())
                .or(cx_answer::Column::TouchpointId.in_subquery(moved_here)),
        )
        .all(conn)
        .await?;
    if answers.is_empty() {
        return Ok(());
    }
    let owners: HashMap<Uuid, Uuid> = touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::Id.is_in(answers.iter().map(|a| a.touchpoint_id)))
        .select_only()
        .column(touchpoint::Column::Id)
        .column(touchpoint::Column::CustomerId)
        .into_tuple::<(Uuid, Uuid)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    apply(conn, tenant, answers, &owners).await
}

/// Recounts every answer of the tenant (a change of its counting basis), a thousand customers at a time.
pub(crate) async fn recount_tenant(conn: &impl ConnectionTrait, tenant: &TenantId) -> Result<(), DbErr> {
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = cx_answer::of_tenant(tenant)
            .select_only()
            .column(cx_answer::Column::CustomerId)
            .distinct()
            .order_by_asc(cx_answer::Column::CustomerId)
            .limit(1000);
        if let Some(after) = after {
            query = query.filter(cx_answer::Column::CustomerId.gt(after));
        }
        let ids: Vec<Uuid> = query.into_tuple().all(conn).await?;
        let Some(last) = ids.last().copied() else { return Ok(()) };
        recount(conn, tenant, &ids).await?;
        after = Some(last);
    }
}

/// Brings each answer in line with its touchpoint's owner (`owners`; an answer whose touchpoint is gone is removed)
/// and with the counting rule for that owner now.
async fn apply(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    answers: Vec<cx_answer::Model>,
    owners: &HashMap<Uuid, Uuid>,
) -> Result<(), DbErr> {
    let basis: CxBasis = super::settings::of_tenant(conn, tenant).await?.basis;
    let mut ids: Vec<Uuid> = owners.values().copied().collect();
    ids.sort();
    ids.dedup();
    let states = policy::states_of(conn, tenant, &ids).await?;
    let now = Utc::now();
    for answer in answers {
        let Some(owner) = owners.get(&answer.touchpoint_id).copied() else {
            if answer.counted {
                add(conn, &answer, -1).await?;
            }
            cx_answer::delete_of_tenant(tenant)
                .filter(cx_answer::Column::TouchpointId.eq(answer.touchpoint_id))
                .exec(conn)
                .await?;
            continue;
        };
        let counting = states.get(&owner).and_then(|s| policy::cx_counting(s, basis, now));
        let (counted, until) = (counting.is_some(), counting.flatten());
        if owner == answer.customer_id && counted == answer.counted && until == answer.counts_until {
            continue;
        }
        if counted != answer.counted {
            add(conn, &answer, if counted { 1 } else { -1 }).await?;
        }
        cx_answer::update_of_tenant(tenant)
            .col_expr(cx_answer::Column::CustomerId, Expr::value(owner))
            .col_expr(cx_answer::Column::Counted, Expr::value(counted))
            .col_expr(cx_answer::Column::CountsUntil, Expr::value(until))
            .filter(cx_answer::Column::TouchpointId.eq(answer.touchpoint_id))
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// Takes an erased customer's answers out of the rollups and deletes them (in the erasure's transaction).
pub(crate) async fn erase(conn: &impl ConnectionTrait, tenant: &TenantId, customer: Uuid) -> Result<u64, DbErr> {
    let answers = cx_answer::of_tenant(tenant).filter(cx_answer::Column::CustomerId.eq(customer)).all(conn).await?;
    for answer in answers.iter().filter(|a| a.counted) {
        add(conn, answer, -1).await?;
    }
    let gone =
        cx_answer::delete_of_tenant(tenant).filter(cx_answer::Column::CustomerId.eq(customer)).exec(conn).await?;
    Ok(gone.rows_affected)
}

/// Counted answers whose ground expired before `now`, per rollup cell: what a read subtracts so that an expired
/// consent stops counting at once, before the sweeper recounts.
pub(crate) async fn expired_since_counted(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    metric: &str,
    now: DateTime<Utc>,
) -> Result<Vec<cx_answer::Model>, DbErr> {
    cx_answer::of_tenant(tenant)
        .filter(cx_answer::Column::Metric.eq(metric))
        .filter(cx_answer::Column::Counted.eq(true))
        .filter(cx_answer::Column::CountsUntil.lte(now))
        .all(conn)
        .await
}

/// Recounts the customers whose counted answers' ground has expired (the CX sweeper, every instance: the recount
/// is idempotent). Returns how many customers it recounted.
pub async fn recount_expired(db: &sea_orm::DatabaseConnection) -> Result<usize, DbErr> {
    use sea_orm::TransactionTrait;
    let now = Utc::now();
    let due: Vec<(String, Uuid)> = cx_answer::Entity::find()
        .filter(cx_answer::Column::Counted.eq(true))
        .filter(cx_answer::Column::CountsUntil.lte(now))
        .select_only()
        .column(cx_answer::Column::Tenant)
        .column(cx_answer::Column::CustomerId)
        .distinct()
        .limit(500)
        .into_tuple()
        .all(db)
        .await?;
    for (tenant, customer) in &due {
        let Ok(tenant) = TenantId::parse(tenant) else { continue };
        let txn = db
            .begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        recount(&txn, &tenant, &[*customer]).await?;
        txn.commit().await?;
    }
    Ok(due.len())
}

/// A rollup cell: tenant, metric, day, channel, stage, touchpoint type, source, score.
type CellKey = (String, String, chrono::NaiveDate, String, String, String, String, i16);

/// Records the answers of survey touchpoints that have none yet — those stored before CX metrics existed, or
/// written around the API (the benchmark seed's COPY) — counted by the rule. One pass in touchpoint id order, a
/// thousand survey touchpoints without an answer at a time, each thousand in one transaction: one multi-row insert
/// of answers and one multi-row upsert of rollup increments. Run once when the server starts (and by the seed); returns how many it
/// added. Idempotent: an answer already recorded is skipped, so two instances starting together add each once.
pub async fn backfill(db: &sea_orm::DatabaseConnection) -> Result<u64, DbErr> {
    use std::collections::BTreeMap;

    use sea_orm::TransactionTrait;
    let mut added = 0;
    let mut after: Option<Uuid> = None;
    loop {
        // Only those without an answer (`ix_touchpoints_feedback`): with nothing missing this is one short query.
        let recorded = cx_answer::Entity::find().select_only().column(cx_answer::Column::TouchpointId).into_query();
        let mut query = touchpoint::Entity::find()
            .filter(touchpoint::Column::FeedbackMetric.is_not_null())
            .filter(touchpoint::Column::FeedbackScore.is_not_null())
            .filter(touchpoint::Column::Id.not_in_subquery(recorded))
            .order_by_asc(touchpoint::Column::Id)
            .limit(1000);
        if let Some(after) = after {
            query = query.filter(touchpoint::Column::Id.gt(after));
        }
        let batch: Vec<touchpoint::Model> = query.all(db).await?;
        let Some(last) = batch.last().map(|t| t.id) else { return Ok(added) };
        after = Some(last);
        let txn = db
            .begin_with_options(sea_orm::TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        let known: std::collections::HashSet<Uuid> = cx_answer::Entity::find()
            .filter(cx_answer::Column::TouchpointId.is_in(batch.iter().map(|t| t.id)))
            .select_only()
            .column(cx_answer::Column::TouchpointId)
            .into_tuple::<Uuid>()
            .all(&txn)
            .await?
            .into_iter()
            .collect();
        let mut by_tenant: BTreeMap<String, Vec<&touchpoint::Model>> = BTreeMap::new();
        for tp in batch.iter().filter(|t| !known.contains(&t.id)) {
            by_tenant.entry(tp.tenant.clone()).or_default().push(tp);
        }
        let now = Utc::now();
        let mut answers = Vec::new();
        let mut cells: BTreeMap<CellKey, i64> = BTreeMap::new();
        for (tenant_text, tps) in by_tenant {
            let Ok(tenant) = TenantId::parse(&tenant_text) else { continue };
            let basis = super::settings::of_tenant(&txn, &tenant).await?.basis;
            let mut ids: Vec<Uuid> = tps.iter().map(|t| t.customer_id).collect();
            ids.sort_unstable();
            ids.dedup();
            let states = policy::states_of(&txn, &tenant, &ids).await?;
            for tp in tps {
                let counting = states.get(&tp.customer_id).and_then(|s| policy::cx_counting(s, basis, now));
                let answer = cx_answer::Model {
                    touchpoint_id: tp.id,
                    tenant: tp.tenant.clone(),
                    customer_id: tp.customer_id,
                    metric: tp.feedback_metric.clone().unwrap_or_default(),
                    score: tp.feedback_score.unwrap_or_default(),
                    answered_at: tp.occurred_at,
                    day: tp.occurred_at.date_naive(),
                    channel: tp.channel.clone(),
                    stage: tp.stage.clone(),
                    touchpoint_type: tp.kind.clone(),
                    source: tp.source.clone(),
                    about_touchpoint_id: None,
                    counted: counting.is_some(),
                    counts_until: counting.flatten(),
                };
                if answer.counted {
                    let key = (
                        answer.tenant.clone(),
                        answer.metric.clone(),
                        answer.day,
                        answer.channel.clone(),
                        answer.stage.clone(),
                        answer.touchpoint_type.clone(),
                        answer.source.clone(),
                        answer.score,
                    );
                    *cells.entry(key).or_default() += 1;
                }
                answers.push(cx_answer::ActiveModel::from(answer));
            }
        }
        let n = answers.len() as u64;
        if !answers.is_empty() {
            cx_answer::Entity::insert_many(answers).exec_without_returning(&txn).await?;
        }
        if !cells.is_empty() {
            let rows = cells.into_iter().map(|((tenant, metric, day, channel, stage, kind, source, score), n)| {
                cx_rollup::ActiveModel {
                    tenant: Set(tenant),
                    metric: Set(metric),
                    day: Set(day),
                    channel: Set(channel),
                    stage: Set(stage),
                    touchpoint_type: Set(kind),
                    source: Set(source),
                    score: Set(score),
                    answers: Set(n),
                }
            });
            cx_rollup::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([
                        cx_rollup::Column::Tenant,
                        cx_rollup::Column::Metric,
                        cx_rollup::Column::Day,
                        cx_rollup::Column::Channel,
                        cx_rollup::Column::Stage,
                        cx_rollup::Column::TouchpointType,
                        cx_rollup::Column::Source,
                        cx_rollup::Column::Score,
                    ])
                    .value(
                        cx_rollup::Column::Answers,
                        Expr::col((cx_rollup::Entity, cx_rollup::Column::Answers)).add(Expr::cust("excluded.answers")),
                    )
                    .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        added += n;
    }
}

/// Moves survey answers whose touchpoint's journey stage changed (a re-derivation under new journey rules) to their
/// new rollup cell, in the re-derivation's transaction.
pub(crate) async fn restaged(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    moves: &[(Uuid, &str)],
) -> Result<(), DbErr> {
    if moves.is_empty() {
        return Ok(());
    }
    let answers = cx_answer::of_tenant(tenant)
        .filter(cx_answer::Column::TouchpointId.is_in(moves.iter().map(|(id, _)| *id)))
        .all(conn)
        .await?;
    let to: HashMap<Uuid, &str> = moves.iter().copied().collect();
    for answer in answers {
        let Some(stage) = to.get(&answer.touchpoint_id).copied() else { continue };
        if stage == answer.stage {
            continue;
        }
        if answer.counted {
            add(conn, &answer, -1).await?;
            add(conn, &cx_answer::Model { stage: stage.to_owned(), ..answer.clone() }, 1).await?;
        }
        cx_answer::update_of_tenant(tenant)
            .col_expr(cx_answer::Column::Stage, Expr::value(stage))
            .filter(cx_answer::Column::TouchpointId.eq(answer.touchpoint_id))
            .exec(conn)
            .await?;
    }
    Ok(())
}
