//! The consent ledger: every decision a customer made, appended, never overwritten.
use sea_orm_migration::prelude::*;

use crate::m20261122_000001_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ConsentEvents {
    Table,
    Id,
    Tenant,
    CustomerId,
    Purpose,
    Channel,
    Status,
    CapturedAt,
    RecordedAt,
    Source,
    PolicyVersion,
    LegalBasis,
    ExpiresAt,
    Evidence,
    RecordedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ConsentEvents::Table)
                    .col(ColumnDef::new(ConsentEvents::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ConsentEvents::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(ConsentEvents::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(ConsentEvents::Purpose).string_len(64).not_null())
                    // Empty string for "every channel", so equality and indexes work alike on both backends.
                    .col(ColumnDef::new(ConsentEvents::Channel).string_len(32).not_null().default(""))
                    .col(ColumnDef::new(ConsentEvents::Status).string_len(16).not_null())
                    .col(ColumnDef::new(ConsentEvents::CapturedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ConsentEvents::RecordedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ConsentEvents::Source).string_len(64).not_null())
                    .col(ColumnDef::new(ConsentEvents::PolicyVersion).string_len(64).null())
                    .col(ColumnDef::new(ConsentEvents::LegalBasis).string_len(32).null())
                    .col(ColumnDef::new(ConsentEvents::ExpiresAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(ConsentEvents::Evidence).json().null())
                    .col(ColumnDef::new(ConsentEvents::RecordedBy).string_len(256).not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_consent_events_customer")
                            .from(ConsentEvents::Table, ConsentEvents::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_consent_events_customer")
                    .table(ConsentEvents::Table)
                    .col(ConsentEvents::Tenant)
                    .col(ConsentEvents::CustomerId)
                    .col(ConsentEvents::CapturedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ConsentEvents::Table).to_owned()).await
    }
}
