//! `derived_dirty` rows: a customer whose derived state must be evaluated again, and why (see `crate::derived::maintain`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "derived_dirty")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: Uuid,
    /// `derived::Cause` text: the latest write's.
    pub cause: String,
    /// Whether a consent or restriction change is among the writes (a revocation may be due), whatever came after.
    pub consent_changed: bool,
    pub queued_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("derived_dirty");
