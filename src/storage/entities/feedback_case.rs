//! `feedback_cases` rows: the follow-up of one poor survey answer (see `crate::cx::cases`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "feedback_cases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub customer_id: Uuid,
    pub rule_id: Uuid,
    /// The SURVEY_RESPONSE touchpoint whose answer opened the case.
    pub trigger_touchpoint_id: Uuid,
    pub metric: String,
    pub score: i16,
    pub answered_at: DateTimeUtc,
    pub channel: String,
    pub stage: String,
    /// `cases::CaseState`, as text.
    pub state: String,
    /// `cases::Priority`, as text.
    pub priority: String,
    pub team: String,
    /// The subject of the person working the case.
    pub owner: Option<String>,
    pub opened_at: DateTimeUtc,
    pub first_contact_due: DateTimeUtc,
    pub resolution_due: DateTimeUtc,
    pub first_contacted_at: Option<DateTimeUtc>,
    pub resolved_at: Option<DateTimeUtc>,
    pub closed_at: Option<DateTimeUtc>,
    pub breached_first_contact: bool,
    pub breached_resolution: bool,
    pub root_cause_code: Option<String>,
    /// `cases::Outcome`, as text.
    pub outcome: Option<String>,
    pub follow_up_touchpoint_id: Option<Uuid>,
    pub resurvey_touchpoint_id: Option<Uuid>,
    pub resurvey_score: Option<i16>,
    /// `customer:rule` while the case is not CLOSED, else NULL: unique per tenant, so one open case per pair.
    pub open_key: Option<String>,
    /// Moves with every change; every write is conditional on the version it read.
    pub version: i32,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("feedback_cases");
