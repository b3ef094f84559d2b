//! `touchpoints` rows.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "touchpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub customer_id: Uuid,
    pub channel: String,
    pub kind: String,
    pub stage: String,
    pub occurred_at: DateTimeUtc,
    pub received_at: DateTimeUtc,
    pub source: String,
    pub idempotency_key: String,
    pub properties: Option<Json>,
    pub value: Option<f64>,
    pub currency: Option<String>,
    pub feedback_metric: Option<String>,
    pub feedback_score: Option<i16>,
    pub feedback_verbatim: Option<String>,
    pub consent: Option<Json>,
    /// The identity the touchpoint was attached through (none when named by customer id, or seeded); it may name
    /// an identity removed since (blocked, unlinked), which then matches nothing.
    pub identity_id: Option<Uuid>,
    /// The touchpoint's place in commit order, which the feed pages on: the writing transaction's id on
    /// PostgreSQL, a sequence drawn inside the (serialized) write on SQLite. The database fills it; writers leave
    /// it `NotSet`.
    #[serde(default)]
    pub commit_position: i64,
    /// Whether the sender gave the stage (kept when the tenant's journey rules change) or it was derived (re-derived
    /// when they do); `None` for touchpoints stored before this was recorded.
    #[serde(default)]
    pub stage_explicit: Option<bool>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("touchpoints");
