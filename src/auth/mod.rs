//! Who is calling: bearer tokens become one typed `Caller`, decoded once at the edge.
mod caller;
pub(crate) mod keys;

pub use caller::{Caller, Purpose, PurposeKind, Scope, TenantId};
pub use keys::{Claims, KeyRing, TokenRequest};
