//! Derived state kept as touchpoints arrive (issue 10): which customers must be re-evaluated (`derived_dirty`, the
//! durable queue every write adds to in its own transaction), the values and memberships last computed per customer
//! (`derived_values`) and when time alone changes them next (`derived_subjects`), the transactional outbox of change
//! events (`derived_events`, commit-ordered positions), the webhooks that receive them, and an activation time per
//! definition version, so a new version is backfilled while the previous one keeps answering.
use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Definitions {
    Table,
    ActivatedAt,
    BackfilledAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum DerivedDirty {
    Table,
    Tenant,
    CustomerId,
    Cause,
    ConsentChanged,
    QueuedAt,
}

#[derive(DeriveIden)]
enum DerivedSubjects {
    Table,
    Tenant,
    CustomerId,
    NextChangeAt,
    EvaluatedAt,
}

#[derive(DeriveIden)]
enum DerivedValues {
    Table,
    Tenant,
    CustomerId,
    Key,
    Kind,
    Version,
    Value,
    Since,
}

#[derive(DeriveIden)]
enum DerivedEvents {
    Table,
    Position,
    Tenant,
    CustomerId,
    Kind,
    Key,
    Purpose,
    Cause,
    Payload,
    At,
}

#[derive(DeriveIden)]
enum Webhooks {
    Table,
    Id,
    Tenant,
    Url,
    Purpose,
    Kinds,
    Secret,
    CreatedAt,
    CreatedBy,
    Active,
    Cursor,
    Attempts,
    NextAttemptAt,
    LastError,
    LastStatus,
    Delivered,
    LeaseOwner,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Definitions::Table)
                    .add_column(ColumnDef::new(Definitions::ActivatedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Definitions::Table)
                    .add_column(ColumnDef::new(Definitions::BackfilledAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // Versions stored before: they were served at once (and are backfilled by the first backfill job).
        manager
            .exec_stmt(
                Query::update()
                    .table(Definitions::Table)
                    .value(Definitions::ActivatedAt, Expr::col(Definitions::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DerivedDirty::Table)
                    .col(ColumnDef::new(DerivedDirty::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(DerivedDirty::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(DerivedDirty::Cause).string_len(32).not_null())
                    .col(ColumnDef::new(DerivedDirty::ConsentChanged).boolean().not_null().default(false))
                    .col(ColumnDef::new(DerivedDirty::QueuedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(DerivedDirty::Tenant).col(DerivedDirty::CustomerId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_derived_dirty_queued")
                    .table(DerivedDirty::Table)
                    .col(DerivedDirty::QueuedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DerivedSubjects::Table)
                    .col(ColumnDef::new(DerivedSubjects::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(DerivedSubjects::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(DerivedSubjects::NextChangeAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(DerivedSubjects::EvaluatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(DerivedSubjects::Tenant).col(DerivedSubjects::CustomerId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_derived_subjects_due")
                    .table(DerivedSubjects::Table)
                    .col(DerivedSubjects::NextChangeAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(DerivedValues::Table)
                    .col(ColumnDef::new(DerivedValues::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(DerivedValues::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(DerivedValues::Key).string_len(64).not_null())
                    .col(ColumnDef::new(DerivedValues::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(DerivedValues::Version).integer().not_null())
                    .col(ColumnDef::new(DerivedValues::Value).json().not_null())
                    .col(ColumnDef::new(DerivedValues::Since).timestamp_with_time_zone().not_null())
                    .primary_key(
                        Index::create()
                            .col(DerivedValues::Tenant)
                            .col(DerivedValues::CustomerId)
                            .col(DerivedValues::Key),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_derived_values_key")
                    .table(DerivedValues::Table)
                    .col(DerivedValues::Tenant)
                    .col(DerivedValues::Key)
                    .col(DerivedValues::CustomerId)
                    .to_owned(),
            )
            .await?;
        // The outbox position: a 64-bit identity on PostgreSQL, SQLite's rowid alias there.
        let mut position = ColumnDef::new(DerivedEvents::Position);
        match manager.get_database_backend() {
            DbBackend::Sqlite => position.integer(),
            _ => position.big_integer(),
        };
        manager
            .create_table(
                Table::create()
                    .table(DerivedEvents::Table)
                    .col(position.not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(DerivedEvents::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(DerivedEvents::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(DerivedEvents::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(DerivedEvents::Key).string_len(64).null())
                    .col(ColumnDef::new(DerivedEvents::Purpose).string_len(32).null())
                    .col(ColumnDef::new(DerivedEvents::Cause).string_len(32).not_null())
                    .col(ColumnDef::new(DerivedEvents::Payload).json().null())
                    .col(ColumnDef::new(DerivedEvents::At).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_derived_events_tenant")
                    .table(DerivedEvents::Table)
                    .col(DerivedEvents::Tenant)
                    .col(DerivedEvents::Position)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_derived_events_customer")
                    .table(DerivedEvents::Table)
                    .col(DerivedEvents::Tenant)
                    .col(DerivedEvents::CustomerId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Webhooks::Table)
                    .col(ColumnDef::new(Webhooks::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Webhooks::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(Webhooks::Url).string_len(2048).not_null())
                    .col(ColumnDef::new(Webhooks::Purpose).string_len(32).not_null())
                    .col(ColumnDef::new(Webhooks::Kinds).json().not_null())
                    .col(ColumnDef::new(Webhooks::Secret).string_len(128).not_null())
                    .col(ColumnDef::new(Webhooks::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Webhooks::CreatedBy).string_len(256).not_null())
                    .col(ColumnDef::new(Webhooks::Active).boolean().not_null())
                    .col(ColumnDef::new(Webhooks::Cursor).big_integer().not_null())
                    .col(ColumnDef::new(Webhooks::Attempts).integer().not_null())
                    .col(ColumnDef::new(Webhooks::NextAttemptAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Webhooks::LastError).string_len(512).null())
                    .col(ColumnDef::new(Webhooks::LastStatus).integer().null())
                    .col(ColumnDef::new(Webhooks::Delivered).big_integer().not_null())
                    .col(ColumnDef::new(Webhooks::LeaseOwner).string_len(64).null())
                    .col(ColumnDef::new(Webhooks::LeaseUntil).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_webhooks_tenant")
                    .table(Webhooks::Table)
                    .col(Webhooks::Tenant)
                    .col(Webhooks::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Webhooks::Table.into_iden(),
            DerivedEvents::Table.into_iden(),
            DerivedValues::Table.into_iden(),
            DerivedSubjects::Table.into_iden(),
            DerivedDirty::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        manager
            .alter_table(Table::alter().table(Definitions::Table).drop_column(Definitions::BackfilledAt).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(Definitions::Table).drop_column(Definitions::ActivatedAt).to_owned())
            .await
    }
}
