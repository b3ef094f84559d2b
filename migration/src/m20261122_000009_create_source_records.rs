//! Source records as received, the history of every trait value they carried, and per-tenant trait rules.
use sea_orm_migration::prelude::*;

use crate::m20261122_000001_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SourceRecords {
    Table,
    Id,
    Tenant,
    CustomerId,
    Source,
    SourceRecordId,
    Identities,
    Traits,
    ObservedAt,
    ReceivedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TraitValues {
    Table,
    Id,
    Tenant,
    CustomerId,
    RecordId,
    Source,
    Name,
    Value,
    ObservedAt,
    RecordedAt,
}

#[derive(DeriveIden)]
enum TraitRules {
    Table,
    Tenant,
    Rules,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SourceRecords::Table)
                    .col(ColumnDef::new(SourceRecords::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(SourceRecords::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(SourceRecords::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(SourceRecords::Source).string_len(64).not_null())
                    .col(ColumnDef::new(SourceRecords::SourceRecordId).string_len(128).not_null())
                    .col(ColumnDef::new(SourceRecords::Identities).json().not_null())
                    .col(ColumnDef::new(SourceRecords::Traits).json().not_null())
                    .col(ColumnDef::new(SourceRecords::ObservedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(SourceRecords::ReceivedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(SourceRecords::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_source_records_customer")
                            .from(SourceRecords::Table, SourceRecords::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_source_records_key")
                    .table(SourceRecords::Table)
                    .col(SourceRecords::Tenant)
                    .col(SourceRecords::Source)
                    .col(SourceRecords::SourceRecordId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_source_records_customer")
                    .table(SourceRecords::Table)
                    .col(SourceRecords::Tenant)
                    .col(SourceRecords::CustomerId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TraitValues::Table)
                    .col(ColumnDef::new(TraitValues::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(TraitValues::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(TraitValues::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(TraitValues::RecordId).uuid().not_null())
                    .col(ColumnDef::new(TraitValues::Source).string_len(64).not_null())
                    .col(ColumnDef::new(TraitValues::Name).string_len(64).not_null())
                    .col(ColumnDef::new(TraitValues::Value).json().not_null())
                    .col(ColumnDef::new(TraitValues::ObservedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(TraitValues::RecordedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_trait_values_customer")
                            .from(TraitValues::Table, TraitValues::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_trait_values_customer")
                    .table(TraitValues::Table)
                    .col(TraitValues::Tenant)
                    .col(TraitValues::CustomerId)
                    .col(TraitValues::Name)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TraitRules::Table)
                    .col(ColumnDef::new(TraitRules::Tenant).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(TraitRules::Rules).json().not_null())
                    .col(ColumnDef::new(TraitRules::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(TraitRules::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(TraitValues::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(SourceRecords::Table).to_owned()).await
    }
}
