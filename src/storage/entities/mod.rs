//! sea-orm entities: database rows, never served directly (GraphQL types are views in `graphql::views`).
pub mod consent_event;
pub mod customer;
pub mod identity;
pub mod touchpoint;
