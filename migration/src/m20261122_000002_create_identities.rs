//! Identities: normalised identifiers (email, phone, device id, …) that point at a customer.
use sea_orm_migration::prelude::*;

use crate::m20261122_000001_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Identities {
    Table,
    Id,
    Tenant,
    CustomerId,
    Kind,
    Source,
    Value,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Identities::Table)
                    .col(ColumnDef::new(Identities::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Identities::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Identities::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(Identities::Kind).string_len(32).not_null())
                    // Empty string, not NULL, for kinds without a source, so the unique index below holds.
                    .col(ColumnDef::new(Identities::Source).string_len(64).not_null().default(""))
                    .col(ColumnDef::new(Identities::Value).text().not_null())
                    .col(ColumnDef::new(Identities::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_identities_customer")
                            .from(Identities::Table, Identities::CustomerId)
                            .to(Customers::Table, Customers::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One identity value points at one customer per tenant: this constraint, not luck, settles concurrent writers.
        manager
            .create_index(
                Index::create()
                    .name("ux_identities_tenant_kind_source_value")
                    .table(Identities::Table)
                    .col(Identities::Tenant)
                    .col(Identities::Kind)
                    .col(Identities::Source)
                    .col(Identities::Value)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_identities_customer")
                    .table(Identities::Table)
                    .col(Identities::CustomerId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Identities::Table).to_owned()).await
    }
}
