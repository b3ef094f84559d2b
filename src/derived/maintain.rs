//! Derived state kept as writes commit (issue 10): every write that can change what a definition answers — a
//! touchpoint, a record or trait change, an identity, a merge, an unmerge, a consent or restriction change — adds
//! the customer to `derived_dirty` in its own transaction ([`mark`]). A [`DerivedWorker`] on every instance claims
//! dirty customers (on PostgreSQL with `SKIP LOCKED`, so instances share the work), evaluates the latest version of
//! every definition for them, and in one transaction writes what changed to `derived_values` and the change events
//! to the outbox (`derived_events`), and when time alone changes each customer next (`derived_subjects`). The same
//! worker re-evaluates customers whose next change is due (a window edge passed): that is the window-expiry event.
//!
//! Reads do not wait for any of this: `Customer.segments`/`computedTraits` are evaluated at read and always exact.
//! What the worker keeps is what is pushed (subscriptions, webhooks) and what a backfill materializes. Bound: a
//! committed write wakes the instance's worker at once; other instances' workers look every `KONTAKT_DERIVED_POLL_MS`
//! (default 200 ms); a window edge is acted on within one poll of passing.
//!
//! A customer who may not be profiled (`policy::profiling_allowed`), is merged into another or erased has no derived
//! state: the consent transaction deletes it (`forget_if_not_profiled`), and the worker keeps nothing for them.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::OnConflict,
};
use serde_json::Value;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{
    catalog::{self, Definition, Kind},
    definitions::{self, Body},
    events::{self, DerivedEvent, EventKind},
};
use crate::{
    auth::{Caller, Scope, TenantId},
    consent::policy,
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{customer, derived_dirty, derived_event, derived_subject, derived_value},
};

/// Why a customer's derived state was evaluated again: the cause every change event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Cause {
    /// A touchpoint was recorded.
    Touchpoint,
    /// A record, a trait or an identity changed.
    Record,
    /// Another customer was merged into this one, or this one into another.
    Merge,
    /// A merge was undone.
    Unmerge,
    /// A consent decision or a restriction changed.
    Consent,
    /// A window's edge passed: time alone changed the answer.
    WindowExpiry,
    /// A new definition version was backfilled.
    DefinitionChange,
    /// The tenant's score model was fitted again: every buyer's score bands are evaluated under it.
    ScoreModel,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Touchpoint => "TOUCHPOINT",
            Cause::Record => "RECORD",
            Cause::Merge => "MERGE",
            Cause::Unmerge => "UNMERGE",
            Cause::Consent => "CONSENT",
            Cause::WindowExpiry => "WINDOW_EXPIRY",
            Cause::DefinitionChange => "DEFINITION_CHANGE",
            Cause::ScoreModel => "SCORE_MODEL",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Cause::Touchpoint,
            Cause::Record,
            Cause::Merge,
            Cause::Unmerge,
            Cause::Consent,
            Cause::WindowExpiry,
            Cause::DefinitionChange,
            Cause::ScoreModel,
        ]
        .into_iter()
        .find(|c| c.as_str() == raw)
    }
}

/// Queues customers for re-evaluation, in the caller's transaction (so a rolled-back write queues nothing and a
/// committed one cannot be missed). A customer already queued takes the new cause and time (so a worker pass that
/// evaluated them before this write leaves them queued), and keeps the mark of a consent change among them (so the
/// revocation it may call for is not lost behind a later touchpoint).
pub async fn mark(conn: &impl ConnectionTrait, tenant: &TenantId, ids: &[Uuid], cause: Cause) -> Result<(), DbErr> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let now = Utc::now();
    for chunk in ids.chunks(500) {
        let rows = chunk.iter().map(|id| derived_dirty::ActiveModel {
            tenant: sea_orm::Set(tenant.as_str().to_owned()),
            customer_id: sea_orm::Set(*id),
            cause: sea_orm::Set(cause.as_str().to_owned()),
            consent_changed: sea_orm::Set(cause == Cause::Consent),
            queued_at: sea_orm::Set(now),
        });
        // A model refit queues every buyer; one already queued for their own change keeps that cause.
        let updated: &[derived_dirty::Column] = if cause == Cause::ScoreModel {
            &[derived_dirty::Column::QueuedAt]
        } else {
            &[derived_dirty::Column::QueuedAt, derived_dirty::Column::Cause]
        };
        derived_dirty::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([derived_dirty::Column::Tenant, derived_dirty::Column::CustomerId])
                    .update_columns(updated.iter().copied())
                    .value(
                        derived_dirty::Column::ConsentChanged,
                        sea_orm::sea_query::Expr::cust("derived_dirty.consent_changed OR excluded.consent_changed"),
                    )
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

/// Deletes a customer's derived state when they may no longer be profiled: called in the
/// transaction of every consent, restriction, merge and unmerge (`ledger::bump_consent_version`).
pub async fn forget_if_not_profiled(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    customer_id: Uuid,
) -> Result<(), DbErr> {
    let held = derived_subject::of_tenant(tenant)
        .filter(derived_subject::Column::CustomerId.eq(customer_id))
        .select_only()
        .column(derived_subject::Column::CustomerId)
        .into_tuple::<Uuid>()
        .one(conn)
        .await?
        .is_some();
    if !held {
        return Ok(());
    }
    // Not under the tenant's derived-state lock: a consent transaction already holds the customer's row, and waiting
    // for the lock there made consent writes time out under load. A worker pass that evaluated before this change
    // and writes after it is undone by the next pass (this change queued the customer).
    // Only a refusal of profiling deletes here; a customer merged away keeps their values until the worker has
    // announced their exits (cause MERGE) and then drops them.
    let allowed = policy::states_of(conn, tenant, &[customer_id])
        .await?
        .get(&customer_id)
        .is_some_and(|s| policy::profiling_allowed(s, Utc::now()));
    if !allowed {
        forget(conn, tenant, &[customer_id]).await?;
    }
    Ok(())
}

/// Deletes the derived state (values, due times, queue entries) of these customers.
pub async fn forget(conn: &impl ConnectionTrait, tenant: &TenantId, ids: &[Uuid]) -> Result<(), DbErr> {
    derived_value::delete_of_tenant(tenant)
        .filter(derived_value::Column::CustomerId.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    derived_subject::delete_of_tenant(tenant)
        .filter(derived_subject::Column::CustomerId.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Erasure: everything derived about these customers goes, the outbox events about them included.
pub async fn erase(conn: &impl ConnectionTrait, tenant: &TenantId, ids: &[Uuid]) -> Result<(), DbErr> {
    // Serialized with the worker's writes, so a pass that evaluated before the erasure cannot write after it.
    lock_tenant(conn, tenant).await?;
    forget(conn, tenant, ids).await?;
    derived_dirty::delete_of_tenant(tenant)
        .filter(derived_dirty::Column::CustomerId.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    derived_event::delete_of_tenant(tenant)
        .filter(derived_event::Column::CustomerId.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Of these customers, the ones that exist, are not merged away, and may be profiled now.
async fn profiled(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<BTreeSet<Uuid>, DbErr> {
    let live: Vec<Uuid> = customer::of_tenant(tenant)
        .filter(customer::Column::Id.is_in(ids.iter().copied()))
        .filter(customer::Column::MergedInto.is_null())
        .select_only()
        .column(customer::Column::Id)
        .into_tuple()
        .all(conn)
        .await?;
    let states = policy::states_of(conn, tenant, &live).await?;
    Ok(live.into_iter().filter(|id| states.get(id).is_some_and(|s| policy::profiling_allowed(s, now))).collect())
}

/// On PostgreSQL, serializes the tenant's derived-state writers until commit: the outbox positions of a tenant are
/// then taken in commit order (a reader never sees position n+1 before n), and two instances never write the same
/// customer's values at once. SQLite serializes writers anyway.
async fn lock_tenant(conn: &impl ConnectionTrait, tenant: &TenantId) -> Result<(), DbErr> {
    crate::storage::db::lock_until_commit(conn, &format!("kontakt-derived:{tenant}")).await
}

/// The key prefix under which a customer's score bands are kept beside their definitions' values (`score:rfm`,
/// `score:churnRisk`; definition keys cannot hold a `:`), and their kind.
pub const SCORE_KEY: &str = "score:";
pub const SCORE_KIND: &str = "SCORE_BAND";

/// One stored value.
struct Stored {
    version: i32,
    value: Value,
}

/// One customer's answers (key → value) and when time alone changes one next.
type Target = (BTreeMap<String, Value>, Option<DateTime<Utc>>);

/// What the latest definitions answer now for some customers, computed without holding a transaction.
pub struct Evaluated {
    catalog: catalog::Catalog,
    /// Per customer who may be profiled: each definition's value (segments: `true` when in; only non-null values),
    /// and when time alone changes one next.
    targets: HashMap<Uuid, Target>,
    only: Option<BTreeSet<String>>,
    now: DateTime<Utc>,
    /// The tenant keeps score bands (it has fitted its score model).
    scored: bool,
}

/// Evaluates the latest version of the tenant's definitions (only the `only` keys, when given) for these customers.
/// Reads through the pool, outside any transaction: the write that follows ([`write`]) is short and holds no
/// connection while another is awaited.
pub async fn evaluate(
    svc: &Services,
    tenant: &TenantId,
    ids: &[Uuid],
    only: Option<&BTreeSet<String>>,
    now: DateTime<Utc>,
) -> ApiResult<Evaluated> {
    let conn = svc.db.conn();
    let catalog = catalog::latest(conn, tenant).await?;
    let profiled: Vec<Uuid> = profiled(conn, tenant, ids, now).await?.into_iter().collect();
    let caller = Caller::for_job(tenant.clone(), "derived-state".into(), [Scope::ProfilesRead].into());
    let subjects = if profiled.is_empty() || catalog.is_empty() {
        HashMap::new()
    } else {
        catalog::subjects(&caller, svc, &profiled).await?
    };
    // Score bands move with the whole history, not with one definition: a backfill (`only`) leaves them alone.
    let (scored, mut bands) = match only {
        None => match super::scores::bands(svc, tenant, &profiled, now).await? {
            Some(bands) => (true, bands),
            None => (false, HashMap::new()),
        },
        Some(_) => (false, HashMap::new()),
    };
    let mut targets = HashMap::new();
    for id in profiled {
        let mut target = BTreeMap::new();
        let mut next_change: Option<DateTime<Utc>> = None;
        if let Some(data) = subjects.get(&id) {
            let subject = data.subject(now);
            for d in catalog.definitions() {
                if only.is_some_and(|keys| !keys.contains(&d.key)) {
                    continue;
                }
                let (value, changes_at) = match d.parsed() {
                    Body::Segment(c) => {
                        let e = definitions::evaluate_segment(c, &subject, &catalog);
                        (if e.value { Value::Bool(true) } else { Value::Null }, e.changes_at)
                    }
                    Body::ComputedTrait(a) => {
                        let e = definitions::evaluate_trait(a, &subject, &catalog);
                        (e.value, e.changes_at)
                    }
                };
                if let Some(at) = changes_at {
                    next_change = Some(next_change.map_or(at, |n| n.min(at)));
                }
                if !value.is_null() {
                    target.insert(d.key.clone(), value);
                }
            }
        }
        if let Some(found) = bands.remove(&id) {
            target.extend(found.into_iter().map(|(score, band)| (format!("{SCORE_KEY}{score}"), band)));
        }
        targets.insert(id, (target, next_change));
    }
    Ok(Evaluated { catalog, targets, only: only.cloned(), now, scored })
}

/// Writes, in `conn` (a transaction), what changed for these customers since the stored state, and the events
/// announcing it; returns the events written. A customer no longer profiled by the time of the write (a consent
/// change committed since the evaluation) keeps nothing.
pub async fn write(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    items: &[(Uuid, Cause, bool)],
    evaluated: &Evaluated,
) -> ApiResult<Vec<DerivedEvent>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    lock_tenant(conn, tenant).await?;
    let (catalog, only, now) = (&evaluated.catalog, evaluated.only.as_ref(), evaluated.now);
    let ids: Vec<Uuid> = items.iter().map(|(id, _, _)| *id).collect();
    let profiled_now = profiled(conn, tenant, &ids, now).await?;
    let mut stored: HashMap<Uuid, BTreeMap<String, Stored>> = HashMap::new();
    for row in derived_value::of_tenant(tenant)
        .filter(derived_value::Column::CustomerId.is_in(ids.iter().copied()))
        .all(conn)
        .await?
    {
        if only.is_none_or(|keys| keys.contains(&row.key)) {
            stored
                .entry(row.customer_id)
                .or_default()
                .insert(row.key, Stored { version: row.version, value: row.value });
        }
    }
    let previous_due: HashMap<Uuid, Option<DateTime<Utc>>> = derived_subject::of_tenant(tenant)
        .filter(derived_subject::Column::CustomerId.is_in(ids.iter().copied()))
        .select_only()
        .column(derived_subject::Column::CustomerId)
        .column(derived_subject::Column::NextChangeAt)
        .into_tuple::<(Uuid, Option<DateTime<Utc>>)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();

    let mut events: Vec<derived_event::ActiveModel> = Vec::new();
    let mut upserts: Vec<derived_value::ActiveModel> = Vec::new();
    let mut deletes: Vec<(Uuid, String)> = Vec::new();
    let mut due: Vec<derived_subject::ActiveModel> = Vec::new();
    let mut gone: Vec<Uuid> = Vec::new();
    let event = |id: Uuid, kind: EventKind, d: Option<&Definition>, cause: Cause, payload: Option<Value>| {
        derived_event::ActiveModel {
            position: sea_orm::NotSet,
            tenant: sea_orm::Set(tenant.as_str().to_owned()),
            customer_id: sea_orm::Set(id),
            kind: sea_orm::Set(kind.as_str().to_owned()),
            key: sea_orm::Set(d.map(|d| d.key.clone())),
            purpose: sea_orm::Set(d.map(|d| d.purpose.as_str().to_owned())),
            cause: sea_orm::Set(cause.as_str().to_owned()),
            payload: sea_orm::Set(payload),
            at: sea_orm::Set(now),
        }
    };
    let score_event = |id: Uuid, score: &str, cause: Cause, payload: Value| derived_event::ActiveModel {
        position: sea_orm::NotSet,
        tenant: sea_orm::Set(tenant.as_str().to_owned()),
        customer_id: sea_orm::Set(id),
        kind: sea_orm::Set(EventKind::ScoreBandChanged.as_str().to_owned()),
        key: sea_orm::Set(Some(score.to_owned())),
        purpose: sea_orm::Set(None),
        cause: sea_orm::Set(cause.as_str().to_owned()),
        payload: sea_orm::Set(Some(payload)),
        at: sea_orm::Set(now),
    };
    let empty = (BTreeMap::new(), None);
    for (id, cause, consent_changed) in items {
        let (id, cause) = (*id, *cause);
        if *consent_changed && (!catalog.is_empty() || evaluated.scored) {
            // Whatever else changed: a subscriber whose purpose lost consent is told to purge (at send). A tenant
            // without definitions or scores has no derived data anyone could hold.
            events.push(event(id, EventKind::ConsentChanged, None, Cause::Consent, None));
        }
        let profiled = profiled_now.contains(&id);
        let (target, next_change) = match evaluated.targets.get(&id) {
            Some(found) if profiled => found,
            _ => &empty,
        };
        let before = stored.remove(&id).unwrap_or_default();
        for (key, value) in target {
            if let Some(score) = key.strip_prefix(SCORE_KEY) {
                let previous = before.get(key).map(|old| &old.value);
                if previous == Some(value) {
                    continue;
                }
                let payload = serde_json::json!({ "value": value, "previous": previous });
                events.push(score_event(id, score, cause, payload));
                upserts.push(derived_value::ActiveModel {
                    tenant: sea_orm::Set(tenant.as_str().to_owned()),
                    customer_id: sea_orm::Set(id),
                    key: sea_orm::Set(key.clone()),
                    kind: sea_orm::Set(SCORE_KIND.to_owned()),
                    version: sea_orm::Set(0),
                    value: sea_orm::Set(value.clone()),
                    since: sea_orm::Set(now),
                });
                continue;
            }
            let Some(d) = catalog.get(key) else { continue };
            match before.get(key) {
                None => {
                    let (kind, payload) = match d.kind {
                        Kind::Segment => (EventKind::SegmentEntered, None),
                        Kind::ComputedTrait => {
                            (EventKind::TraitChanged, Some(serde_json::json!({ "value": value, "previous": null })))
                        }
                    };
                    events.push(event(id, kind, Some(d), cause, payload));
                }
                Some(old) if old.value != *value => {
                    if d.kind == Kind::ComputedTrait {
                        let payload = serde_json::json!({ "value": value, "previous": old.value });
                        events.push(event(id, EventKind::TraitChanged, Some(d), cause, Some(payload)));
                    }
                }
                Some(old) if old.version == d.version => continue,
                Some(_) => {}
            }
            upserts.push(derived_value::ActiveModel {
                tenant: sea_orm::Set(tenant.as_str().to_owned()),
                customer_id: sea_orm::Set(id),
                key: sea_orm::Set(key.clone()),
                kind: sea_orm::Set(d.kind.as_str().to_owned()),
                version: sea_orm::Set(d.version),
                value: sea_orm::Set(value.clone()),
                since: sea_orm::Set(now),
            });
        }
        for (key, old) in &before {
            if target.contains_key(key) {
                continue;
            }
            if let Some(score) = key.strip_prefix(SCORE_KEY) {
                events.push(score_event(id, score, cause, serde_json::json!({ "value": null, "previous": old.value })));
                deletes.push((id, key.clone()));
                continue;
            }
            let d = catalog.get(key);
            match d.map(|d| d.kind) {
                Some(Kind::Segment) => events.push(event(id, EventKind::SegmentExited, d, cause, None)),
                Some(Kind::ComputedTrait) => {
                    let payload = serde_json::json!({ "value": null, "previous": old.value });
                    events.push(event(id, EventKind::TraitChanged, d, cause, Some(payload)));
                }
                None => {}
            }
            deletes.push((id, key.clone()));
        }
        if !profiled {
            gone.push(id);
            continue;
        }
        // A backfill of some keys: the customer's next change is the earlier of theirs and the one stored.
        let next_change = match (only, previous_due.get(&id).copied().flatten()) {
            (Some(_), Some(previous)) => Some(next_change.map_or(previous, |n| n.min(previous))),
            _ => *next_change,
        };
        due.push(derived_subject::ActiveModel {
            tenant: sea_orm::Set(tenant.as_str().to_owned()),
            customer_id: sea_orm::Set(id),
            next_change_at: sea_orm::Set(next_change),
            evaluated_at: sea_orm::Set(now),
        });
    }

    for (id, key) in &deletes {
        derived_value::delete_of_tenant(tenant)
            .filter(derived_value::Column::CustomerId.eq(*id))
            .filter(derived_value::Column::Key.eq(key.as_str()))
            .exec(conn)
            .await?;
    }
    for chunk in upserts.chunks(500) {
        derived_value::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    derived_value::Column::Tenant,
                    derived_value::Column::CustomerId,
                    derived_value::Column::Key,
                ])
                .update_columns([
                    derived_value::Column::Version,
                    derived_value::Column::Value,
                    derived_value::Column::Since,
                ])
                .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    for chunk in due.chunks(500) {
        derived_subject::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([derived_subject::Column::Tenant, derived_subject::Column::CustomerId])
                    .update_columns([derived_subject::Column::NextChangeAt, derived_subject::Column::EvaluatedAt])
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    if !gone.is_empty() {
        forget(conn, tenant, &gone).await?;
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // Positions are taken under the tenant's lock: the events written now are those after the tenant's last.
    let last: Option<i64> = derived_event::of_tenant(tenant)
        .select_only()
        .column_as(derived_event::Column::Position.max(), "last")
        .into_tuple::<Option<i64>>()
        .one(conn)
        .await?
        .flatten();
    for chunk in events.chunks(500) {
        derived_event::Entity::insert_many(chunk.to_vec()).exec_without_returning(conn).await?;
    }
    let rows = derived_event::of_tenant(tenant)
        .filter(derived_event::Column::Position.gt(last.unwrap_or(0)))
        .order_by_asc(derived_event::Column::Position)
        .all(conn)
        .await?;
    Ok(rows.into_iter().filter_map(DerivedEvent::from_row).collect())
}

/// Customers taken per worker pass.
const CLAIM: u64 = 200;

/// The oldest queued customers (up to [`CLAIM`]), read without locking: several instances may take the same ones,
/// and the write under the tenant's lock makes that harmless (it diffs against what the other stored).
async fn queued(conn: &impl ConnectionTrait) -> Result<Vec<derived_dirty::Model>, DbErr> {
    derived_dirty::Entity::find().order_by_asc(derived_dirty::Column::QueuedAt).limit(CLAIM).all(conn).await
}

/// Queues the customers whose next change by time alone is due (up to a batch); how many.
async fn queue_due(svc: &Services, now: DateTime<Utc>) -> Result<usize, DbErr> {
    let conn = svc.db.conn();
    let due: Vec<(String, Uuid)> = derived_subject::Entity::find()
        .filter(derived_subject::Column::NextChangeAt.lte(now))
        .order_by_asc(derived_subject::Column::NextChangeAt)
        .select_only()
        .column(derived_subject::Column::Tenant)
        .column(derived_subject::Column::CustomerId)
        .limit(CLAIM)
        .into_tuple()
        .all(conn)
        .await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut by_tenant: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for (tenant, id) in &due {
        by_tenant.entry(tenant.clone()).or_default().push(*id);
    }
    let txn = svc.db.begin_write().await?;
    for (tenant, ids) in by_tenant {
        let Ok(tenant) = TenantId::parse(&tenant) else { continue };
        mark(&txn, &tenant, &ids, Cause::WindowExpiry).await?;
        // Until the worker evaluates them again, they are not due twice.
        derived_subject::update_of_tenant(&tenant)
            .col_expr(
                derived_subject::Column::NextChangeAt,
                sea_orm::sea_query::Expr::value(Option::<DateTime<Utc>>::None),
            )
            .filter(derived_subject::Column::CustomerId.is_in(ids))
            .filter(derived_subject::Column::NextChangeAt.lte(now))
            .exec(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(due.len())
}

/// Takes customers off the queue, each only if no write queued them again since it was read (same `queued_at`), and
/// answers the ones it took. On PostgreSQL rows a writer holds are skipped, not waited for (that writer is queueing
/// them again, and the next pass takes them). The worker then writes only the customers it took, and every other
/// writer holds a customer's queue row before it touches their derived rows (`ledger::bump_consent_version`), so the
/// worker never waits on a transaction that waits on it.
async fn unqueue(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    rows: &[derived_dirty::Model],
) -> Result<HashSet<Uuid>, DbErr> {
    use sea_orm::sea_query::{Condition, Expr, ExprTrait, LockBehavior, LockType, Query};
    let mut taken = HashSet::new();
    for chunk in rows.chunks(100) {
        let mut exact = Condition::any();
        for row in chunk {
            exact = exact.add(
                Condition::all()
                    .add(derived_dirty::Column::CustomerId.eq(row.customer_id))
                    .add(derived_dirty::Column::QueuedAt.eq(row.queued_at)),
            );
        }
        if conn.get_database_backend() == DbBackend::Postgres {
            let held = Query::select()
                .expr(Expr::cust("ctid"))
                .from(derived_dirty::Entity)
                .and_where(derived_dirty::Column::Tenant.eq(tenant.as_str()))
                .cond_where(exact)
                .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
                .to_owned();
            let delete = Query::delete()
                .from_table(derived_dirty::Entity)
                .and_where(Expr::cust("ctid").in_subquery(held))
                .returning_col(derived_dirty::Column::CustomerId)
                .to_owned();
            for row in conn.query_all(&delete).await? {
                taken.insert(row.try_get::<Uuid>("", "customer_id")?);
            }
        } else {
            // SQLite: this transaction is the only writer, so what matches now is what the delete takes.
            let ids: Vec<Uuid> = derived_dirty::of_tenant(tenant)
                .filter(exact.clone())
                .select_only()
                .column(derived_dirty::Column::CustomerId)
                .into_tuple()
                .all(conn)
                .await?;
            derived_dirty::delete_of_tenant(tenant).filter(exact).exec(conn).await?;
            taken.extend(ids);
        }
    }
    Ok(taken)
}

/// One worker pass: evaluates a batch of queued customers (no transaction held), then per tenant writes what
/// changed, the events, and takes the customers off the queue unless a write queued them again meanwhile (their
/// `queued_at` moved) — in one short transaction; then publishes the events. `Ok(false)` when nothing was queued.
pub async fn run_once(svc: &Services) -> ApiResult<bool> {
    let now = Utc::now();
    let rows = queued(svc.db.conn()).await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let mut by_tenant: BTreeMap<String, Vec<derived_dirty::Model>> = BTreeMap::new();
    for row in rows {
        by_tenant.entry(row.tenant.clone()).or_default().push(row);
    }
    for (tenant, rows) in by_tenant {
        let Ok(tenant) = TenantId::parse(&tenant) else { continue };
        let items: Vec<(Uuid, Cause, bool)> = rows
            .iter()
            .map(|r| (r.customer_id, Cause::parse(&r.cause).unwrap_or(Cause::Record), r.consent_changed))
            .collect();
        let ids: Vec<Uuid> = items.iter().map(|(id, _, _)| *id).collect();
        let evaluated = evaluate(svc, &tenant, &ids, None, now).await?;
        let txn = svc.db.begin_write().await?;
        // The tenant's lock before any queue row: an erasure takes them in the same order.
        lock_tenant(&txn, &tenant).await?;
        let taken = unqueue(&txn, &tenant, &rows).await?;
        let items: Vec<(Uuid, Cause, bool)> = items.into_iter().filter(|(id, _, _)| taken.contains(id)).collect();
        let events = write(&txn, &tenant, &items, &evaluated).await?;
        txn.commit().await?;
        metrics::counter!("kontakt_derived_events_total").increment(events.len() as u64);
        events::publish(svc, &tenant, &events).await;
    }
    Ok(true)
}

/// How often the worker drops change events older than the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Drops outbox events older than `before` (at most 10,000 per call, oldest first; the next call takes the rest).
async fn prune(svc: &Services, before: DateTime<Utc>) -> Result<u64, DbErr> {
    use sea_orm::sea_query::{Expr, ExprTrait, Query};
    // Positions grow with time: the oldest rows are the lowest positions, found on the primary key.
    let oldest = Query::select()
        .column(derived_event::Column::Position)
        .from(derived_event::Entity)
        .and_where(derived_event::Column::At.lt(before))
        .order_by(derived_event::Column::Position, sea_orm::Order::Asc)
        .limit(10_000)
        .to_owned();
    let delete = Query::delete()
        .from_table(derived_event::Entity)
        .and_where(Expr::col(derived_event::Column::Position).in_subquery(oldest))
        .to_owned();
    Ok(svc.db.conn().execute(&delete).await?.rows_affected())
}

/// Wakes the instance's derived-state worker (after a commit that queued customers).
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// The background task that keeps derived state and emits its events; one per instance.
pub struct DerivedWorker {
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

impl DerivedWorker {
    pub fn start(svc: Services, poll: Duration, retention: chrono::Duration) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let wake = svc.derived_wake.0.clone();
        let handle = tokio::spawn(async move {
            let mut pruned_at = std::time::Instant::now() - PRUNE_EVERY;
            loop {
                if pruned_at.elapsed() >= PRUNE_EVERY {
                    pruned_at = std::time::Instant::now();
                    if let Err(err) = prune(&svc, Utc::now() - retention).await {
                        tracing::warn!(error = %err, "derived state: pruning old change events failed");
                    }
                }
                // Work until the queue is empty, then look for due window edges.
                let mut busy = true;
                while busy && !*stopped.borrow() {
                    busy = match run_once(&svc).await {
                        Ok(busy) => busy,
                        Err(err) => {
                            metrics::counter!("kontakt_derived_failures_total").increment(1);
                            tracing::warn!(error = %err, "derived state: a pass failed; the customers stay queued");
                            false
                        }
                    };
                }
                match queue_due(&svc, Utc::now()).await {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(err) => tracing::warn!(error = %err, "derived state: looking for due window edges failed"),
                }
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = stopped.changed() => {}
                }
                if *stopped.borrow() {
                    break;
                }
            }
        });
        DerivedWorker { stop, handle }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.handle.await;
    }
}

/// Backfills pending definition versions over every customer: the [`crate::jobs::JobKind::BackfillDefinitions`]
/// job calls it per batch of customers after `after`; `Ok(None)` when every customer was done.
pub async fn backfill_batch(
    svc: &Services,
    tenant: &TenantId,
    keys: &BTreeSet<String>,
    after: Option<Uuid>,
) -> ApiResult<Option<(sea_orm::DatabaseTransaction, Uuid, usize, Vec<DerivedEvent>)>> {
    let mut query = customer::of_tenant(tenant)
        .filter(customer::Column::MergedInto.is_null())
        .order_by_asc(customer::Column::Id)
        .select_only()
        .column(customer::Column::Id)
        .limit(BACKFILL_BATCH);
    if let Some(after) = after {
        query = query.filter(customer::Column::Id.gt(after));
    }
    let ids: Vec<Uuid> = query.into_tuple().all(svc.db.conn()).await?;
    let Some(last) = ids.last().copied() else { return Ok(None) };
    let items: Vec<(Uuid, Cause, bool)> = ids.iter().map(|id| (*id, Cause::DefinitionChange, false)).collect();
    let evaluated = evaluate(svc, tenant, &ids, Some(keys), Utc::now()).await?;
    let txn = svc.db.begin_write().await?;
    let events = write(&txn, tenant, &items, &evaluated).await?;
    Ok(Some((txn, last, ids.len(), events)))
}

/// Customers per backfill transaction.
pub const BACKFILL_BATCH: u64 = 500;

/// The keys a backfill of `pending` keys must cover: those and every definition that refers to them, directly or
/// through others.
pub fn with_dependents(catalog: &catalog::Catalog, pending: &BTreeSet<String>) -> BTreeSet<String> {
    let mut keys = pending.clone();
    loop {
        let before = keys.len();
        for d in catalog.definitions() {
            if definitions::references_of(d.parsed()).iter().any(|r| keys.contains(r)) {
                keys.insert(d.key.clone());
            }
        }
        if keys.len() == before {
            return keys;
        }
    }
}

/// Refuses a definition key the caller's purpose is not served (used by subscriptions and webhooks).
pub fn not_served(purpose: &str, key: &str) -> ApiError {
    ApiError::ConsentRequired {
        purpose: purpose.to_owned(),
        reason: "NOT_GIVEN",
        message: format!("`{key}` serves another purpose"),
    }
}
