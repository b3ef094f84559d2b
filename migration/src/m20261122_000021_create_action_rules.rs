//! Next-best-action rules, per tenant, versioned: every change is a new row; the latest version of a key (`current`)
//! is the one evaluated.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ActionRules {
    Table,
    Id,
    Tenant,
    Key,
    Version,
    Current,
    Enabled,
    Purpose,
    Priority,
    Placement,
    Condition,
    Payload,
    CooldownSeconds,
    CapMax,
    CapDays,
    CreatedAt,
    CreatedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ActionRules::Table)
                    .col(ColumnDef::new(ActionRules::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ActionRules::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(ActionRules::Key).string_len(64).not_null())
                    .col(ColumnDef::new(ActionRules::Version).integer().not_null())
                    .col(ColumnDef::new(ActionRules::Current).boolean().not_null())
                    .col(ColumnDef::new(ActionRules::Enabled).boolean().not_null())
                    .col(ColumnDef::new(ActionRules::Purpose).string_len(32).not_null())
                    .col(ColumnDef::new(ActionRules::Priority).integer().not_null())
                    .col(ColumnDef::new(ActionRules::Placement).string_len(64).null())
                    .col(ColumnDef::new(ActionRules::Condition).json().null())
                    .col(ColumnDef::new(ActionRules::Payload).json().not_null())
                    .col(ColumnDef::new(ActionRules::CooldownSeconds).big_integer().null())
                    .col(ColumnDef::new(ActionRules::CapMax).integer().null())
                    .col(ColumnDef::new(ActionRules::CapDays).integer().null())
                    .col(ColumnDef::new(ActionRules::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ActionRules::CreatedBy).string_len(256).not_null())
                    .to_owned(),
            )
            .await?;
        // One row per (tenant, key, version): two concurrent changes of a key cannot both take the next version.
        manager
            .create_index(
                Index::create()
                    .name("ux_action_rules_version")
                    .table(ActionRules::Table)
                    .col(ActionRules::Tenant)
                    .col(ActionRules::Key)
                    .col(ActionRules::Version)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The evaluated rules: the current version of each key (at most 200 per tenant).
        manager
            .create_index(
                Index::create()
                    .name("ix_action_rules_current")
                    .table(ActionRules::Table)
                    .col(ActionRules::Tenant)
                    .col(ActionRules::Current)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ActionRules::Table).to_owned()).await
    }
}
