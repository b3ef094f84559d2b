//! `journey_rules` rows: one JSON document of journey-stage rules per tenant (see `crate::touchpoints::stages`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "journey_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    pub rules: Json,
    /// Moves with every change: a re-derivation job names the version it applied.
    pub version: i64,
    pub updated_at: DateTimeUtc,
    pub updated_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("journey rules");
