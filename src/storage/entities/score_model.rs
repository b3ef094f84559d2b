//! `score_models` rows: a tenant's fitted purchase and spend models (see `crate::derived::scores`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "score_models")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// Moves with every fit.
    pub version: i64,
    /// `scores::TimeUnit` of the summaries the models were fitted on.
    pub unit: String,
    /// `scores::bgnbd::BgNbdParams` as JSON, absent when refused.
    pub bgnbd: Option<Json>,
    pub gamma_gamma: Option<Json>,
    /// Why the purchase model was not fitted (`TOO_FEW_CUSTOMERS: …`).
    pub bgnbd_refusal: Option<String>,
    pub gamma_gamma_refusal: Option<String>,
    pub customers: i64,
    pub repeat_buyers: i64,
    pub fitted_at: DateTimeUtc,
    pub fitted_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("score models");
