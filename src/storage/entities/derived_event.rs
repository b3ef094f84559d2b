//! `derived_events` rows: the transactional outbox of derived-data changes, in commit order by `position`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "derived_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub position: i64,
    pub tenant: String,
    pub customer_id: Uuid,
    /// `derived::events::EventKind` text.
    pub kind: String,
    /// The definition key (none for a consent change).
    pub key: Option<String>,
    /// The consent purpose the definition serves.
    pub purpose: Option<String>,
    /// `derived::Cause` text.
    pub cause: String,
    /// `{ "value": …, "previous": … }` for a computed trait; none otherwise.
    pub payload: Option<Json>,
    pub at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("derived_events");
