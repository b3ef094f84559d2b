//! Identity resolution: the one function every write path (customers, touchpoints, tracking events) uses to turn
//! identities into a customer, inside the caller's transaction.
use crate::changes::{Changed, CustomerChangeKind};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QuerySelect, Set,
    sea_query::{Expr, Func},
};
use uuid::Uuid;

use super::{
    identity::{Identity, IdentityKind},
    merge::{self, MergeReason},
    rules::CompiledRules,
};
use crate::{
    auth::TenantId,
    privacy::suppression,
    services::DomainSettings,
    storage::entities::{customer, identity, resolution_conflict},
};

/// Which customer the identities resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub customer: customer::Model,
    pub created: bool,
    /// Other customers some of the identities already point at. Until merging lands they stay apart, and the
    /// identities that point at them are not moved.
    pub conflicting: Vec<Uuid>,
    /// Identities dropped because the tenant's rules block their value.
    pub blocked: usize,
    /// Links not made because they would break a per-kind limit (recorded as conflicts).
    pub over_limit: usize,
    /// Customers merged into this one; callers drop their cached profiles once the transaction commits.
    pub merged: Vec<Uuid>,
    /// The record's strongest identity that is linked to `customer`: the identity the record was attached through.
    pub via: Option<Uuid>,
}

/// The outcome of resolving a record's identities.
#[derive(Debug, Clone)]
pub enum Resolution {
    Resolved(Box<Resolved>),
    /// An identity belongs to an erased person: nothing was written.
    Suppressed,
    /// Every identity is on the tenant's block list: nothing was written.
    Blocked,
}

/// The one resolution function. Blocked values are dropped. The customer is the one the record's strongest
/// matched identity points at (by the tenant's priority of kinds); none matched: a new customer. New identities
/// are linked unless that breaks the kind's limit on the customer; when the record's strongest identity is new
/// and cannot be linked, the record gets a customer of its own ("attached by its strongest identity"). Links not
/// made are recorded in `resolution_conflicts`.
pub(crate) async fn resolve(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    settings: &DomainSettings,
    rules: &CompiledRules,
    actor: &str,
    identities: &[Identity],
    now: DateTime<Utc>,
) -> Result<Resolution, DbErr> {
    if suppression::any_suppressed(txn, tenant, settings, identities).await? {
        metrics::counter!("kontakt_suppressed_writes_total").increment(1);
        return Ok(Resolution::Suppressed);
    }
    let mut usable: Vec<&Identity> = identities.iter().filter(|i| !rules.is_blocked(i)).collect();
    let blocked = identities.len() - usable.len();
    if usable.is_empty() {
        metrics::counter!("kontakt_blocked_identities_total").increment(blocked as u64);
        return Ok(Resolution::Blocked);
    }
    usable.sort_by_key(|i| rules.rank(i.kind()));
    let owned: Vec<Identity> = usable.iter().map(|i| (*i).clone()).collect();
    let matches = find_identities(txn, tenant, &owned).await?;
    let is_match = |i: &Identity| {
        matches.iter().any(|m| m.kind == i.kind().as_str() && m.source == i.stored_source() && m.value == i.value())
    };
    // Among identities of the same kind's rank, a matched one is stronger than a new one, so the answer does not
    // depend on the order in which a record names them.
    usable.sort_by_key(|i| (rules.rank(i.kind()), !is_match(i)));
    // The owner is reached through the strongest matched identity (ties: the oldest customer).
    let owner = matches
        .iter()
        .filter_map(|m| Some((rules.rank(m.kind.parse::<IdentityKind>().ok()?), m.customer_id)))
        .min()
        .map(|(_, id)| id);

    let mut counts: HashMap<String, usize> = match owner {
        Some(owner) => kind_counts(txn, tenant, owner).await?,
        None => HashMap::new(),
    };
    let would_break = |counts: &HashMap<String, usize>, kind: IdentityKind| {
        rules.limit(kind).is_some_and(|max| counts.get(kind.as_str()).copied().unwrap_or(0) + 1 > max)
    };
    let strongest = usable[0];
    let mut conflicts: Vec<(Option<Uuid>, IdentityKind, ConflictReason)> = Vec::new();
    let owner = match owner {
        Some(owner) if !is_match(strongest) && would_break(&counts, strongest.kind()) => {
            // The record's strongest identity cannot join the owner: it becomes a customer of its own.
            conflicts.push((Some(owner), strongest.kind(), ConflictReason::Limit));
            counts.clear();
            None
        }
        other => other,
    };

    let (customer, created) = match owner {
        None => {
            let row = customer::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                given_name: Set(None),
                family_name: Set(None),
                created_at: Set(now),
                updated_at: Set(now),
                merged_into: Set(None),
                restricted: Set(false),
                consent_version: Set(0),
            };
            (row.insert(txn).await?, true)
        }
        Some(owner) => {
            let found = customer::of_tenant(tenant).filter(customer::Column::Id.eq(owner)).one(txn).await?;
            (found.ok_or_else(|| DbErr::RecordNotFound(format!("customer {owner}")))?, false)
        }
    };

    let mut new_links = Vec::new();
    let mut new_ids: Vec<(&Identity, Uuid)> = Vec::new();
    let mut over_limit = 0;
    for identity in usable.iter().filter(|i| !is_match(i)) {
        if would_break(&counts, identity.kind()) {
            over_limit += 1;
            conflicts.push((None, identity.kind(), ConflictReason::Limit));
            continue;
        }
        *counts.entry(identity.kind().as_str().to_owned()).or_default() += 1;
        let id = Uuid::now_v7();
        new_ids.push((*identity, id));
        new_links.push(identity::ActiveModel {
            id: Set(id),
            tenant: Set(tenant.as_str().to_owned()),
            customer_id: Set(customer.id),
            kind: Set(identity.kind().as_str().to_owned()),
            source: Set(identity.stored_source().to_owned()),
            value: Set(identity.value().to_owned()),
            created_at: Set(now),
        });
    }
    if !new_links.is_empty() {
        identity::Entity::insert_many(new_links).exec(txn).await?;
        crate::derived::maintain::mark(txn, tenant, &[customer.id], crate::derived::maintain::Cause::Record).await?;
    }
    // Other customers an identity of this record points at: one person, so merge them into this customer,
    // unless together they would break a limit (then they stay apart and the conflict is recorded).
    let mut others: Vec<(Uuid, &identity::Model)> =
        matches.iter().filter(|m| m.customer_id != customer.id).map(|m| (m.customer_id, m)).collect();
    others.sort_by_key(|(id, _)| *id);
    others.dedup_by_key(|(id, _)| *id);
    let mut conflicting = Vec::new();
    let mut merged = Vec::new();
    for (other, link) in others {
        let theirs = kind_counts(txn, tenant, other).await?;
        let fits = theirs.iter().all(|(kind, n)| {
            let kind = kind.parse::<IdentityKind>().ok();
            let max = kind.and_then(|k| rules.limit(k)).unwrap_or(usize::MAX);
            counts.get(kind.map(|k| k.as_str()).unwrap_or_default()).copied().unwrap_or(0) + n <= max
        });
        if fits {
            let evidence = serde_json::json!({
                "rule": "identity_match", "kind": link.kind, "identityId": link.id, "at": now,
            });
            match merge::merge_in_txn(txn, tenant, actor, customer.id, other, MergeReason::Identity, evidence).await? {
                Ok(_) => {
                    for (kind, n) in theirs {
                        *counts.entry(kind).or_default() += n;
                    }
                    merged.push(other);
                    continue;
                }
                Err(err) => tracing::warn!(error = %err, "automatic merge refused"),
            }
        }
        conflicting.push(other);
        if let Ok(kind) = link.kind.parse::<IdentityKind>() {
            conflicts.push((Some(other), kind, ConflictReason::OwnedByOther));
        }
    }
    // Attached through the strongest identity now on the customer: matched on it (or on a customer merged into
    // it just now), or newly linked to it.
    let via = usable.iter().find_map(|i| {
        let matched = matches.iter().find(|m| {
            m.kind == i.kind().as_str()
                && m.source == i.stored_source()
                && m.value == i.value()
                && (m.customer_id == customer.id || merged.contains(&m.customer_id))
        });
        matched.map(|m| m.id).or_else(|| new_ids.iter().find(|(n, _)| n == i).map(|(_, id)| *id))
    });
    if !conflicts.is_empty() {
        let rows: Vec<resolution_conflict::ActiveModel> = conflicts
            .into_iter()
            .map(|(other, kind, reason)| resolution_conflict::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                customer_id: Set(customer.id),
                other_customer_id: Set(other),
                kind: Set(kind.as_str().to_owned()),
                reason: Set(reason.as_str().to_owned()),
                created_at: Set(now),
            })
            .collect();
        resolution_conflict::Entity::insert_many(rows).exec(txn).await?;
    }
    Ok(Resolution::Resolved(Box::new(Resolved { customer, created, conflicting, blocked, over_limit, merged, via })))
}

/// How many identities of each kind a customer has.
async fn kind_counts(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    customer: Uuid,
) -> Result<HashMap<String, usize>, DbErr> {
    let rows: Vec<(String, i64)> = identity::of_tenant(tenant)
        .filter(identity::Column::CustomerId.eq(customer))
        .select_only()
        .column(identity::Column::Kind)
        .column_as(Expr::expr(Func::count(Expr::col(identity::Column::Id))), "n")
        .group_by(identity::Column::Kind)
        .into_tuple()
        .all(txn)
        .await?;
    Ok(rows.into_iter().map(|(k, n)| (k, n as usize)).collect())
}

/// What a committed resolution changed, for `changes::committed`: the customer (announced as created, or as updated
/// when `updated` — a profile write rather than a touchpoint) and every customer merged into it.
pub(crate) fn changes_of(customer: Uuid, created: bool, merged: &[Uuid], updated: bool) -> Changed {
    let mut changed = Changed::new().uncache([customer]);
    if created {
        changed = changed.customer(customer, CustomerChangeKind::Created);
    } else if updated {
        changed = changed.customer(customer, CustomerChangeKind::Updated);
    }
    merged.iter().fold(changed, |changed, m| changed.merge(customer, *m))
}

/// The stored identities equal to any of `identities` (already normalised).
pub(crate) async fn find_identities(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    identities: &[Identity],
) -> Result<Vec<identity::Model>, DbErr> {
    if identities.is_empty() {
        return Ok(Vec::new());
    }
    let any = identities.iter().fold(Condition::any(), |cond, i| {
        cond.add(
            Condition::all()
                .add(identity::Column::Kind.eq(i.kind().as_str()))
                .add(identity::Column::Source.eq(i.stored_source()))
                .add(identity::Column::Value.eq(i.value())),
        )
    });
    identity::of_tenant(tenant).filter(any).all(conn).await
}

/// Why identity resolution refused (or undid) a link.
// Stored in `resolution_conflicts.reason` as `as_str` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum ConflictReason {
    /// The kind's limit on one customer would be exceeded.
    Limit,
    /// The identity points at another customer, and merging with it would exceed a limit.
    OwnedByOther,
    /// Unlinked by a re-resolution after the kind's limit was lowered.
    LimitLowered,
}

impl ConflictReason {
    pub const ALL: [ConflictReason; 3] =
        [ConflictReason::Limit, ConflictReason::OwnedByOther, ConflictReason::LimitLowered];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConflictReason::Limit => "limit",
            ConflictReason::OwnedByOther => "owned_by_other",
            ConflictReason::LimitLowered => "limit_lowered",
        }
    }
}

impl std::str::FromStr for ConflictReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ConflictReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown conflict reason `{s}`"))
    }
}

impl std::fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A link resolution refused to make for a customer.
#[derive(Debug, Clone)]
pub struct Conflict {
    pub kind: IdentityKind,
    pub reason: ConflictReason,
    pub other_customer_id: Option<Uuid>,
    pub at: DateTime<Utc>,
}

/// The conflicts recorded for a customer, newest first (at most 100). Needs `profiles:read`.
pub async fn conflicts_of(
    caller: &crate::auth::Caller,
    svc: &crate::services::Services,
    customer_id: Uuid,
) -> crate::error::ApiResult<Vec<Conflict>> {
    use sea_orm::QueryOrder;
    caller.require(crate::auth::Scope::ProfilesRead)?;
    let rows = resolution_conflict::Entity::find()
        .filter(resolution_conflict::Column::Tenant.eq(caller.tenant().as_str()))
        .filter(resolution_conflict::Column::CustomerId.eq(customer_id))
        .order_by_desc(resolution_conflict::Column::Id)
        .limit(100)
        .all(svc.db.conn())
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some(Conflict {
                kind: r.kind.parse().ok()?,
                reason: r.reason.parse().ok()?,
                other_customer_id: r.other_customer_id,
                at: r.created_at,
            })
        })
        .collect())
}
