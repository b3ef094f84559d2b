//! Privacy records: the access log, suppressed identities (keyed hashes) and erasure receipts.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AccessLog {
    Table,
    Id,
    Tenant,
    CustomerId,
    Subject,
    Purpose,
    Categories,
    RequestId,
    At,
}

#[derive(DeriveIden)]
enum Suppressions {
    Table,
    Id,
    Tenant,
    Kind,
    Digest,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ErasureReceipts {
    Table,
    Id,
    Tenant,
    ErasedAt,
    ErasedBy,
    RequestId,
    Rows,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AccessLog::Table)
                    .col(ColumnDef::new(AccessLog::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AccessLog::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(AccessLog::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(AccessLog::Subject).string_len(256).not_null())
                    .col(ColumnDef::new(AccessLog::Purpose).string_len(64).not_null())
                    .col(ColumnDef::new(AccessLog::Categories).string_len(256).not_null())
                    .col(ColumnDef::new(AccessLog::RequestId).string_len(64).null())
                    .col(ColumnDef::new(AccessLog::At).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_access_log_customer")
                    .table(AccessLog::Table)
                    .col(AccessLog::Tenant)
                    .col(AccessLog::CustomerId)
                    .col(AccessLog::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Suppressions::Table)
                    .col(ColumnDef::new(Suppressions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Suppressions::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Suppressions::Kind).string_len(32).not_null())
                    // HMAC of the normalised identity: recognisable again, not reversible.
                    .col(ColumnDef::new(Suppressions::Digest).string_len(64).not_null())
                    .col(ColumnDef::new(Suppressions::CreatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_suppressions_digest")
                    .table(Suppressions::Table)
                    .col(Suppressions::Tenant)
                    .col(Suppressions::Digest)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ErasureReceipts::Table)
                    .col(ColumnDef::new(ErasureReceipts::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ErasureReceipts::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(ErasureReceipts::ErasedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ErasureReceipts::ErasedBy).string_len(256).not_null())
                    .col(ColumnDef::new(ErasureReceipts::RequestId).string_len(64).null())
                    .col(ColumnDef::new(ErasureReceipts::Rows).json().not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ErasureReceipts::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Suppressions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(AccessLog::Table).to_owned()).await
    }
}
