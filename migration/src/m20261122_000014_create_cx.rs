//! CX metrics: one row per survey answer (whether it counts, and until when), the rollups the metrics are read
//! from (kept in the answer's own transaction), and each tenant's CX settings.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CxAnswers {
    Table,
    TouchpointId,
    Tenant,
    CustomerId,
    Metric,
    Score,
    AnsweredAt,
    Day,
    Channel,
    Stage,
    TouchpointType,
    Source,
    AboutTouchpointId,
    Counted,
    CountsUntil,
}

#[derive(DeriveIden)]
enum CxRollups {
    Table,
    Tenant,
    Metric,
    Day,
    Channel,
    Stage,
    TouchpointType,
    Source,
    Score,
    Answers,
}

#[derive(DeriveIden)]
enum CxSettings {
    Table,
    Tenant,
    Basis,
    MinAnswers,
    LowConfidenceMargin,
    UpdatedAt,
    UpdatedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CxAnswers::Table)
                    .col(ColumnDef::new(CxAnswers::TouchpointId).uuid().not_null().primary_key())
                    .col(ColumnDef::new(CxAnswers::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(CxAnswers::CustomerId).uuid().not_null())
                    .col(ColumnDef::new(CxAnswers::Metric).string_len(8).not_null())
                    .col(ColumnDef::new(CxAnswers::Score).small_integer().not_null())
                    .col(ColumnDef::new(CxAnswers::AnsweredAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(CxAnswers::Day).date().not_null())
                    .col(ColumnDef::new(CxAnswers::Channel).string_len(32).not_null())
                    .col(ColumnDef::new(CxAnswers::Stage).string_len(32).not_null())
                    .col(ColumnDef::new(CxAnswers::TouchpointType).string_len(32).not_null())
                    .col(ColumnDef::new(CxAnswers::Source).string_len(64).not_null())
                    .col(ColumnDef::new(CxAnswers::AboutTouchpointId).uuid().null())
                    .col(ColumnDef::new(CxAnswers::Counted).boolean().not_null())
                    .col(ColumnDef::new(CxAnswers::CountsUntil).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // A customer's answers, latest first (per-customer feedback, recounts, erasure).
        manager
            .create_index(
                Index::create()
                    .name("ix_cx_answers_customer")
                    .table(CxAnswers::Table)
                    .col(CxAnswers::Tenant)
                    .col(CxAnswers::CustomerId)
                    .col(CxAnswers::Metric)
                    .col(CxAnswers::AnsweredAt)
                    .to_owned(),
            )
            .await?;
        // A tenant's answers of one metric in a window (retention and touchpoint effect).
        manager
            .create_index(
                Index::create()
                    .name("ix_cx_answers_metric")
                    .table(CxAnswers::Table)
                    .col(CxAnswers::Tenant)
                    .col(CxAnswers::Metric)
                    .col(CxAnswers::AnsweredAt)
                    .to_owned(),
            )
            .await?;
        // Counted answers whose consent expires: subtracted on read once expired, recounted by the sweeper.
        manager
            .create_index(
                Index::create()
                    .name("ix_cx_answers_expiry")
                    .table(CxAnswers::Table)
                    .col(CxAnswers::Tenant)
                    .col(CxAnswers::CountsUntil)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CxRollups::Table)
                    .col(ColumnDef::new(CxRollups::Tenant).string_len(64).not_null())
                    .col(ColumnDef::new(CxRollups::Metric).string_len(8).not_null())
                    .col(ColumnDef::new(CxRollups::Day).date().not_null())
                    .col(ColumnDef::new(CxRollups::Channel).string_len(32).not_null())
                    .col(ColumnDef::new(CxRollups::Stage).string_len(32).not_null())
                    .col(ColumnDef::new(CxRollups::TouchpointType).string_len(32).not_null())
                    .col(ColumnDef::new(CxRollups::Source).string_len(64).not_null())
                    .col(ColumnDef::new(CxRollups::Score).small_integer().not_null())
                    .col(ColumnDef::new(CxRollups::Answers).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(CxRollups::Tenant)
                            .col(CxRollups::Metric)
                            .col(CxRollups::Day)
                            .col(CxRollups::Channel)
                            .col(CxRollups::Stage)
                            .col(CxRollups::TouchpointType)
                            .col(CxRollups::Source)
                            .col(CxRollups::Score),
                    )
                    .to_owned(),
            )
            .await?;
        // Survey touchpoints by id (a few per cent of all): what the start-up backfill of answers walks, so a check
        // that finds nothing missing reads this small index, not the whole touchpoint table.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX ix_touchpoints_feedback ON touchpoints (id) WHERE feedback_metric IS NOT NULL",
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(CxSettings::Table)
                    .col(ColumnDef::new(CxSettings::Tenant).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(CxSettings::Basis).string_len(32).not_null())
                    .col(ColumnDef::new(CxSettings::MinAnswers).integer().not_null())
                    .col(ColumnDef::new(CxSettings::LowConfidenceMargin).double().not_null())
                    .col(ColumnDef::new(CxSettings::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(CxSettings::UpdatedBy).string_len(256).not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CxSettings::Table).to_owned()).await?;
        manager.get_connection().execute_unprepared("DROP INDEX ix_touchpoints_feedback").await?;
        manager.drop_table(Table::drop().table(CxRollups::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(CxAnswers::Table).to_owned()).await
    }
}
