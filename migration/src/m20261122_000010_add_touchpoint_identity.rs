//! Touchpoints remember the identity they were attached through, so an unmerge can send later ones where their
//! identity points. Nullable: touchpoints named by customer id, and older rows, have none.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Touchpoints {
    Table,
    IdentityId,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Touchpoints::Table)
                    .add_column(ColumnDef::new(Touchpoints::IdentityId).uuid().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Touchpoints::Table).drop_column(Touchpoints::IdentityId).to_owned())
            .await
    }
}
