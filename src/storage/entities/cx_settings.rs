//! `cx_settings` rows: a tenant's CX settings (absent: the defaults of `crate::cx::settings`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cx_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// `cx::CountingBasis`, as text.
    pub basis: String,
    pub min_answers: i32,
    pub low_confidence_margin: f64,
    pub updated_at: DateTimeUtc,
    pub updated_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("cx_settings");
