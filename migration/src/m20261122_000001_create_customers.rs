//! Customers: the unified profile, one row per person per tenant.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
pub enum Customers {
    Table,
    Id,
    Tenant,
    GivenName,
    FamilyName,
    CreatedAt,
    UpdatedAt,
    MergedInto,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Customers::Table)
                    .col(ColumnDef::new(Customers::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Customers::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Customers::GivenName).text().null())
                    .col(ColumnDef::new(Customers::FamilyName).text().null())
                    .col(ColumnDef::new(Customers::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Customers::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Customers::MergedInto).uuid().null())
                    .to_owned(),
            )
            .await?;
        // Keyset pagination of a tenant's customers walks (tenant, id); ids are UUIDv7, so this is creation order.
        manager
            .create_index(
                Index::create()
                    .name("ix_customers_tenant_id")
                    .table(Customers::Table)
                    .col(Customers::Tenant)
                    .col(Customers::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_customers_tenant_updated")
                    .table(Customers::Table)
                    .col(Customers::Tenant)
                    .col(Customers::UpdatedAt)
                    .col(Customers::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Customers::Table).to_owned()).await
    }
}
