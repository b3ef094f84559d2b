//! Touchpoints get a commit-ordered position, so the cross-customer feed can resume from a cursor without ever
//! skipping a touchpoint whose transaction committed after a later one's (UUIDv7 ids are taken before commit).
//!
//! PostgreSQL: the id of the writing transaction (`pg_current_xact_id()`), filled by the column default, so no
//! writer sets it; the feed only serves positions below the oldest transaction still in flight. Existing rows get
//! this migration's transaction id (one position, then id order).
//! SQLite: write transactions are serialized, so a number drawn from a one-row sequence inside the write is in
//! commit order; a trigger draws it for every insert. Existing rows are numbered in id order.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: &[&str] = &[
    "ALTER TABLE touchpoints ADD COLUMN commit_position bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint)",
    "CREATE INDEX ix_touchpoints_feed_position ON touchpoints (tenant, commit_position, id)",
    "DROP INDEX ix_touchpoints_feed",
];

const POSTGRES_DOWN: &[&str] = &[
    "CREATE INDEX ix_touchpoints_feed ON touchpoints (tenant, id)",
    "DROP INDEX ix_touchpoints_feed_position",
    "ALTER TABLE touchpoints DROP COLUMN commit_position",
];

const SQLITE_UP: &[&str] = &[
    "ALTER TABLE touchpoints ADD COLUMN commit_position INTEGER NOT NULL DEFAULT 0",
    "UPDATE touchpoints SET commit_position = numbered.n FROM \
     (SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM touchpoints) AS numbered WHERE touchpoints.id = numbered.id",
    "CREATE TABLE touchpoint_commit_sequence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)",
    "INSERT INTO touchpoint_commit_sequence (id, last) SELECT 1, COALESCE(MAX(commit_position), 0) FROM touchpoints",
    "CREATE TRIGGER touchpoints_commit_position AFTER INSERT ON touchpoints BEGIN \
       UPDATE touchpoint_commit_sequence SET last = last + 1 WHERE id = 1; \
       UPDATE touchpoints SET commit_position = (SELECT last FROM touchpoint_commit_sequence WHERE id = 1) \
         WHERE id = NEW.id; \
     END",
    "CREATE INDEX ix_touchpoints_feed_position ON touchpoints (tenant, commit_position, id)",
    "DROP INDEX ix_touchpoints_feed",
];

const SQLITE_DOWN: &[&str] = &[
    "CREATE INDEX ix_touchpoints_feed ON touchpoints (tenant, id)",
    "DROP INDEX ix_touchpoints_feed_position",
    "DROP TRIGGER touchpoints_commit_position",
    "DROP TABLE touchpoint_commit_sequence",
    "ALTER TABLE touchpoints DROP COLUMN commit_position",
];

async fn run(manager: &SchemaManager<'_>, postgres: &[&str], sqlite: &[&str]) -> Result<(), DbErr> {
    let statements = match manager.get_database_backend() {
        DbBackend::Postgres => postgres,
        DbBackend::Sqlite => sqlite,
        other => return Err(DbErr::Migration(format!("unsupported backend {other:?}"))),
    };
    for statement in statements {
        manager.get_connection().execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, POSTGRES_UP, SQLITE_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}
