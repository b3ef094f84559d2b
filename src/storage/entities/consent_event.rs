//! `consent_events` rows: the append-only consent ledger.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub customer_id: Uuid,
    pub purpose: String,
    pub channel: String,
    pub status: String,
    pub captured_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
    pub source: String,
    pub policy_version: Option<String>,
    pub legal_basis: Option<String>,
    pub expires_at: Option<DateTimeUtc>,
    pub evidence: Option<Json>,
    pub recorded_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("the ledger");
