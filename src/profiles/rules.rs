//! Per-tenant identity resolution rules: values that never link anyone, a limit per kind on one customer, and a
//! priority of kinds that decides which link gives way when a record would break a limit.
use std::{collections::HashSet, sync::Arc, time::Duration};

use chrono::Utc;
use regex::RegexSet;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde::{Deserialize, Serialize};

use super::identity::{Identity, IdentityKind};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::resolution_rules,
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
    /// Automatic merges that a now-blocked identity had made: undone.
    pub merges_undone: usize,
    /// Such merges that could not be undone (the survivor was merged again since).
    pub merges_kept: usize,
}

/// Applies the tenant's current block list to customers already resolved: merges made through a now-blocked
/// identity are undone, and the blocked identities are removed. Needs `profiles:write`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn reresolve(caller: &Caller, svc: &Services) -> ApiResult<Reresolution> {
    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect};

    use crate::storage::entities::{identity, merge};

    caller.require(Scope::ProfilesWrite)?;
    let tenant = caller.tenant();
    let rules = for_tenant(svc, tenant).await?;
    let mut blocked: Vec<uuid::Uuid> = Vec::new();
    let mut after: Option<uuid::Uuid> = None;
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
    let mut report = Reresolution::default();
    if blocked.is_empty() {
        return Ok(report);
    }
    let merges = merge::of_tenant(tenant)
        .filter(merge::Column::Reason.eq("identity"))
        .filter(merge::Column::UndoneAt.is_null())
        .order_by_desc(merge::Column::Id)
        .all(svc.db.conn())
        .await?;
    for m in merges {
        let through = m.evidence.get("identityId").and_then(|v| v.as_str()).and_then(|v| v.parse::<uuid::Uuid>().ok());
        if through.is_some_and(|id| blocked.contains(&id)) {
            match super::merge::unmerge(caller, svc, m.id).await {
                Ok(_) => report.merges_undone += 1,
                Err(ApiError::Conflict(_)) => report.merges_kept += 1,
                Err(other) => return Err(other),
            }
        }
    }
    let txn = svc.db.begin_write().await?;
    let mut owners: Vec<uuid::Uuid> = Vec::new();
    for chunk in blocked.chunks(500) {
        owners.extend(
            identity::of_tenant(tenant)
                .filter(identity::Column::Id.is_in(chunk.iter().copied()))
                .select_only()
                .column(identity::Column::CustomerId)
                .into_tuple::<uuid::Uuid>()
                .all(&txn)
                .await?,
        );
        report.identities_removed += identity::Entity::delete_many()
            .filter(identity::Column::Tenant.eq(tenant.as_str()))
            .filter(identity::Column::Id.is_in(chunk.iter().copied()))
            .exec(&txn)
            .await?
            .rows_affected as usize;
    }
    txn.commit().await?;
    for owner in owners {
        svc.cache.delete(&super::customers::cache_key(tenant, owner)).await;
    }
    Ok(report)
}
