//! sea-orm entities: database rows, never served directly (GraphQL types are views in `graphql::views`).
pub mod access_log;
pub mod consent_event;
pub mod customer;
pub mod erasure_receipt;
pub mod identity;
pub mod job;
pub mod merge;
pub mod resolution_conflict;
pub mod resolution_rules;
pub mod source_record;
pub mod suppression;
pub mod touchpoint;
pub mod trait_rules;
pub mod trait_value;
