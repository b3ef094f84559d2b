//! `action_rules` rows: one version of a next-best-action rule (see `crate::derived::actions`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "action_rules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub key: String,
    pub version: i32,
    /// The latest version of its key: the one evaluated and listed.
    pub current: bool,
    /// A disabled rule is kept (and listed) but never evaluated.
    pub enabled: bool,
    /// The consent purpose the action serves (`ConsentPurpose` text).
    pub purpose: String,
    /// Higher first.
    pub priority: i32,
    /// Where the action is shown (`home_banner`, `checkout`, …); `None`: not tied to a placement.
    pub placement: Option<String>,
    /// The condition, in the segment language of `derived::definitions`, as the caller wrote it; `None`: always.
    pub condition: Option<Json>,
    /// The action (a JSON object) handed to the caller when the rule fires.
    pub payload: Json,
    pub cooldown_seconds: Option<i64>,
    /// Frequency cap: at most `cap_max` shows within `cap_days` days.
    pub cap_max: Option<i32>,
    pub cap_days: Option<i32>,
    pub created_at: DateTimeUtc,
    pub created_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("action_rules");
