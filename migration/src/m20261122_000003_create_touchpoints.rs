//! Touchpoints: every interaction of a customer with the brand, kept in full (never only the last N days).
use sea_orm_migration::prelude::*;

use crate::m20261122_000001_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Touchpoints {
    Table,
    Id,
    Tenant,
    CustomerId,
    Channel,
    Kind,
    Stage,
    OccurredAt,
    ReceivedAt,
    Source,
    IdempotencyKey,
    Properties,
    Value,
    Currency,
    FeedbackMetric,
    FeedbackScore,
    FeedbackVerbatim,
    Consent,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Touchpoints::Table)
                    .col(ColumnDef::new(Touchpoints::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Touchpoints::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Touchpoints::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(Touchpoints::Channel).string_len(32).not_null())
                    .col(ColumnDef::new(Touchpoints::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Touchpoints::Stage).string_len(32).not_null())
                    .col(ColumnDef::new(Touchpoints::OccurredAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Touchpoints::ReceivedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Touchpoints::Source).string_len(64).not_null())
                    .col(ColumnDef::new(Touchpoints::IdempotencyKey).string_len(128).not_null())
                    .col(ColumnDef::new(Touchpoints::Properties).json().null())
                    .col(ColumnDef::new(Touchpoints::Value).double().null())
                    .col(ColumnDef::new(Touchpoints::Currency).string_len(3).null())
                    .col(ColumnDef::new(Touchpoints::FeedbackMetric).string_len(8).null())
                    .col(ColumnDef::new(Touchpoints::FeedbackScore).small_integer().null())
                    .col(ColumnDef::new(Touchpoints::FeedbackVerbatim).text().null())
                    .col(ColumnDef::new(Touchpoints::Consent).json().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_touchpoints_customer")
                            .from(Touchpoints::Table, Touchpoints::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade)
                            .on_update(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Replays are harmless: one touchpoint per idempotency key per tenant.
        manager
            .create_index(
                Index::create()
                    .name("ux_touchpoints_tenant_idempotency")
                    .table(Touchpoints::Table)
                    .col(Touchpoints::Tenant)
                    .col(Touchpoints::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // A customer's timeline, newest first: keyset on (occurred_at, id) whatever the history's length.
        manager
            .create_index(
                Index::create()
                    .name("ix_touchpoints_timeline")
                    .table(Touchpoints::Table)
                    .col(Touchpoints::Tenant)
                    .col(Touchpoints::CustomerId)
                    .col(Touchpoints::OccurredAt)
                    .col(Touchpoints::Id)
                    .to_owned(),
            )
            .await?;
        // The cross-customer feed in arrival order (ids are UUIDv7), resumable from a cursor.
        manager
            .create_index(
                Index::create()
                    .name("ix_touchpoints_feed")
                    .table(Touchpoints::Table)
                    .col(Touchpoints::Tenant)
                    .col(Touchpoints::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Touchpoints::Table).to_owned()).await
    }
}
