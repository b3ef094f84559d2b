//! `customers` rows.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub merged_into: Option<Uuid>,
    /// Processing restricted (GDPR art. 18): stored, served to no purpose but privacy administration.
    pub restricted: bool,
    /// Bumped in the same transaction as every consent or restriction change.
    pub consent_version: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("customers");
