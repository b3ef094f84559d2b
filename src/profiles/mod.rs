//! Profiles and identity: customers, their normalised identities, and the reads frontends make.
pub mod cache;
pub mod customers;
pub mod identity;
pub mod merge;
pub mod records;
pub mod resolution;
pub mod rules;
pub mod traits;

pub use customers::{Customer, CustomerFilter, CustomerIdentity, UpsertCustomer, UpsertOutcome};
pub use identity::{Identity, IdentityKind};
