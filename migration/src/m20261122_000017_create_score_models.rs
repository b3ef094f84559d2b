//! Per-tenant purchase models (BG/NBD for purchases, Gamma-Gamma for spend), fitted by a job and used to score
//! customers at read time.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ScoreModels {
    Table,
    Tenant,
    Version,
    Unit,
    Bgnbd,
    GammaGamma,
    BgnbdRefusal,
    GammaGammaRefusal,
    Customers,
    RepeatBuyers,
    FittedAt,
    FittedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ScoreModels::Table)
                    .col(ColumnDef::new(ScoreModels::Tenant).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(ScoreModels::Version).big_integer().not_null())
                    .col(ColumnDef::new(ScoreModels::Unit).string_len(16).not_null())
                    .col(ColumnDef::new(ScoreModels::Bgnbd).json().null())
                    .col(ColumnDef::new(ScoreModels::GammaGamma).json().null())
                    .col(ColumnDef::new(ScoreModels::BgnbdRefusal).text().null())
                    .col(ColumnDef::new(ScoreModels::GammaGammaRefusal).text().null())
                    .col(ColumnDef::new(ScoreModels::Customers).big_integer().not_null())
                    .col(ColumnDef::new(ScoreModels::RepeatBuyers).big_integer().not_null())
                    .col(ColumnDef::new(ScoreModels::FittedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ScoreModels::FittedBy).string_len(256).not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ScoreModels::Table).to_owned()).await
    }
}
