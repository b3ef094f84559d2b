//! Consent: the append-only ledger, the current state derived from it, and the one policy decision point.
pub mod ledger;
pub mod policy;
pub mod purpose;

pub use ledger::{ConsentEvent, ConsentState, ConsentStatus, RecordConsent};
pub use policy::{ConsentSession, DataCategory, Permit, Permitted, PrivacyState};
pub use purpose::ConsentPurpose;
