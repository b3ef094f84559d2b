//! Per-tenant identity resolution rules: values that never link anyone, a limit per kind on one customer, and a
//! priority of kinds that decides which link gives way when a record would break a limit.
use crate::changes::{self, Changed, CustomerChangeKind};
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use regex::RegexSet;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
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
    storage::entities::{identity, merge, resolution_conflict, resolution_rules},
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
#[derive(Debug, Clone, Default)]
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

/// Applies the tenant's current rules to customers already resolved. Blocked values: merges made through a
/// now-blocked identity are undone and the blocked identities removed. Limits: a customer holding more identities
/// of a kind than its limit first gets back, newest first and while still over, the automatic merges that brought
/// it identities of that kind; what is still over is unlinked, newest first, and recorded as a conflict (the
/// customer keeps its touchpoints). Needs `profiles:write`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn reresolve(caller: &Caller, svc: &Services) -> ApiResult<Reresolution> {
    caller.require(Scope::ProfilesWrite)?;
    let rules = for_tenant(svc, caller.tenant()).await?;
    let mut report = Reresolution::default();
    remove_blocked(caller, svc, &rules, &mut report).await?;
    undo_merges_over_limits(caller, svc, &rules, &mut report).await?;
    unlink_over_limits(caller, svc, &rules, &mut report).await?;
    Ok(report)
}

async fn remove_blocked(
    caller: &Caller,
    svc: &Services,
    rules: &CompiledRules,
    report: &mut Reresolution,
) -> ApiResult<()> {
    let tenant = caller.tenant();
    let mut blocked: Vec<Uuid> = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut query = identity::of_tenant(tenant).order_by_asc(identity::Column::Id).limit(1000);
        if let Some(after) = after {
            query = query.filter(identity::Column::Id.gt(after));
        }
        let rows = query.all(svc.db.conn()).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
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
        return Ok(());
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
                Ok(_) => report.merges_undone += 1,
                Err(ApiError::Conflict(_)) => report.merges_kept += 1,
                Err(other) => return Err(other),
            }
        }
    }
    let txn = svc.db.begin_write().await?;
    let mut owners: Vec<Uuid> = Vec::new();
    for chunk in blocked.chunks(500) {
        owners.extend(
            identity::of_tenant(tenant)
                .filter(identity::Column::Id.is_in(chunk.iter().copied()))
                .select_only()
                .column(identity::Column::CustomerId)
                .into_tuple::<Uuid>()
                .all(&txn)
                .await?,
        );
        report.identities_removed += identity::delete_of_tenant(tenant)
            .filter(identity::Column::Id.is_in(chunk.iter().copied()))
            .exec(&txn)
            .await?
            .rows_affected as usize;
    }
    txn.commit().await?;
    changes::committed(svc, tenant, Changed::new().customers(owners, CustomerChangeKind::Updated)).await;
    Ok(())
}

/// The (customer, kind) pairs holding more identities than the kind's limit: one grouped query.
async fn over_limits(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    rules: &CompiledRules,
) -> Result<Vec<(Uuid, String)>, DbErr> {
    let Some(first) = rules.rules.limits.first() else { return Ok(Vec::new()) };
    // The first limit of a kind counts, as in `CompiledRules::limit`.
    let limit = rules.rules.limits.iter().skip(1).fold(
        Expr::case(Expr::col(identity::Column::Kind).eq(first.kind.as_str()), i64::from(first.max)),
        |case, l| case.case(Expr::col(identity::Column::Kind).eq(l.kind.as_str()), i64::from(l.max)),
    );
    identity::of_tenant(tenant)
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

/// Undoes, newest first, the automatic merges that brought an over-limit customer identities of the kind, while
/// it is still over. A restored customer may itself be over a limit: the passes repeat until one undoes nothing
/// (each merge is tried once).
async fn undo_merges_over_limits(
    caller: &Caller,
    svc: &Services,
    rules: &CompiledRules,
    report: &mut Reresolution,
) -> ApiResult<()> {
    let tenant = caller.tenant();
    let conn = svc.db.conn();
    let mut tried: HashSet<Uuid> = HashSet::new();
    loop {
        let over = over_limits(conn, tenant, rules).await?;
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

/// Unlinks the newest identities of a kind beyond its limit from each customer still over it, in one transaction,
/// and records each as a conflict. Touchpoints stay with the customer.
async fn unlink_over_limits(
    caller: &Caller,
    svc: &Services,
    rules: &CompiledRules,
    report: &mut Reresolution,
) -> ApiResult<()> {
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let over = over_limits(&txn, tenant, rules).await?;
    if over.is_empty() {
        txn.rollback().await?;
        return Ok(());
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
            .all(&txn)
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
                .exec(&txn)
                .await?
                .rows_affected as usize;
        }
        for rows in conflicts.chunks(500) {
            resolution_conflict::Entity::insert_many(rows.to_vec()).exec(&txn).await?;
        }
    }
    txn.commit().await?;
    changes::committed(svc, tenant, Changed::new().customers(touched, CustomerChangeKind::Updated)).await;
    Ok(())
}
