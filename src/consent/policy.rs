//! The policy decision point: the one place that decides whether a caller may receive a customer's
//! personalization data (DOMAIN.md privacy rules 1–3 and 9). Every entry point calls it.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, JoinType, QueryFilter, QueryOrder, QuerySelect, RelationDef,
    sea_query::{Expr, ExprTrait, IntoCondition},
};
use uuid::Uuid;

use super::ledger::{self, ConsentState};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{consent_event, customer},
};

/// What kind of data a read would serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCategory {
    /// The touchpoint history. Personalization data when read for any purpose that needs consent.
    BehaviouralHistory,
    /// Anything derived from behaviour (journey stage, segments, scores): personalization data for every purpose.
    DerivedInsights,
}

/// Purposes that serve the customer operationally and do not need a consent to read the raw history.
const OPERATIONAL_PURPOSES: [&str; 1] = ["support"];
/// The purpose of privacy officers: sees everything, restricted customers included (needs `privacy:admin`).
pub const PRIVACY_ADMIN_PURPOSE: &str = "privacy_admin";

/// Proof that the policy allowed one caller to read one customer's data of one category. Only `decide` makes one,
/// so personalization data cannot be served without a decision.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    customer_id: Uuid,
    category: DataCategory,
}

impl Permit {
    pub fn customer_id(&self) -> Uuid {
        self.customer_id
    }

    pub fn category(&self) -> DataCategory {
        self.category
    }
}

/// What the policy needs to know about one customer.
#[derive(Debug, Clone, Default)]
pub struct PrivacyState {
    pub restricted: bool,
    pub consents: Vec<ConsentState>,
    /// `customers.consent_version`: moves with every consent or restriction change (for consent-safe caches).
    pub consent_version: i64,
}

/// Splits a caller purpose such as `marketing:email` into the consent purpose and channel.
fn consent_key(purpose: &str) -> (&str, Option<&str>) {
    match purpose.split_once(':') {
        Some((purpose, channel)) => (purpose, Some(channel)),
        None => (purpose, None),
    }
}

/// Decides for one customer whose privacy state is known. Pure: the table-driven tests call the API, which lands here.
pub fn decide(
    caller: &Caller,
    customer_id: Uuid,
    state: &PrivacyState,
    category: DataCategory,
    now: DateTime<Utc>,
) -> ApiResult<Permit> {
    let purpose = caller.purpose().as_str();
    let permit = Permit { customer_id, category };
    if purpose == PRIVACY_ADMIN_PURPOSE {
        caller.require(Scope::PrivacyAdmin)?;
        return Ok(permit);
    }
    let refuse = |reason: &'static str, message: String| {
        Err(ApiError::ConsentRequired { purpose: purpose.to_owned(), reason, message })
    };
    if state.restricted {
        return refuse("PROCESSING_RESTRICTED", "processing of this customer's data is restricted".into());
    }
    if category == DataCategory::BehaviouralHistory && OPERATIONAL_PURPOSES.contains(&purpose) {
        return Ok(permit);
    }
    let (consent_purpose, channel) = consent_key(purpose);
    // A channel-specific decision wins over the purpose-wide one.
    let applicable = channel
        .and_then(|ch| state.consents.iter().find(|c| c.purpose == consent_purpose && c.channel.as_deref() == Some(ch)))
        .or_else(|| state.consents.iter().find(|c| c.purpose == consent_purpose && c.channel.is_none()));
    match applicable {
        None => refuse("NOT_GIVEN", format!("the customer has not consented to `{purpose}`")),
        Some(c) if c.is_effective_at(now) => Ok(permit),
        Some(c) if c.status == super::ConsentStatus::Granted => {
            refuse("EXPIRED", format!("the customer's consent to `{purpose}` has expired"))
        }
        Some(c) if c.status == super::ConsentStatus::Withdrawn => {
            refuse("WITHDRAWN", format!("the customer has withdrawn consent to `{purpose}`"))
        }
        Some(_) => refuse("DENIED", format!("the customer has denied consent to `{purpose}`")),
    }
}

/// Profile data (who the customer is) is not personalization data, but a restriction of processing withholds it
/// too: a restricted customer is served to privacy administration only.
pub fn check_profile_visible(caller: &Caller, restricted: bool) -> ApiResult<()> {
    if restricted && caller.purpose().as_str() != PRIVACY_ADMIN_PURPOSE {
        return Err(ApiError::ConsentRequired {
            purpose: caller.purpose().as_str().to_owned(),
            reason: "PROCESSING_RESTRICTED",
            message: "processing of this customer's data is restricted".into(),
        });
    }
    if restricted {
        caller.require(Scope::PrivacyAdmin)?;
    }
    Ok(())
}

/// Loads the current privacy state of customers (two queries, whatever their number).
pub(crate) async fn load_states(
    conn: &impl ConnectionTrait,
    caller: &Caller,
    customer_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, PrivacyState>> {
    let restricted: Vec<(Uuid, bool, i64)> = customer::of_tenant(caller.tenant())
        .filter(customer::Column::Id.is_in(customer_ids.iter().copied()))
        .select_only()
        .column(customer::Column::Id)
        .column(customer::Column::Restricted)
        .column(customer::Column::ConsentVersion)
        .into_tuple()
        .all(conn)
        .await?;
    let mut consents = ledger::states_at(conn, caller.tenant(), customer_ids, None).await?;
    Ok(restricted
        .into_iter()
        .map(|(id, restricted, consent_version)| {
            (id, PrivacyState { restricted, consents: consents.remove(&id).unwrap_or_default(), consent_version })
        })
        .collect())
}

/// A customer row and its privacy state read together, in one statement (the row left-joined with its consent
/// ledger): what a single-customer read decides with. Always from the database, never from a cache.
pub(crate) async fn load_customer(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Option<(customer::Model, PrivacyState)>, DbErr> {
    let ledger: RelationDef = consent_event::Entity::belongs_to(customer::Entity)
        .from(consent_event::Column::CustomerId)
        .to(customer::Column::Id)
        .on_condition(|ledger, customer| {
            Expr::col((ledger, consent_event::Column::Tenant))
                .equals((customer, customer::Column::Tenant))
                .into_condition()
        })
        .into();
    let rows = customer::of_tenant(tenant)
        .filter(customer::Column::Id.eq(id))
        .join_rev(JoinType::LeftJoin, ledger)
        .select_also(consent_event::Entity)
        .order_by_asc(consent_event::Column::CapturedAt)
        .order_by_asc(consent_event::Column::Id)
        .all(conn)
        .await?;
    let mut rows = rows.into_iter();
    let Some((row, first)) = rows.next() else { return Ok(None) };
    let events = first.into_iter().chain(rows.filter_map(|(_, event)| event));
    let consents = ledger::latest_states(events).remove(&row.id).unwrap_or_default();
    let state = PrivacyState { restricted: row.restricted, consents, consent_version: row.consent_version };
    Ok(Some((row, state)))
}

/// Decides for one customer, reading its current state from the database (never from a cache, so a
/// withdrawal is refused on the very next read on every instance).
pub async fn authorize(
    caller: &Caller,
    svc: &Services,
    customer_id: Uuid,
    category: DataCategory,
) -> ApiResult<Permit> {
    let mut states = load_states(svc.db.conn(), caller, &[customer_id]).await?;
    let state = states.remove(&customer_id).ok_or_else(|| ApiError::not_found(format!("customer {customer_id}")))?;
    decide(caller, customer_id, &state, category, Utc::now())
}

/// Decides for many customers at once (two queries): one decision per customer of the caller's tenant; ids of
/// other tenants or unknown ids are absent.
pub async fn decide_many(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
    category: DataCategory,
) -> ApiResult<HashMap<Uuid, ApiResult<Permit>>> {
    let unique: HashSet<Uuid> = customer_ids.iter().copied().collect();
    let ids: Vec<Uuid> = unique.into_iter().collect();
    let states = load_states(svc.db.conn(), caller, &ids).await?;
    let now = Utc::now();
    let mut decisions = HashMap::with_capacity(states.len());
    for (id, state) in &states {
        match decide(caller, *id, state, category, now) {
            Err(err @ ApiError::ConsentRequired { .. }) => {
                decisions.insert(*id, Err(err));
            }
            Err(other) => return Err(other),
            Ok(permit) => {
                decisions.insert(*id, Ok(permit));
            }
        }
    }
    Ok(decisions)
}

/// Decides for many customers at once: the permitted ids, and how many were left out.
pub async fn authorize_many(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
    category: DataCategory,
) -> ApiResult<(HashSet<Uuid>, usize)> {
    let decisions = decide_many(caller, svc, customer_ids, category).await?;
    let permitted: HashSet<Uuid> = decisions.iter().filter(|(_, d)| d.is_ok()).map(|(id, _)| *id).collect();
    let excluded = decisions.len() - permitted.len();
    Ok((permitted, excluded))
}

/// How restrictive a decision is: denied and withdrawn beat an expired grant, which beats a live grant.
fn restrictiveness(state: &ConsentState, now: DateTime<Utc>) -> u8 {
    match state.status {
        super::ConsentStatus::Denied | super::ConsentStatus::Withdrawn => 2,
        super::ConsentStatus::Granted if !state.is_effective_at(now) => 1,
        super::ConsentStatus::Granted => 0,
    }
}

/// The consents of customers being merged: per (purpose, channel) the most restrictive decision wins, and a
/// decision held by only one side is kept as it is (the other side never granted it). Returns the merged states
/// and the (purpose, channel) pairs on which the customers disagreed, for the merge's evidence.
pub fn most_restrictive(
    sides: &[Vec<ConsentState>],
    now: DateTime<Utc>,
) -> (Vec<ConsentState>, Vec<(String, Option<String>)>) {
    let mut merged: HashMap<(String, Option<String>), ConsentState> = HashMap::new();
    let mut conflicts = Vec::new();
    for state in sides.iter().flatten() {
        let key = (state.purpose.clone(), state.channel.clone());
        match merged.get(&key) {
            None => {
                merged.insert(key, state.clone());
            }
            Some(current) => {
                if current.status != state.status && !conflicts.contains(&key) {
                    conflicts.push(key.clone());
                }
                let stricter = restrictiveness(state, now) > restrictiveness(current, now)
                    || (restrictiveness(state, now) == restrictiveness(current, now)
                        && state.captured_at > current.captured_at);
                if stricter {
                    merged.insert(key, state.clone());
                }
            }
        }
    }
    let mut states: Vec<ConsentState> = merged.into_values().collect();
    states.sort_by(|a, b| (&a.purpose, &a.channel).cmp(&(&b.purpose, &b.channel)));
    (states, conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::ConsentStatus;

    fn state(purpose: &str, status: ConsentStatus, days_ago: i64) -> ConsentState {
        let at = Utc::now() - chrono::Duration::days(days_ago);
        ConsentState {
            id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            purpose: purpose.into(),
            channel: None,
            status,
            captured_at: at,
            recorded_at: at,
            source: "web".into(),
            policy_version: None,
            legal_basis: None,
            expires_at: None,
            evidence: None,
        }
    }

    #[test]
    fn merging_keeps_the_most_restrictive_decision_and_reports_disagreements() {
        let a =
            vec![state("personalization", ConsentStatus::Granted, 1), state("analytics", ConsentStatus::Granted, 3)];
        let b =
            vec![state("personalization", ConsentStatus::Withdrawn, 30), state("marketing", ConsentStatus::Granted, 2)];
        let (merged, conflicts) = most_restrictive(&[a, b], Utc::now());
        let by_purpose: Vec<(&str, ConsentStatus)> = merged.iter().map(|s| (s.purpose.as_str(), s.status)).collect();
        assert_eq!(
            by_purpose,
            vec![
                ("analytics", ConsentStatus::Granted),
                ("marketing", ConsentStatus::Granted),
                ("personalization", ConsentStatus::Withdrawn),
            ]
        );
        assert_eq!(conflicts, vec![("personalization".to_owned(), None)]);
    }
}
