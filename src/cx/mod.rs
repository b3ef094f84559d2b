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

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};

use crate::error::{ApiError, ApiResult};

/// Checks a window of whole UTC days `from..=to` of at most `max_days` days.
pub(crate) fn check_window(from: NaiveDate, to: NaiveDate, max_days: i64) -> ApiResult<()> {
    if from > to {
        return Err(ApiError::validation("window", "`from` is after `to`"));
    }
    if (to - from).num_days() >= max_days {
        return Err(ApiError::validation("window", format!("at most {max_days} days")));
    }
    Ok(())
}

/// The instants a window of UTC days spans: the start of `from`, and the end of `to` (exclusive).
pub(crate) fn span(from: NaiveDate, to: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    (from.and_time(NaiveTime::MIN).and_utc(), to.and_time(NaiveTime::MIN).and_utc() + Duration::days(1))
}
