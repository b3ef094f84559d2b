//! `jobs` rows: tenant-wide work run in the background (see `crate::jobs`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "jobs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    /// `jobs::JobKind`, as text.
    pub kind: String,
    /// `jobs::JobState`, as text.
    pub state: String,
    /// `{ "done": n, "total": n }`.
    pub progress: Json,
    /// Where a resumed run goes on from (for re-resolution: the last customer id done).
    pub checkpoint: Option<String>,
    /// What the job did so far (kept after each batch), then in the end.
    pub result: Option<Json>,
    pub error: Option<String>,
    /// The subject of the caller who asked for it.
    pub requested_by: String,
    /// The run that holds the job while RUNNING; every write of a run is conditional on it.
    pub runner: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub started_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
    pub heartbeat_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

super::tenant_scoped!("jobs");

/// The job runner's root for writing one job: by id, whatever its tenant (the runner serves every tenant; the API
/// reads and writes jobs through the tenant roots).
pub fn update_by_id(id: uuid::Uuid) -> sea_orm::UpdateMany<Entity> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    Entity::update_many().filter(Column::Id.eq(id))
}
