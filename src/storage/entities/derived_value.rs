//! `derived_values` rows: a customer's membership of a segment (value `true`; no row when out) or the value of a
//! computed trait (no row when null), as last maintained.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "derived_values")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// `segment` or `computed_trait`.
    pub kind: String,
    /// The definition version that computed it.
    pub version: i32,
    pub value: Json,
    /// Since when it holds this value.
    pub since: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("derived_values");
