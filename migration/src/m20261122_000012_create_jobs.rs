//! Durable jobs: tenant-wide work that runs in the background in batches, with progress and a checkpoint.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    Tenant,
    Kind,
    State,
    Progress,
    Checkpoint,
    Result,
    Error,
    RequestedBy,
    Runner,
    CreatedAt,
    StartedAt,
    FinishedAt,
    HeartbeatAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(ColumnDef::new(Jobs::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Jobs::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Jobs::Kind).string_len(64).not_null())
                    .col(ColumnDef::new(Jobs::State).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::Progress).json().not_null())
                    .col(ColumnDef::new(Jobs::Checkpoint).string_len(128).null())
                    .col(ColumnDef::new(Jobs::Result).json().null())
                    .col(ColumnDef::new(Jobs::Error).text().null())
                    .col(ColumnDef::new(Jobs::RequestedBy).string_len(256).not_null())
                    .col(ColumnDef::new(Jobs::Runner).uuid().null())
                    .col(ColumnDef::new(Jobs::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::StartedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Jobs::FinishedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Jobs::HeartbeatAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // A tenant's jobs, paged by id.
        manager
            .create_index(
                Index::create().name("ix_jobs_tenant").table(Jobs::Table).col(Jobs::Tenant).col(Jobs::Id).to_owned(),
            )
            .await?;
        // What the runner claims: queued jobs, and running ones whose heartbeat went stale.
        manager
            .create_index(
                Index::create().name("ix_jobs_state").table(Jobs::Table).col(Jobs::State).col(Jobs::Id).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Jobs::Table).to_owned()).await
    }
}
