//! Restriction of processing (GDPR art. 18): the customer is kept but served to no purpose except privacy
//! administration. The policy decision point reads the flag; this module sets it.
use crate::changes::{Changed, CustomerChangeKind};
use sea_orm::{ActiveModelTrait, ColumnTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope},
    consent::ledger::bump_consent_version,
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::customer,
};

/// Restricts (`true`) or lifts the restriction (`false`). Needs `privacy:admin`.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), customer = %customer_id, restricted))]
pub async fn set_restriction(caller: &Caller, svc: &Services, customer_id: Uuid, restricted: bool) -> ApiResult<()> {
    caller.require(Scope::PrivacyAdmin)?;
    let txn = svc.db.begin_write().await?;
    let row = customer::of_tenant(caller.tenant())
        .filter(customer::Column::Id.eq(customer_id))
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("customer {customer_id}")))?;
    let mut row: customer::ActiveModel = row.into();
    row.restricted = Set(restricted);
    row.update(&txn).await?;
    bump_consent_version(&txn, caller.tenant(), customer_id).await?;
    txn.commit().await?;
    let changed = Changed::new().customer(customer_id, CustomerChangeKind::ConsentChanged);
    crate::changes::committed(svc, caller.tenant(), changed).await;
    Ok(())
}
