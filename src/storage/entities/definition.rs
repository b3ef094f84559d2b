//! `definitions` rows: one version of a computed trait or segment (see `crate::derived::catalog`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "definitions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub key: String,
    /// `segment` or `computed_trait`.
    pub kind: String,
    /// The consent purpose the definition serves (`ConsentPurpose` text).
    pub purpose: String,
    pub version: i32,
    /// The body (`derived::definitions`), as the caller wrote it.
    pub body: Json,
    pub created_at: DateTimeUtc,
    pub created_by: String,
    /// When this version began to answer reads (none while its backfill runs).
    pub activated_at: Option<DateTimeUtc>,
    /// When the stored memberships and values of every customer were computed for this version (none: a backfill
    /// job is due).
    pub backfilled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("definitions");
