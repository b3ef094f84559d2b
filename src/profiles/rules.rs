//! Per-tenant identity resolution rules: values that never link anyone, a limit per kind on one customer, and a
//! priority of kinds that decides which link gives way when a record would break a limit.
use crate::changes::{self, Changed, CustomerChangeKind};
use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use regex::RegexSet;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
    sea_query::{Expr, ExprTrait, Func},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    identity::{Identity, IdentityKind},
    merge::MergeReason,
    resolution::ConflictReason,
};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{customer, identity, merge, resolution_conflict, resolution_rules},
};

/// The rules as stored and edited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolutionRules {
    /// Normalised values (any kind) that never link anyone, compared case-insensitively.
    pub blocked_values: Vec<String>,
    /// Regular expressions; a value matching any of them never links anyone.
    pub blocked_patterns: Vec<String>,
    /// Most identities of a kind on one customer.
    pub limits: Vec<KindLimit>,
    /// Kinds from strongest to weakest.
    pub priority: Vec<IdentityKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KindLimit {
    pub kind: IdentityKind,
    pub max: u32,
}

impl Default for ResolutionRules {
    fn default() -> Self {
        use IdentityKind::*;
        ResolutionRules {
            blocked_values: [
                "test@test.com",
                "test@example.com",
                "noreply@example.com",
                "00000000-0000-0000-0000-000000000000",
                "+10000000000",
            ]
            .map(str::to_owned)
            .to_vec(),
            blocked_patterns: vec![r"(?i)^(null|undefined|none|unknown|n/?a|test|anonymous|-)$".into(), r"^0+$".into()],
            limits: vec![
                KindLimit { kind: CrmId, max: 1 },
                KindLimit { kind: Email, max: 5 },
                KindLimit { kind: Phone, max: 5 },
                KindLimit { kind: LoyaltyId, max: 3 },
                KindLimit { kind: ExternalId, max: 10 },
                KindLimit { kind: DeviceId, max: 50 },
                KindLimit { kind: AnonymousId, max: 50 },
            ],
            priority: vec![CrmId, ExternalId, LoyaltyId, Email, Phone, DeviceId, AnonymousId],
        }
    }
}

/// Rules ready to apply.
#[derive(Debug)]
pub struct CompiledRules {
    pub rules: ResolutionRules,
    blocked: HashSet<String>,
    patterns: RegexSet,
}

impl CompiledRules {
    pub fn compile(rules: ResolutionRules) -> ApiResult<Self> {
        for (i, pattern) in rules.blocked_patterns.iter().enumerate() {
            regex::Regex::new(pattern).map_err(|e| {
                ApiError::validation(format!("blockedPatterns[{i}]"), format!("not a regular expression: {e}"))
            })?;
        }
        let patterns = RegexSet::new(&rules.blocked_patterns)
            .map_err(|e| ApiError::validation("blockedPatterns", e.to_string()))?;
        let blocked = rules.blocked_values.iter().map(|v| v.trim().to_lowercase()).collect();
        Ok(CompiledRules { rules, blocked, patterns })
    }

    pub fn is_blocked(&self, identity: &Identity) -> bool {
        self.blocked.contains(&identity.value().to_lowercase()) || self.patterns.is_match(identity.value())
    }

    pub fn limit(&self, kind: IdentityKind) -> Option<usize> {
        self.rules.limits.iter().find(|l| l.kind == kind).map(|l| l.max as usize)
    }

    /// Lower is stronger; kinds not in the priority list come last.
    pub fn rank(&self, kind: IdentityKind) -> usize {
        self.rules.priority.iter().position(|k| *k == kind).unwrap_or(usize::MAX)
    }
}

const CACHE_TTL: Duration = Duration::from_secs(5);

/// Compiled rules per tenant, kept a few seconds in the process (a change reaches other instances within that).
#[derive(Clone)]
pub struct RulesCache(moka::future::Cache<String, Arc<CompiledRules>>);

impl Default for RulesCache {
    fn default() -> Self {
        RulesCache(moka::future::Cache::builder().max_capacity(10_000).time_to_live(CACHE_TTL).build())
    }
}

/// The tenant's rules (the defaults until it changes them).
pub async fn for_tenant(svc: &Services, tenant: &TenantId) -> ApiResult<Arc<CompiledRules>> {
    if let Some(rules) = svc.rules.0.get(tenant.as_str()).await {
        return Ok(rules);
    }
    let stored = resolution_rules::Entity::find_by_id(tenant.as_str().to_owned()).one(svc.db.conn()).await?;
    let rules = match stored.map(|row| serde_json::from_value::<ResolutionRules>(row.rules)) {
        Some(Ok(rules)) => rules,
        Some(Err(err)) => {
            tracing::error!(error = %err, "stored resolution rules are unreadable; using the defaults");
            ResolutionRules::default()
        }
        None => ResolutionRules::default(),
    };
    let compiled = Arc::new(CompiledRules::compile(rules)?);
    svc.rules.0.insert(tenant.as_str().to_owned(), compiled.clone()).await;
    Ok(compiled)
}

/// The caller's tenant's rules. Needs `profiles:read`.
pub async fn read(caller: &Caller, svc: &Services) -> ApiResult<ResolutionRules> {
    caller.require(Scope::ProfilesRead)?;
    Ok(for_tenant(svc, caller.tenant()).await?.rules.clone())
}

/// Replaces the caller's tenant's rules. Needs `profiles:write`. Applies to writes from now on.
pub async fn update(caller: &Caller, svc: &Services, rules: ResolutionRules) -> ApiResult<ResolutionRules> {
    caller.require(Scope::ProfilesWrite)?;
    if rules.limits.iter().any(|l| l.max == 0) {
        return Err(ApiError::validation("limits", "a limit is at least 1"));
    }
    let compiled = CompiledRules::compile(rules.clone())?;
    let json = serde_json::to_value(&rules).map_err(ApiError::internal)?;
    let row = resolution_rules::ActiveModel {
        tenant: Set(caller.tenant().as_str().to_owned()),
        rules: Set(json),
        updated_at: Set(Utc::now()),
    };
    let txn = svc.db.begin_write().await?;
    match resolution_rules::Entity::find_by_id(caller.tenant().as_str().to_owned()).one(&txn).await? {
        Some(_) => {
            row.update(&txn).await?;
        }
        None => {
            row.insert(&txn).await?;
        }
    }
    txn.commit().await?;
    svc.rules.0.insert(caller.tenant().as_str().to_owned(), Arc::new(compiled)).await;
    Ok(rules)
}

/// What a re-resolution changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Reresolution {
    /// Identities whose value the rules now block: removed.
    pub identities_removed: usize,
    /// Automatic merges undone: made through a now-blocked identity, or bringing a customer identities of a kind
    /// beyond its (lowered) limit.
    pub merges_undone: usize,
    /// Such merges that could not be undone (the survivor was merged again since).
    pub merges_kept: usize,
    /// Identities unlinked because their customer still held more of the kind than its limit (newest first), each
    /// recorded as a `limit_lowered` conflict.
    pub identities_unlinked: usize,
}

/// Customers per re-resolution batch.
pub const RERESOLVE_BATCH: u64 = 200;

/// One batch of a re-resolution, its writes in `txn` (not yet committed, so the caller can record its checkpoint
/// in the same transaction); `commit` commits and announces the changes.
pub struct ReresolveBatch {
    /// The last customer id of the batch: the next batch starts after it.
    pub last: Uuid,
    /// Customers of the batch (customers restored by its unmerges come on top, not counted).
    pub customers: usize,
    pub txn: DatabaseTransaction,
    touched: Vec<Uuid>,
}

impl ReresolveBatch {
    pub async fn commit(self, svc: &Services, tenant: &TenantId) -> ApiResult<()> {
        self.txn.commit().await?;
        changes::committed(svc, tenant, Changed::new().customers(self.touched, CustomerChangeKind::Updated)).await;
        Ok(())
    }
}

/// Applies the tenant's current rules to the customers after `after` (in id order, `RERESOLVE_BATCH` of them), and
/// to the customers its unmerges restore; `None` when no customer is left. Blocked values: merges made through a
/// now-blocked identity are undone and the blocked identities removed. Limits: a customer holding more identities
/// of a kind than its limit first gets back, newest first and while still over, the automatic merges that brought
/// it identities of that kind; what is still over is unlinked, newest first, and recorded as a conflict (the
/// customer keeps its touchpoints). Each unmerge commits on its own (a resumed batch finds it undone and skips
/// it); the removals and unlinks are in the returned transaction. Needs `profiles:write`. Run by the
/// `RERESOLVE_CUSTOMERS` job (`crate::jobs`), never inside a request.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn reresolve_batch(
    caller: &Caller,
    svc: &Services,
    rules: &CompiledRules,
    after: Option<Uuid>,
    report: &mut Reresolution,
) -> ApiResult<Option<ReresolveBatch>> {
    caller.require(Scope::ProfilesWrite)?;
    let tenant = caller.tenant();
    let mut query =
        customer::of_tenant(tenant).select_only().column(customer::Column::Id).order_by_asc(customer::Column::Id);
    if let Some(after) = after {
        query = query.filter(customer::Column::Id.gt(after));
    }
    let ids: Vec<Uuid> = query.limit(RERESOLVE_BATCH).into_tuple().all(svc.db.conn()).await?;
    let Some(&last) = ids.last() else { return Ok(None) };
    let mut scope: BTreeSet<Uuid> = ids.iter().copied().collect();
    let blocked = undo_blocked_merges(caller, svc, rules, &mut scope, report).await?;
    undo_merges_over_limits(caller, svc, rules, &mut scope, report).await?;
    let txn = svc.db.begin_write().await?;
    let mut touched = remove_blocked(&txn, tenant, &blocked, report).await?;
    touched.extend(unlink_over_limits(&txn, tenant, rules, &scope, report).await?);
    Ok(Some(ReresolveBatch { last, customers: ids.len(), txn, touched }))
}

/// The blocked identities of the customers in `scope`, after undoing (newest first) the automatic merges made
/// through them; the customers those unmerges restore join `scope`.
async fn undo_blocked_merges(
    caller: &Caller,
    svc: &Services,
    rules: &CompiledRules,
    scope: &mut BTreeSet<Uuid>,
    report: &mut Reresolution,
) -> ApiResult<Vec<Uuid>> {
    let tenant = caller.tenant();
    let mut blocked: Vec<Uuid> = Vec::new();
    let customers: Vec<Uuid> = scope.iter().copied().collect();
    for chunk in customers.chunks(500) {
        let rows = identity::of_tenant(tenant)
            .filter(identity::Column::CustomerId.is_in(chunk.iter().copied()))
            .order_by_asc(identity::Column::Id)
            .all(svc.db.conn())
            .await?;
        for row in &rows {
            if let Ok(kind) = row.kind.parse::<IdentityKind>() {
                let stored = Identity::from_stored(kind, row.source.clone(), row.value.clone());
                if rules.is_blocked(&stored) {
                    blocked.push(row.id);
                }
            }
        }
    }
    if blocked.is_empty() {
        return Ok(blocked);
    }
    let merges = merge::of_tenant(tenant)
        .filter(merge::Column::Reason.eq(MergeReason::Identity.as_str()))
        .filter(merge::Column::UndoneAt.is_null())
        .order_by_desc(merge::Column::Id)
        .all(svc.db.conn())
        .await?;
    for m in merges {
        let through = m.evidence.get("identityId").and_then(|v| v.as_str()).and_then(|v| v.parse::<Uuid>().ok());
        if through.is_some_and(|id| blocked.contains(&id)) {
            match super::merge::unmerge(caller, svc, m.id).await {
                Ok(_) => {
                    report.merges_undone += 1;
                    scope.insert(m.merged_id);
                }
                Err(ApiError::Conflict(_)) => report.merges_kept += 1,
                Err(other) => return Err(other),
            }
        }
    }
    Ok(blocked)
}

/// Removes the blocked identities; returns the customers that held them.
async fn remove_blocked(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    blocked: &[Uuid],
    report: &mut Reresolution,
) -> ApiResult<Vec<Uuid>> {
    let mut owners: Vec<Uuid> = Vec::new();
    for chunk in blocked.chunks(500) {
        owners.extend(
            identity::of_tenant(tenant)
                .filter(identity::Column::Id.is_in(chunk.iter().copied()))
                .select_only()
                .column(identity::Column::CustomerId)
                .into_tuple::<Uuid>()
                .all(txn)
                .await?,
        );
        report.identities_removed += identity::delete_of_tenant(tenant)
            .filter(identity::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?
            .rows_affected as usize;
    }
    Ok(owners)
}

/// The (customer, kind) pairs holding more identities than the kind's limit: one grouped query.
async fn over_limits(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    rules: &CompiledRules,
    scope: &BTreeSet<Uuid>,
) -> Result<Vec<(Uuid, String)>, DbErr> {
    let Some(first) = rules.rules.limits.first() else { return Ok(Vec::new()) };
    let customers: Vec<Uuid> = scope.iter().copied().collect();
    let mut over = Vec::new();
    for chunk in customers.chunks(500) {
        over.extend(over_limits_of(conn, tenant, rules, first, chunk).await?);
    }
    Ok(over)
}

async fn over_limits_of(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    rules: &CompiledRules,
    first: &KindLimit,
    customers: &[Uuid],
) -> Result<Vec<(Uuid, String)>, DbErr> {
    // The first limit of a kind counts, as in `CompiledRules::limit`.
    let limit = rules.rules.limits.iter().skip(1).fold(
        Expr::case(Expr::col(identity::Column::Kind).eq(first.kind.as_str()), i64::from(first.max)),
        |case, l| case.case(Expr::col(identity::Column::Kind).eq(l.kind.as_str()), i64::from(l.max)),
    );
    identity::of_tenant(tenant)
        .filter(identity::Column::CustomerId.is_in(customers.iter().copied()))
        .filter(identity::Column::Kind.is_in(rules.rules.limits.iter().map(|l| l.kind.as_str())))
        .select_only()
        .column(identity::Column::CustomerId)
        .column(identity::Column::Kind)
        .group_by(identity::Column::CustomerId)
        .group_by(identity::Column::Kind)
        .having(Expr::expr(Func::count(Expr::col(identity::Column::Id))).gt(limit))
        .order_by_asc(identity::Column::CustomerId)
        .order_by_asc(identity::Column::Kind)
        .into_tuple()
        .all(conn)
        .await
}

/// How many identities of `kind` the customer holds, and which.
async fn held(conn: &impl ConnectionTrait, tenant: &TenantId, customer: Uuid, kind: &str) -> Result<Vec<Uuid>, DbErr> {
    identity::of_tenant(tenant)
        .filter(identity::Column::CustomerId.eq(customer))
        .filter(identity::Column::Kind.eq(kind))
        .select_only()
        .column(identity::Column::Id)
        .into_tuple()
        .all(conn)
        .await
}

/// Undoes, newest first, the automatic merges that brought an over-limit customer of `scope` identities of the
/// kind, while it is still over. A restored customer joins `scope` and may itself be over a limit: the passes
/// repeat until one undoes nothing (each merge is tried once).
async fn undo_merges_over_limits(
    caller: &Caller,
    svc: &Services,
    rules: &CompiledRules,
    scope: &mut BTreeSet<Uuid>,
    report: &mut Reresolution,
) -> ApiResult<()> {
    let tenant = caller.tenant();
    let conn = svc.db.conn();
    let mut tried: HashSet<Uuid> = HashSet::new();
    loop {
        let over = over_limits(conn, tenant, rules, scope).await?;
        let mut customers: Vec<Uuid> = over.iter().map(|(customer, _)| *customer).collect();
        customers.dedup();
        let mut merges: Vec<merge::Model> = Vec::new();
        for chunk in customers.chunks(500) {
            merges.extend(
                merge::of_tenant(tenant)
                    .filter(merge::Column::Reason.eq(MergeReason::Identity.as_str()))
                    .filter(merge::Column::UndoneAt.is_null())
                    .filter(merge::Column::SurvivorId.is_in(chunk.iter().copied()))
                    .all(conn)
                    .await?,
            );
        }
        merges.retain(|m| !tried.contains(&m.id));
        if merges.is_empty() {
            return Ok(());
        }
        merges.sort_by_key(|m| std::cmp::Reverse(m.id));
        let mut undone_any = false;
        for (customer, kind) in &over {
            let Some(max) = kind.parse::<IdentityKind>().ok().and_then(|k| rules.limit(k)) else { continue };
            for m in merges.iter().filter(|m| m.survivor_id == *customer) {
                if tried.contains(&m.id) {
                    continue;
                }
                let now_held = held(conn, tenant, *customer, kind).await?;
                if now_held.len() <= max {
                    break;
                }
                let brought = super::merge::moved_identities(m);
                if !now_held.iter().any(|id| brought.contains(id)) {
                    continue;
                }
                tried.insert(m.id);
                match super::merge::unmerge(caller, svc, m.id).await {
                    Ok(_) => {
                        report.merges_undone += 1;
                        scope.insert(m.merged_id);
                        undone_any = true;
                    }
                    Err(ApiError::Conflict(_) | ApiError::NotFound(_)) => report.merges_kept += 1,
                    Err(other) => return Err(other),
                }
            }
        }
        if !undone_any {
            return Ok(());
        }
    }
}

/// Unlinks the newest identities of a kind beyond its limit from each customer of `scope` still over it, in the
/// batch's transaction, and records each as a conflict. Touchpoints stay with the customer. Returns the customers
/// changed.
async fn unlink_over_limits(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    rules: &CompiledRules,
    scope: &BTreeSet<Uuid>,
    report: &mut Reresolution,
) -> ApiResult<Vec<Uuid>> {
    let over = over_limits(txn, tenant, rules, scope).await?;
    if over.is_empty() {
        return Ok(Vec::new());
    }
    let now = Utc::now();
    let mut touched: Vec<Uuid> = Vec::new();
    for chunk in over.chunks(500) {
        let customers: HashSet<Uuid> = chunk.iter().map(|(customer, _)| *customer).collect();
        let kinds: HashSet<&str> = chunk.iter().map(|(_, kind)| kind.as_str()).collect();
        let rows = identity::of_tenant(tenant)
            .filter(identity::Column::CustomerId.is_in(customers.iter().copied()))
            .filter(identity::Column::Kind.is_in(kinds.iter().copied()))
            .order_by_desc(identity::Column::CreatedAt)
            .order_by_desc(identity::Column::Id)
            .all(txn)
            .await?;
        let mut by_pair: HashMap<(Uuid, &str), Vec<Uuid>> = HashMap::new();
        for row in &rows {
            by_pair.entry((row.customer_id, row.kind.as_str())).or_default().push(row.id);
        }
        let mut unlink: Vec<Uuid> = Vec::new();
        let mut conflicts: Vec<resolution_conflict::ActiveModel> = Vec::new();
        for (customer, kind) in chunk {
            let Some(max) = kind.parse::<IdentityKind>().ok().and_then(|k| rules.limit(k)) else { continue };
            let newest_first = by_pair.get(&(*customer, kind.as_str())).map(Vec::as_slice).unwrap_or_default();
            let excess = newest_first.len().saturating_sub(max);
            if excess == 0 {
                continue;
            }
            unlink.extend_from_slice(&newest_first[..excess]);
            conflicts.extend((0..excess).map(|_| resolution_conflict::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                customer_id: Set(*customer),
                other_customer_id: Set(None),
                kind: Set(kind.clone()),
                reason: Set(ConflictReason::LimitLowered.as_str().to_owned()),
                created_at: Set(now),
            }));
            touched.push(*customer);
        }
        for ids in unlink.chunks(500) {
            report.identities_unlinked += identity::delete_of_tenant(tenant)
                .filter(identity::Column::Id.is_in(ids.iter().copied()))
                .exec(txn)
                .await?
                .rows_affected as usize;
        }
        for rows in conflicts.chunks(500) {
            resolution_conflict::Entity::insert_many(rows.to_vec()).exec(txn).await?;
        }
    }
    Ok(touched)
}
