//! Customers learn their privacy state: restriction of processing (GDPR art. 18) and a consent version.
use sea_orm_migration::prelude::*;

use crate::m20261122_000001_create_customers::Customers;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Added {
    Restricted,
    ConsentVersion,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Customers::Table)
                    .add_column(ColumnDef::new(Added::Restricted).boolean().not_null().default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Customers::Table)
                    .add_column(ColumnDef::new(Added::ConsentVersion).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Customers::Table).drop_column(Added::ConsentVersion).to_owned())
            .await?;
        manager.alter_table(Table::alter().table(Customers::Table).drop_column(Added::Restricted).to_owned()).await
    }
}
