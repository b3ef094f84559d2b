//! Erasure (GDPR art. 17): the customer, source data, identities, touchpoints and consents go in one transaction;
//! cached copies go too; the identities are suppressed; a receipt without personal data remains.
use crate::changes::{Changed, CustomerChangeKind};
use crate::privacy::access_log::AccessCategory;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, Set};
use serde_json::json;
use uuid::Uuid;

use super::suppression;
use crate::{
    auth::{Caller, Scope},
    error::{ApiError, ApiResult},
    profiles::{Identity, IdentityKind},
    services::Services,
    storage::entities::{
        consent_event, customer, erasure_receipt, identity, merge, resolution_conflict, source_record, touchpoint,
        trait_value,
    },
};

/// What remains of an erasure: when, by whom, how many rows. No personal data.
#[derive(Debug, Clone)]
pub struct ErasureReceipt {
    pub id: Uuid,
    pub erased_at: DateTime<Utc>,
    pub rows: serde_json::Value,
}

/// Erases a customer of the caller's tenant. Needs `privacy:admin`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), customer = %requested_id))]
pub async fn erase_customer(caller: &Caller, svc: &Services, requested_id: Uuid) -> ApiResult<ErasureReceipt> {
    caller.require(Scope::PrivacyAdmin)?;
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    // A merged-away id stands for the person it was merged into: erasing it erases them, not only the stub.
    let customer_id = crate::profiles::customers::current_id(&txn, tenant, requested_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("customer {requested_id}")))?;
    // Customers merged into this one are the same person: they go too (they keep names, never identities).
    let mut people = vec![customer_id];
    let mut frontier = vec![customer_id];
    while !frontier.is_empty() && people.len() < 1000 {
        let merged: Vec<Uuid> = customer::of_tenant(tenant)
            .filter(customer::Column::MergedInto.is_in(frontier.clone()))
            .select_only()
            .column(customer::Column::Id)
            .into_tuple()
            .all(&txn)
            .await?;
        frontier = merged.into_iter().filter(|id| !people.contains(id)).collect();
        people.extend(frontier.iter().copied());
    }
    let stored = identity::of_tenant(tenant).filter(identity::Column::CustomerId.eq(customer_id)).all(&txn).await?;
    let identities: Vec<Identity> = stored
        .iter()
        .filter_map(|m| {
            Some(Identity::from_stored(m.kind.parse::<IdentityKind>().ok()?, m.source.clone(), m.value.clone()))
        })
        .collect();
    suppression::suppress(&txn, tenant, &svc.settings, &identities).await?;

    // Their survey answers leave the CX rollups with them; their external scores go.
    for person in &people {
        crate::cx::answers::erase(&txn, tenant, *person).await?;
    }
    crate::storage::entities::external_score::delete_of_tenant(tenant)
        .filter(crate::storage::entities::external_score::Column::CustomerId.is_in(people.clone()))
        .exec(&txn)
        .await?;
    // Everything derived about them, and the change events that named them.
    crate::derived::maintain::erase(&txn, tenant, &people).await?;
    // Their feedback cases and the cases' histories go too.
    let feedback_cases = crate::cx::cases::erase(&txn, tenant, &people).await?;
    let touchpoints = touchpoint::delete_of_tenant(tenant)
        .filter(touchpoint::Column::CustomerId.eq(customer_id))
        .exec(&txn)
        .await?
        .rows_affected;
    let consents = consent_event::delete_of_tenant(tenant)
        .filter(consent_event::Column::CustomerId.eq(customer_id))
        .exec(&txn)
        .await?
        .rows_affected;
    let records = source_record::delete_of_tenant(tenant)
        .filter(source_record::Column::CustomerId.is_in(people.clone()))
        .exec(&txn)
        .await?
        .rows_affected;
    let trait_rows = trait_value::delete_of_tenant(tenant)
        .filter(trait_value::Column::CustomerId.is_in(people.clone()))
        .exec(&txn)
        .await?
        .rows_affected;
    resolution_conflict::delete_of_tenant(tenant)
        .filter(
            sea_orm::Condition::any()
                .add(resolution_conflict::Column::CustomerId.eq(customer_id))
                .add(resolution_conflict::Column::OtherCustomerId.eq(customer_id)),
        )
        .exec(&txn)
        .await?;
    let identity_rows = identity::delete_of_tenant(tenant)
        .filter(identity::Column::CustomerId.eq(customer_id))
        .exec(&txn)
        .await?
        .rows_affected;
    merge::delete_of_tenant(tenant)
        .filter(
            sea_orm::Condition::any()
                .add(merge::Column::SurvivorId.is_in(people.clone()))
                .add(merge::Column::MergedId.is_in(people.clone())),
        )
        .exec(&txn)
        .await?;
    let customers = customer::delete_of_tenant(tenant)
        .filter(customer::Column::Id.is_in(people.clone()))
        .exec(&txn)
        .await?
        .rows_affected;
    let rows = json!({
        "customers": customers,
        "identities": identity_rows,
        "touchpoints": touchpoints,
        "consentEvents": consents,
        "sourceRecords": records,
        "traitValues": trait_rows,
        "feedbackCases": feedback_cases,
        "suppressedIdentities": identities.len(),
    });
    let erased_at = Utc::now();
    let receipt = erasure_receipt::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        erased_at: Set(erased_at),
        erased_by: Set(caller.subject().chars().take(256).collect()),
        request_id: Set(caller.request_id().map(str::to_owned)),
        rows: Set(rows.clone()),
    };
    let id = erasure_receipt::Entity::insert(receipt).exec(&txn).await?.last_insert_id;
    txn.commit().await?;
    // Every id of the person: a merged-away id's cache entry holds the survivor's profile.
    let changed = Changed::new().customer(customer_id, CustomerChangeKind::Erased).uncache(people.iter().copied());
    crate::changes::committed(svc, tenant, changed).await;
    svc.access_log.record(caller, [customer_id], AccessCategory::Erasure);
    Ok(ErasureReceipt { id, erased_at, rows })
}
