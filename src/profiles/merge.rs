//! Merging customers and undoing it: every merge records its evidence and exactly which rows it moved, so an
//! unmerge restores both customers as they were; rows that arrived since go where their identities now point.
use crate::changes::{self, Changed, CustomerChangeKind};
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Set, Statement, sea_query::Expr,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::rules::{self, CompiledRules};
use crate::{
    auth::{Caller, Scope, TenantId},
    consent::{
        ConsentStatus, RecordConsent,
        ledger::{self, bump_consent_version},
        policy,
    },
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{
        TenantScoped, consent_event, customer, identity, merge, source_record, touchpoint, trait_value,
    },
};

/// Why two customers were merged.
// Stored in `merges.reason` as `as_str` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum MergeReason {
    /// An agent merged them (`mergeCustomers`).
    Manual,
    /// Identity resolution found one identity pointing at both.
    Identity,
}

impl MergeReason {
    pub const ALL: [MergeReason; 2] = [MergeReason::Manual, MergeReason::Identity];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            MergeReason::Manual => "manual",
            MergeReason::Identity => "identity",
        }
    }
}

impl std::str::FromStr for MergeReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        MergeReason::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| format!("unknown merge reason `{s}`"))
    }
}

impl std::fmt::Display for MergeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One merge as the domain hands it out.
#[derive(Debug, Clone)]
pub struct Merge {
    pub id: Uuid,
    pub survivor_id: Uuid,
    pub merged_id: Uuid,
    pub reason: MergeReason,
    pub evidence: Value,
    pub merged_by: String,
    pub created_at: DateTime<Utc>,
    pub undone_at: Option<DateTime<Utc>>,
}

impl TryFrom<merge::Model> for Merge {
    type Error = ApiError;
    fn try_from(m: merge::Model) -> ApiResult<Self> {
        Ok(Merge {
            id: m.id,
            survivor_id: m.survivor_id,
            merged_id: m.merged_id,
            reason: m.reason.parse().map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?,
            evidence: m.evidence,
            merged_by: m.merged_by,
            created_at: m.created_at,
            undone_at: m.undone_at,
        })
    }
}

/// The ids of every row a merge moved or added.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Moved {
    identities: Vec<Uuid>,
    touchpoints: Vec<Uuid>,
    consent_events: Vec<Uuid>,
    /// Decisions appended so the merged consents resolve to the most restrictive; removed by an unmerge.
    added_consent_events: Vec<Uuid>,
    #[serde(default)]
    source_records: Vec<Uuid>,
    #[serde(default)]
    trait_values: Vec<Uuid>,
    /// The merged customer's feedback cases (`cx::cases::follow_merge`).
    #[serde(default)]
    feedback_cases: Vec<Uuid>,
}

/// The identities a merge moved to its survivor (empty if its record is unreadable).
pub(crate) fn moved_identities(row: &merge::Model) -> HashSet<Uuid> {
    serde_json::from_value::<Moved>(row.moved.clone()).map(|m| m.identities.into_iter().collect()).unwrap_or_default()
}

async fn load(txn: &DatabaseTransaction, tenant: &TenantId, id: Uuid) -> Result<Option<customer::Model>, DbErr> {
    let mut query = customer::of_tenant(tenant).filter(customer::Column::Id.eq(id));
    if txn.get_database_backend() == DbBackend::Postgres {
        // Two merges touching one customer serialise here.
        query = query.lock_exclusive();
    }
    query.one(txn).await
}

async fn ids_of<E, C>(txn: &DatabaseTransaction, tenant: &TenantId, customer: Uuid) -> Result<Vec<Uuid>, DbErr>
where
    E: TenantScoped<Column = C>,
    C: sea_orm::ColumnTrait + From<MergeColumn>,
{
    E::of_tenant(tenant)
        .filter(C::from(MergeColumn::CustomerId).eq(customer))
        .select_only()
        .column(C::from(MergeColumn::Id))
        .into_tuple::<Uuid>()
        .all(txn)
        .await
}

/// The two columns (beside the tenant) every table a merge moves shares.
#[derive(Clone, Copy)]
pub enum MergeColumn {
    Id,
    CustomerId,
}

macro_rules! merge_columns {
    ($($entity:ident),+) => {$(
        impl From<MergeColumn> for $entity::Column {
            fn from(c: MergeColumn) -> Self {
                match c {
                    MergeColumn::Id => $entity::Column::Id,
                    MergeColumn::CustomerId => $entity::Column::CustomerId,
                }
            }
        }
    )+};
}
merge_columns!(identity, touchpoint, consent_event, source_record, trait_value);

async fn move_rows<E, C>(txn: &DatabaseTransaction, tenant: &TenantId, ids: &[Uuid], to: Uuid) -> Result<(), DbErr>
where
    E: TenantScoped<Column = C>,
    C: sea_orm::ColumnTrait + From<MergeColumn>,
{
    for chunk in ids.chunks(500) {
        E::update_of_tenant(tenant)
            .col_expr(C::from(MergeColumn::CustomerId), Expr::value(to))
            .filter(C::from(MergeColumn::Id).is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    Ok(())
}

/// Merges `merged` into `survivor` inside the caller's transaction. `Err` in the inner result for refusals.
pub(crate) async fn merge_in_txn(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    actor: &str,
    survivor: Uuid,
    merged: Uuid,
    reason: MergeReason,
    evidence: Value,
) -> Result<ApiResult<merge::Model>, DbErr> {
    if survivor == merged {
        return Ok(Err(ApiError::validation("mergedId", "a customer cannot be merged into itself")));
    }
    let (Some(kept), Some(gone)) = (load(txn, tenant, survivor).await?, load(txn, tenant, merged).await?) else {
        return Ok(Err(ApiError::not_found("customer")));
    };
    if kept.merged_into.is_some() || gone.merged_into.is_some() {
        return Ok(Err(ApiError::Conflict("one of these customers was already merged away".into())));
    }
    let now = Utc::now();
    let merge_id = Uuid::now_v7();
    let mut moved = Moved {
        identities: ids_of::<identity::Entity, _>(txn, tenant, merged).await?,
        touchpoints: ids_of::<touchpoint::Entity, _>(txn, tenant, merged).await?,
        consent_events: ids_of::<consent_event::Entity, _>(txn, tenant, merged).await?,
        added_consent_events: Vec::new(),
        source_records: ids_of::<source_record::Entity, _>(txn, tenant, merged).await?,
        trait_values: ids_of::<trait_value::Entity, _>(txn, tenant, merged).await?,
        feedback_cases: Vec::new(),
    };

    // Consents that disagree resolve to the most restrictive (DOMAIN.md): decide before moving the ledger.
    let mut states = ledger::states_at(txn, tenant, &[survivor, merged], None).await?;
    let sides = vec![states.remove(&survivor).unwrap_or_default(), states.remove(&merged).unwrap_or_default()];
    let (resolved, disagreements) = policy::most_restrictive(&sides, now);

    move_rows::<identity::Entity, _>(txn, tenant, &moved.identities, survivor).await?;
    move_rows::<touchpoint::Entity, _>(txn, tenant, &moved.touchpoints, survivor).await?;
    move_rows::<consent_event::Entity, _>(txn, tenant, &moved.consent_events, survivor).await?;
    move_rows::<source_record::Entity, _>(txn, tenant, &moved.source_records, survivor).await?;
    move_rows::<trait_value::Entity, _>(txn, tenant, &moved.trait_values, survivor).await?;
    moved.feedback_cases = crate::cx::cases::follow_merge(txn, tenant, survivor, merged).await?;
    let trait_rules = super::traits::rules_for(txn, tenant).await?;
    super::traits::refresh_derived(txn, tenant, &trait_rules, &[survivor, merged], now).await?;

    let after = ledger::states_at(txn, tenant, &[survivor], None).await?.remove(&survivor).unwrap_or_default();
    for wanted in &policy::merge_appends(&resolved, &after, now) {
        let status = if wanted.status == ConsentStatus::Granted && !wanted.is_effective_at(now) {
            ConsentStatus::Denied
        } else {
            wanted.status
        };
        let added = ledger::append(
            txn,
            tenant,
            actor,
            RecordConsent {
                customer_id: survivor,
                purpose: wanted.purpose.as_str().to_owned(),
                channel: wanted.channel.clone(),
                status,
                captured_at: Some(wanted.captured_at),
                source: "merge".into(),
                policy_version: wanted.policy_version.clone(),
                legal_basis: wanted.legal_basis.clone(),
                expires_at: wanted.expires_at.filter(|e| *e > now),
                evidence: Some(json!({ "merge": merge_id, "mostRestrictiveOf": wanted.id })),
            },
        )
        .await;
        match added {
            Ok(event) => moved.added_consent_events.push(event.id),
            Err(err) => return Ok(Err(err)),
        }
    }

    let mut gone: customer::ActiveModel = gone.into();
    gone.merged_into = Set(Some(survivor));
    gone.updated_at = Set(now);
    gone.update(txn).await?;
    bump_consent_version(txn, tenant, survivor).await?;
    bump_consent_version(txn, tenant, merged).await?;
    // Last, so the change events name the merge as their cause.
    crate::derived::maintain::mark(txn, tenant, &[survivor, merged], crate::derived::maintain::Cause::Merge).await?;

    let mut evidence = evidence;
    if let Some(map) = evidence.as_object_mut() {
        map.insert(
            "consentConflicts".into(),
            json!(
                disagreements.iter().map(|(p, c)| json!({ "purpose": p.as_str(), "channel": c })).collect::<Vec<_>>()
            ),
        );
    }
    let row = merge::ActiveModel {
        id: Set(merge_id),
        tenant: Set(tenant.as_str().to_owned()),
        survivor_id: Set(survivor),
        merged_id: Set(merged),
        reason: Set(reason.as_str().to_owned()),
        evidence: Set(evidence),
        moved: Set(serde_json::to_value(&moved).unwrap_or(Value::Null)),
        merged_by: Set(actor.chars().take(256).collect()),
        created_at: Set(now),
        undone_at: Set(None),
    }
    .insert(txn)
    .await?;
    metrics::counter!("kontakt_merges_total", "reason" => reason.as_str()).increment(1);
    Ok(Ok(row))
}

/// Merges one customer into another by hand (an agent who knows). Needs `profiles:write`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), survivor = %survivor, merged = %merged))]
pub async fn merge_customers(
    caller: &Caller,
    svc: &Services,
    survivor: Uuid,
    merged: Uuid,
    note: Option<String>,
) -> ApiResult<Merge> {
    caller.require(Scope::ProfilesWrite)?;
    let txn = svc.db.begin_write().await?;
    let evidence = json!({ "rule": "manual", "note": note.map(|n| n.chars().take(500).collect::<String>()) });
    let reason = MergeReason::Manual;
    let row = match merge_in_txn(&txn, caller.tenant(), caller.subject(), survivor, merged, reason, evidence).await? {
        Ok(row) => row,
        Err(err) => return Err(err),
    };
    txn.commit().await?;
    changes::committed(svc, caller.tenant(), Changed::new().merge(survivor, merged)).await;
    row.try_into()
}

/// Undoes a merge: every row it moved goes back, the consents it added go away, and the merged customer is
/// itself again. Rows that arrived after the merge go where their identities now point: a touchpoint follows the
/// identity it was attached through, a source record its strongest identity on either customer (by the tenant's
/// priority of kinds), with its trait values. Identities linked after the merge stay with the survivor. Needs
/// `profiles:write`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), merge = %merge_id))]
pub async fn unmerge(caller: &Caller, svc: &Services, merge_id: Uuid) -> ApiResult<Merge> {
    caller.require(Scope::ProfilesWrite)?;
    let tenant = caller.tenant();
    let rules = rules::for_tenant(svc, tenant).await?;
    let txn = svc.db.begin_write().await?;
    let row = merge::of_tenant(tenant)
        .filter(merge::Column::Id.eq(merge_id))
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("merge {merge_id}")))?;
    if row.undone_at.is_some() {
        return Err(ApiError::Conflict("this merge was already undone".into()));
    }
    let survivor = load(&txn, tenant, row.survivor_id).await?.ok_or_else(|| ApiError::not_found("survivor"))?;
    if survivor.merged_into.is_some() {
        return Err(ApiError::Conflict("the survivor was merged again since; undo that merge first".into()));
    }
    let merged = load(&txn, tenant, row.merged_id).await?.ok_or_else(|| ApiError::not_found("merged customer"))?;
    let moved: Moved = serde_json::from_value(row.moved.clone()).map_err(ApiError::internal)?;

    consent_event::delete_of_tenant(tenant)
        .filter(consent_event::Column::Id.is_in(moved.added_consent_events.iter().copied()))
        .exec(&txn)
        .await?;
    move_rows::<identity::Entity, _>(&txn, tenant, &moved.identities, merged.id).await?;
    move_rows::<touchpoint::Entity, _>(&txn, tenant, &moved.touchpoints, merged.id).await?;
    move_rows::<consent_event::Entity, _>(&txn, tenant, &moved.consent_events, merged.id).await?;
    move_rows::<source_record::Entity, _>(&txn, tenant, &moved.source_records, merged.id).await?;
    move_rows::<trait_value::Entity, _>(&txn, tenant, &moved.trait_values, merged.id).await?;
    crate::cx::cases::follow_unmerge(&txn, tenant, &moved.feedback_cases, merged.id).await?;
    follow_identities(&txn, tenant, &rules, row.survivor_id, merged.id, row.created_at).await?;
    let now = Utc::now();
    let trait_rules = super::traits::rules_for(&txn, tenant).await?;
    super::traits::refresh_derived(&txn, tenant, &trait_rules, &[row.survivor_id, merged.id], now).await?;

    let mut back: customer::ActiveModel = merged.into();
    back.merged_into = Set(None);
    back.updated_at = Set(now);
    back.update(&txn).await?;
    bump_consent_version(&txn, tenant, row.survivor_id).await?;
    bump_consent_version(&txn, tenant, row.merged_id).await?;
    // Last, so the change events name the unmerge as their cause.
    let sides = [row.survivor_id, row.merged_id];
    crate::derived::maintain::mark(&txn, tenant, &sides, crate::derived::maintain::Cause::Unmerge).await?;
    let mut undone: merge::ActiveModel = row.into();
    undone.undone_at = Set(Some(now));
    let row = undone.update(&txn).await?;
    txn.commit().await?;
    changes::committed(
        svc,
        tenant,
        Changed::new().customers([row.survivor_id, row.merged_id], CustomerChangeKind::Unmerged),
    )
    .await;
    row.try_into()
}

/// Moves the rows that reached `survivor` after `since` (the merge) and belong with `restored` by their identities,
/// in four statements: touchpoints whose attaching identity is now the restored customer's; source records whose
/// strongest identity held by either customer is the restored customer's (ties: the older customer, as resolution
/// decides); then the trait values of every record now on the restored customer.
async fn follow_identities(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    rules: &CompiledRules,
    survivor: Uuid,
    restored: Uuid,
    since: DateTime<Utc>,
) -> Result<(), DbErr> {
    let restored_identities = identity::of_tenant(tenant)
        .filter(identity::Column::CustomerId.eq(restored))
        .select_only()
        .column(identity::Column::Id)
        .into_query();
    touchpoint::update_of_tenant(tenant)
        .col_expr(touchpoint::Column::CustomerId, Expr::value(restored))
        .filter(touchpoint::Column::CustomerId.eq(survivor))
        .filter(touchpoint::Column::ReceivedAt.gt(since))
        .filter(touchpoint::Column::IdentityId.in_subquery(restored_identities))
        .exec(txn)
        .await?;

    let backend = txn.get_database_backend();
    let postgres = backend == DbBackend::Postgres;
    let p = |i: usize| if postgres { format!("${i}") } else { format!("?{i}") };
    // The record's identities as stored: `[{kind, source, value}]`, source null unless the kind has one.
    let (elements, field): (&str, fn(&str) -> String) = if postgres {
        ("json_array_elements(source_records.identities::json) AS e(item)", |f| format!("e.item->>'{f}'"))
    } else {
        ("json_each(source_records.identities) AS e", |f| format!("json_extract(e.value, '$.{f}')"))
    };
    // Kind names come from the closed `IdentityKind` set, never from input.
    let ranks: String = rules
        .rules
        .priority
        .iter()
        .enumerate()
        .map(|(rank, kind)| format!("WHEN '{}' THEN {rank} ", kind.as_str()))
        .collect();
    let sql = format!(
        "UPDATE source_records SET customer_id = {restored} \
         WHERE tenant = {tenant} AND customer_id = {survivor} AND updated_at > {since} \
         AND (SELECT i.customer_id FROM {elements} \
              JOIN identities i ON i.tenant = source_records.tenant AND i.kind = {kind} \
                AND i.source = COALESCE({source}, '') AND i.value = {value} \
              WHERE i.customer_id IN ({restored}, {survivor}) \
              ORDER BY CASE i.kind {ranks}ELSE {last} END, i.customer_id LIMIT 1) = {restored}",
        restored = p(1),
        tenant = p(2),
        survivor = p(3),
        since = p(4),
        kind = field("kind"),
        source = field("source"),
        value = field("value"),
        last = rules.rules.priority.len(),
    );
    let values: Vec<sea_orm::Value> = vec![restored.into(), tenant.as_str().into(), survivor.into(), since.into()];
    txn.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await?;

    let restored_records = source_record::of_tenant(tenant)
        .filter(source_record::Column::CustomerId.eq(restored))
        .select_only()
        .column(source_record::Column::Id)
        .into_query();
    trait_value::update_of_tenant(tenant)
        .col_expr(trait_value::Column::CustomerId, Expr::value(restored))
        .filter(trait_value::Column::CustomerId.eq(survivor))
        .filter(trait_value::Column::RecordId.in_subquery(restored_records))
        .exec(txn)
        .await?;
    Ok(())
}

/// The merges a customer took part in, newest first (at most 100). Needs `profiles:read`.
pub async fn history(caller: &Caller, svc: &Services, customer_id: Uuid) -> ApiResult<Vec<Merge>> {
    caller.require(Scope::ProfilesRead)?;
    let rows = merge::of_tenant(caller.tenant())
        .filter(
            Condition::any()
                .add(merge::Column::SurvivorId.eq(customer_id))
                .add(merge::Column::MergedId.eq(customer_id)),
        )
        .order_by_desc(merge::Column::Id)
        .limit(100)
        .all(svc.db.conn())
        .await?;
    rows.into_iter().map(Merge::try_from).collect()
}

/// [`history`] for many customers at once (the loader behind a list's `mergeHistory` and `identityGraph.merges`):
/// one window query per 500 customers; each customer's merges newest first (at most 100), as the single read gives
/// them. Every customer asked for is in the answer.
pub async fn history_of_many(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
) -> ApiResult<std::collections::HashMap<Uuid, Vec<Merge>>> {
    use crate::storage::window::{TopPerCustomer, top_per_customer};
    caller.require(Scope::ProfilesRead)?;
    let query = TopPerCustomer {
        table: "merges",
        key_columns: &["survivor_id", "merged_id"],
        filter: None,
        order_desc: &["id"],
        limit: 100,
    };
    let by_customer = top_per_customer::<merge::Entity>(&svc.db, caller.tenant(), &query, customer_ids).await?;
    by_customer
        .into_iter()
        .map(|(id, rows)| Ok((id, rows.into_iter().map(Merge::try_from).collect::<ApiResult<Vec<Merge>>>()?)))
        .collect()
}
