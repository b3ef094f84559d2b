//! Per-tenant journey-stage rules (one JSON document per tenant), and on each touchpoint whether its stage was given
//! by the sender (kept when rules change) or derived (re-derived when they do). NULL: stored before this was known.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum JourneyRules {
    Table,
    Tenant,
    Rules,
    Version,
    UpdatedAt,
    UpdatedBy,
}

#[derive(DeriveIden)]
enum Touchpoints {
    Table,
    StageExplicit,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JourneyRules::Table)
                    .col(ColumnDef::new(JourneyRules::Tenant).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(JourneyRules::Rules).json().not_null())
                    .col(ColumnDef::new(JourneyRules::Version).big_integer().not_null())
                    .col(ColumnDef::new(JourneyRules::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(JourneyRules::UpdatedBy).string_len(256).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Touchpoints::Table)
                    .add_column(ColumnDef::new(Touchpoints::StageExplicit).boolean().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Touchpoints::Table).drop_column(Touchpoints::StageExplicit).to_owned())
            .await?;
        manager.drop_table(Table::drop().table(JourneyRules::Table).to_owned()).await
    }
}
