//! Merges: which customer survived, which was merged into it, why (the evidence), and exactly what moved, so a
//! wrong merge can be undone.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Merges {
    Table,
    Id,
    Tenant,
    SurvivorId,
    MergedId,
    Reason,
    Evidence,
    Moved,
    MergedBy,
    CreatedAt,
    UndoneAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Merges::Table)
                    .col(ColumnDef::new(Merges::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Merges::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Merges::SurvivorId).uuid().not_null())
                    .col(ColumnDef::new(Merges::MergedId).uuid().not_null())
                    .col(ColumnDef::new(Merges::Reason).string_len(32).not_null())
                    .col(ColumnDef::new(Merges::Evidence).json().not_null())
                    .col(ColumnDef::new(Merges::Moved).json().not_null())
                    .col(ColumnDef::new(Merges::MergedBy).string_len(256).not_null())
                    .col(ColumnDef::new(Merges::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Merges::UndoneAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_merges_survivor")
                    .table(Merges::Table)
                    .col(Merges::Tenant)
                    .col(Merges::SurvivorId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_merges_merged")
                    .table(Merges::Table)
                    .col(Merges::Tenant)
                    .col(Merges::MergedId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Merges::Table).to_owned()).await
    }
}
