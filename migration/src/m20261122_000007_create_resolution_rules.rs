//! Identity resolution rules per tenant, and the conflicts resolution recorded instead of merging.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ResolutionRules {
    Table,
    Tenant,
    Rules,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ResolutionConflicts {
    Table,
    Id,
    Tenant,
    CustomerId,
    OtherCustomerId,
    Kind,
    Reason,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ResolutionRules::Table)
                    .col(ColumnDef::new(ResolutionRules::Tenant).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(ResolutionRules::Rules).json().not_null())
                    .col(ColumnDef::new(ResolutionRules::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ResolutionConflicts::Table)
                    .col(ColumnDef::new(ResolutionConflicts::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ResolutionConflicts::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(ResolutionConflicts::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(ResolutionConflicts::OtherCustomerId).uuid().null())
                    .col(ColumnDef::new(ResolutionConflicts::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(ResolutionConflicts::Reason).string_len(32).not_null())
                    .col(ColumnDef::new(ResolutionConflicts::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_resolution_conflicts_customer")
                    .table(ResolutionConflicts::Table)
                    .col(ResolutionConflicts::Tenant)
                    .col(ResolutionConflicts::CustomerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ResolutionConflicts::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ResolutionRules::Table).to_owned()).await
    }
}
