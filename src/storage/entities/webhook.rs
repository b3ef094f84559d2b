//! `webhooks` rows: a tenant's endpoint for derived-data change events and where its delivery stands.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub url: String,
    /// The consent purpose deliveries are made for.
    pub purpose: String,
    /// The event kinds wanted (a JSON list of `EventKind` text; empty: all).
    pub kinds: Json,
    /// The HMAC key of the signatures.
    pub secret: String,
    pub created_at: DateTimeUtc,
    pub created_by: String,
    pub active: bool,
    /// The position of the last event delivered (or passed over).
    pub cursor: i64,
    /// Failed attempts at the event after `cursor`.
    pub attempts: i32,
    pub next_attempt_at: Option<DateTimeUtc>,
    pub last_error: Option<String>,
    pub last_status: Option<i32>,
    pub delivered: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("webhooks");
