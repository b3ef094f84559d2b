//! Computed-trait and segment definitions, per tenant, versioned: every change is a new row; the latest version of a
//! key is the one served.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Definitions {
    Table,
    Id,
    Tenant,
    Key,
    Kind,
    Purpose,
    Version,
    Body,
    CreatedAt,
    CreatedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Definitions::Table)
                    .col(ColumnDef::new(Definitions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Definitions::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Definitions::Key).string_len(64).not_null())
                    .col(ColumnDef::new(Definitions::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(Definitions::Purpose).string_len(32).not_null())
                    .col(ColumnDef::new(Definitions::Version).integer().not_null())
                    .col(ColumnDef::new(Definitions::Body).json().not_null())
                    .col(ColumnDef::new(Definitions::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Definitions::CreatedBy).string_len(256).not_null())
                    .to_owned(),
            )
            .await?;
        // One row per (tenant, key, version): two concurrent changes of a key cannot both take the next version.
        manager
            .create_index(
                Index::create()
                    .name("ux_definitions_version")
                    .table(Definitions::Table)
                    .col(Definitions::Tenant)
                    .col(Definitions::Key)
                    .col(Definitions::Version)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Definitions::Table).to_owned()).await
    }
}
