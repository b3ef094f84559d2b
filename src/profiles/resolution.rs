//! Identity resolution: the one function every write path (customers, touchpoints, tracking events) uses to turn
//! identities into a customer, inside the caller's transaction.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    Set,
};
use uuid::Uuid;

use super::identity::Identity;
use crate::{
    auth::TenantId,
    privacy::suppression,
    services::DomainSettings,
    storage::entities::{customer, identity},
};

/// Which customer the identities resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub customer: customer::Model,
    pub created: bool,
    /// Other customers some of the identities already point at. Until merging lands they stay apart, and the
    /// identities that point at them are not moved.
    pub conflicting: Vec<Uuid>,
}

/// No match: a new customer. One: that customer, with any new identities linked. Several: the oldest, with the
/// others reported in `conflicting`. `None` when an identity belongs to an erased person: nothing is written.
pub(crate) async fn resolve(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    settings: &DomainSettings,
    identities: &[Identity],
    now: DateTime<Utc>,
) -> Result<Option<Resolved>, DbErr> {
    if suppression::any_suppressed(txn, tenant, settings, identities).await? {
        metrics::counter!("kontakt_suppressed_writes_total").increment(1);
        return Ok(None);
    }
    let matches = find_identities(txn, tenant, identities).await?;
    let mut owners: Vec<Uuid> = matches.iter().map(|m| m.customer_id).collect();
    owners.sort();
    owners.dedup();

    let (customer, created) = match owners.first() {
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
        // UUIDv7 ids sort by creation: the first owner is the oldest customer.
        Some(oldest) => {
            let found = customer::of_tenant(tenant).filter(customer::Column::Id.eq(*oldest)).one(txn).await?;
            (found.ok_or_else(|| DbErr::RecordNotFound(format!("customer {oldest}")))?, false)
        }
    };

    let new_links: Vec<identity::ActiveModel> = identities
        .iter()
        .filter(|i| {
            !matches
                .iter()
                .any(|m| m.kind == i.kind().as_str() && m.source == i.stored_source() && m.value == i.value())
        })
        .map(|i| identity::ActiveModel {
            id: Set(Uuid::now_v7()),
            tenant: Set(tenant.as_str().to_owned()),
            customer_id: Set(customer.id),
            kind: Set(i.kind().as_str().to_owned()),
            source: Set(i.stored_source().to_owned()),
            value: Set(i.value().to_owned()),
            created_at: Set(now),
        })
        .collect();
    if !new_links.is_empty() {
        identity::Entity::insert_many(new_links).exec(txn).await?;
    }
    let conflicting = owners.into_iter().filter(|id| *id != customer.id).collect();
    Ok(Some(Resolved { customer, created, conflicting }))
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
