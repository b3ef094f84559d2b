//! Customer experience: survey answers (NPS, CSAT, CES) counted into rollups in the answer's own transaction, the
//! metrics read from them with honest uncertainty, the link to purchases, and the closed loop for poor answers.
//!
//! Which answers count is one rule, `consent::policy::cx_counting`, applied whenever it could change its mind: when
//! an answer is recorded, and whenever a customer's privacy state changes (consent, restriction, merge, unmerge:
//! `recount` is called from `consent::ledger::bump_consent_version`, which every one of those writes goes through).
//! Erasure removes a person's answers from the rollups in the erasure's transaction.
pub mod answers;
pub mod cases;
pub mod feedback;
pub mod journeys;
pub mod links;
pub mod metrics;
pub mod settings;
pub mod stats;

pub use settings::CxSettings;
