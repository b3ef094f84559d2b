//! Privacy administration: export, erasure, and the access log. All need `privacy:admin`.
use async_graphql::{Context, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::request;
use crate::{
    error::GqlResult,
    privacy::{erasure, export},
};

#[derive(Default)]
pub struct PrivacyQuery;

#[Object]
impl PrivacyQuery {
    /// Everything held about a customer in one machine-readable document (GDPR art. 15 and 20): profile,
    /// identities, touchpoints, the consent ledger, merges and the access log. Needs `privacy:admin`.
    async fn export_customer(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Json<serde_json::Value>> {
        let rc = request(ctx)?;
        Ok(Json(export::export_customer(&rc.caller, &rc.services, id).await.gql()?))
    }
}

/// What remains of an erasure: no personal data.
#[derive(SimpleObject)]
pub struct ErasureReceipt {
    id: Uuid,
    erased_at: DateTime<Utc>,
    /// Rows removed per table, and how many identities are now suppressed.
    rows: Json<serde_json::Value>,
}

#[derive(Default)]
pub struct PrivacyMutation;

#[Object]
impl PrivacyMutation {
    /// Erases a customer (GDPR art. 17): profile, identities, touchpoints and consents in one transaction, cached
    /// copies too. Their identities are suppressed so later events carrying them are dropped, not turned back
    /// into a person. Needs `privacy:admin`.
    async fn erase_customer(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<ErasureReceipt> {
        let rc = request(ctx)?;
        let receipt = erasure::erase_customer(&rc.caller, &rc.services, id).await.gql()?;
        Ok(ErasureReceipt { id: receipt.id, erased_at: receipt.erased_at, rows: Json(receipt.rows) })
    }
}
