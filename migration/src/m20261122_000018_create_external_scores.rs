//! Scores a tenant's own models write through the API, one value per customer and name, served under the same
//! rules as Kontakt's own scores.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ExternalScores {
    Table,
    Tenant,
    CustomerId,
    Name,
    Value,
    Model,
    ComputedAt,
    WrittenBy,
    WrittenAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ExternalScores::Table)
                    .col(ColumnDef::new(ExternalScores::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(ExternalScores::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(ExternalScores::Name).string_len(64).not_null())
                    .col(ColumnDef::new(ExternalScores::Value).double().not_null())
                    .col(ColumnDef::new(ExternalScores::Model).string_len(128).null())
                    .col(ColumnDef::new(ExternalScores::ComputedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ExternalScores::WrittenBy).string_len(256).not_null())
                    .col(ColumnDef::new(ExternalScores::WrittenAt).timestamp_with_time_zone().not_null())
                    .primary_key(
                        Index::create()
                            .col(ExternalScores::Tenant)
                            .col(ExternalScores::CustomerId)
                            .col(ExternalScores::Name),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ExternalScores::Table).to_owned()).await
    }
}
