//! `feedback_case_events` rows: a feedback case's append-only history (rows are only inserted; erasure deletes).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "feedback_case_events")]
pub struct Model {
    /// UUIDv7: the history reads in id order.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub case_id: Uuid,
    pub at: DateTimeUtc,
    /// The caller's subject, or `system` for the rule and the sweeper.
    pub actor: String,
    /// `cases::EventKind`, as text.
    pub kind: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub priority: Option<String>,
    /// For SLA_BREACHED: `first_contact` or `resolution`.
    pub deadline: Option<String>,
    /// The contact, the linked answer or the re-survey.
    pub touchpoint_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("feedback_case_events");
