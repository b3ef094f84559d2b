//! `feedback_rules` rows: which survey answers open a feedback case, and how it is handled (see `crate::cx::cases`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "feedback_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    /// Unique per tenant: `updateFeedbackRules` updates the rule of that name.
    pub name: String,
    /// `FeedbackMetric`, as text (`nps`, `csat`, `ces`).
    pub metric: String,
    /// The answers that open a case: `score_min..=score_max`.
    pub score_min: i16,
    pub score_max: i16,
    /// Channels (`Channel` texts) the answer must come from; empty: any.
    pub channels: Json,
    /// Journey stages (`JourneyStage` texts) the answer must sit in; empty: any.
    pub stages: Json,
    /// `cases::Priority`, as text.
    pub priority: String,
    pub team: String,
    pub first_contact_secs: i64,
    pub resolution_secs: i64,
    pub enabled: bool,
    /// Moves with every change.
    pub version: i32,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub updated_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("feedback_rules");
