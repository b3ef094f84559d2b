//! Schema migrations for Kontakt, written once for PostgreSQL and SQLite.
pub use sea_orm_migration::prelude::*;

mod m20261122_000001_create_customers;
mod m20261122_000002_create_identities;
mod m20261122_000003_create_touchpoints;
mod m20261122_000004_create_consent_events;
mod m20261122_000005_add_customer_privacy_state;
mod m20261122_000006_create_privacy_records;
mod m20261122_000007_create_resolution_rules;
mod m20261122_000008_create_merges;
mod m20261122_000009_create_source_records;
mod m20261122_000010_add_touchpoint_identity;
mod m20261122_000011_add_touchpoint_commit_position;
mod m20261122_000012_create_jobs;
mod m20261122_000013_backfill_legacy_names;
mod m20261122_000014_create_cx;
mod m20261122_000015_create_feedback_cases;
mod m20261122_000016_create_journey_rules;
mod m20261122_000017_create_score_models;
mod m20261122_000018_create_external_scores;
mod m20261122_000019_create_definitions;
mod m20261122_000020_create_derived_state;
mod m20261122_000021_create_action_rules;

pub use m20261122_000013_backfill_legacy_names::{LEGACY_SOURCE, backfill_legacy_names};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_create_customers::Migration),
            Box::new(m20261122_000002_create_identities::Migration),
            Box::new(m20261122_000003_create_touchpoints::Migration),
            Box::new(m20261122_000004_create_consent_events::Migration),
            Box::new(m20261122_000005_add_customer_privacy_state::Migration),
            Box::new(m20261122_000006_create_privacy_records::Migration),
            Box::new(m20261122_000007_create_resolution_rules::Migration),
            Box::new(m20261122_000008_create_merges::Migration),
            Box::new(m20261122_000009_create_source_records::Migration),
            Box::new(m20261122_000010_add_touchpoint_identity::Migration),
            Box::new(m20261122_000011_add_touchpoint_commit_position::Migration),
            Box::new(m20261122_000012_create_jobs::Migration),
            Box::new(m20261122_000013_backfill_legacy_names::Migration),
            Box::new(m20261122_000014_create_cx::Migration),
            Box::new(m20261122_000015_create_feedback_cases::Migration),
            Box::new(m20261122_000016_create_journey_rules::Migration),
            Box::new(m20261122_000017_create_score_models::Migration),
            Box::new(m20261122_000018_create_external_scores::Migration),
            Box::new(m20261122_000019_create_definitions::Migration),
            Box::new(m20261122_000020_create_derived_state::Migration),
            Box::new(m20261122_000021_create_action_rules::Migration),
        ]
    }
}
