//! `cx_answers` rows: one per survey answer, with whether it counts in the tenant's CX metrics (see `crate::cx`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "cx_answers")]
pub struct Model {
    /// The SURVEY_RESPONSE touchpoint the answer came with.
    #[sea_orm(primary_key, auto_increment = false)]
    pub touchpoint_id: Uuid,
    pub tenant: String,
    /// The customer the touchpoint belongs to now (kept in step on merge and unmerge).
    pub customer_id: Uuid,
    /// `FeedbackMetric`, as text.
    pub metric: String,
    pub score: i16,
    pub answered_at: DateTimeUtc,
    /// The UTC day of `answered_at`: the rollup's day.
    pub day: Date,
    pub channel: String,
    pub stage: String,
    /// The type of the touchpoint the answer rates (`about_touchpoint_id`'s), else `survey_response`.
    pub touchpoint_type: String,
    pub source: String,
    pub about_touchpoint_id: Option<Uuid>,
    /// Whether the answer is in the rollups now (the tenant's counting rule, `consent::policy::cx_counting`).
    pub counted: bool,
    /// When a counted answer stops counting (the expiry of the consent it counts under).
    pub counts_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("cx_answers");
