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
    auth::{Caller, PurposeKind, Scope, TenantId},
    consent::ConsentPurpose,
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{consent_event, customer},
};

/// What kind of data a read would serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataCategory {
    /// The touchpoint history. Personalization data when read for any purpose that needs consent.
    BehaviouralHistory,
    /// Anything derived from behaviour (journey stage, segments, scores): personalization data for every purpose.
    DerivedInsights,
}

/// Proof that the policy allowed one caller to read one customer's data of one category. Only `decide` makes one,
/// so personalization data cannot be served without a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

    /// Wraps data read under this permit: the only way to make a `Permitted`.
    pub fn serve<T>(self, value: T) -> Permitted<T> {
        Permitted { permit: self, value }
    }
}

/// Personalization data the policy allowed this caller to receive. Made only from a [`Permit`] (which only
/// [`decide`] makes), so holding one is proof of a decision; the views of gated data accept nothing else, and a
/// resolver that serves gated data without a decision does not compile.
#[derive(Debug, Clone)]
pub struct Permitted<T> {
    permit: Permit,
    value: T,
}

impl<T> Permitted<T> {
    pub fn permit(&self) -> Permit {
        self.permit
    }

    pub fn value(&self) -> &T {
        &self.value
    }

    pub fn into_value(self) -> T {
        self.value
    }

    /// Derived data is served under the permit of what it was derived from.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Permitted<U> {
        Permitted { permit: self.permit, value: f(self.value) }
    }
}

impl<T> Permitted<Vec<T>> {
    /// Each item of a permitted list, permitted under the same decision.
    pub fn into_items(self) -> impl Iterator<Item = Permitted<T>> {
        let permit = self.permit;
        self.value.into_iter().map(move |value| Permitted { permit, value })
    }
}

/// One operation's consent read session: the privacy states it has read — with the customer row for a profile
/// read, a whole page at once for lists — from which every decision of the operation is made. A fresh session
/// starts with every operation (the execution path puts one in), so nothing outlives the operation and a
/// withdrawal applies to the very next one (DOMAIN.md rule 2); within an operation every field decides with the
/// same state, and a list decides for all its customers with two queries, read only when a field first needs one.
#[derive(Clone, Default)]
pub struct ConsentSession {
    inner: std::sync::Arc<tokio::sync::Mutex<SessionStates>>,
}

#[derive(Default)]
struct SessionStates {
    known: HashMap<Uuid, std::sync::Arc<PrivacyState>>,
    /// Customers a list served: the first decision about any of them reads all their states at once.
    expected: HashSet<Uuid>,
}

impl ConsentSession {
    pub fn new() -> Self {
        ConsentSession::default()
    }

    /// Keeps a state this operation read with the customer's row.
    pub(crate) async fn remember(&self, id: Uuid, state: PrivacyState) {
        self.inner.lock().await.known.insert(id, std::sync::Arc::new(state));
    }

    /// The customers of a list this operation served: decisions about them read their states together.
    pub(crate) async fn expect(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.inner.lock().await.expected.extend(ids);
    }

    /// The state of one customer as this operation knows it; read now (with every expected customer's) if not yet.
    pub async fn state(&self, caller: &Caller, svc: &Services, id: Uuid) -> ApiResult<std::sync::Arc<PrivacyState>> {
        let mut inner = self.inner.lock().await;
        if let Some(state) = inner.known.get(&id) {
            return Ok(state.clone());
        }
        let mut ids: Vec<Uuid> = std::mem::take(&mut inner.expected).into_iter().collect();
        if !ids.contains(&id) {
            ids.push(id);
        }
        ids.retain(|i| !inner.known.contains_key(i));
        let loaded = load_states(svc.db.conn(), caller, &ids).await?;
        inner.known.extend(loaded.into_iter().map(|(i, state)| (i, std::sync::Arc::new(state))));
        inner.known.get(&id).cloned().ok_or_else(|| ApiError::not_found(format!("customer {id}")))
    }

    /// The policy's decision for one customer, made with this operation's state.
    pub async fn decide(&self, caller: &Caller, svc: &Services, id: Uuid, category: DataCategory) -> ApiResult<Permit> {
        let state = self.state(caller, svc, id).await?;
        decide(caller, id, &state, category, Utc::now())
    }

    /// The decision for derived data about one customer (`decide_derived`), made with this operation's state.
    pub async fn decide_derived(&self, caller: &Caller, svc: &Services, id: Uuid) -> ApiResult<Permit> {
        let state = self.state(caller, svc, id).await?;
        decide_derived(caller, id, &state, Utc::now())
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

/// The decision in force for a purpose and, optionally, one channel: of the decisions that apply (the purpose-wide
/// one, which covers every channel, and the one for that channel), the one captured later; on a tie the more
/// restrictive. Without a channel only the purpose-wide decision applies. `consents` holds the latest decision per
/// (purpose, channel), as the ledger derives them.
pub fn in_force<'a>(
    consents: &'a [ConsentState],
    purpose: ConsentPurpose,
    channel: Option<&str>,
    now: DateTime<Utc>,
) -> Option<&'a ConsentState> {
    consents
        .iter()
        .filter(|c| {
            c.purpose == purpose && (c.channel.is_none() || (channel.is_some() && c.channel.as_deref() == channel))
        })
        .max_by(|a, b| {
            a.captured_at.cmp(&b.captured_at).then_with(|| restrictiveness(a, now).cmp(&restrictiveness(b, now)))
        })
}

/// Decides for one customer whose privacy state is known. Pure: the table-driven tests call the API, which lands here.
pub fn decide(
    caller: &Caller,
    customer_id: Uuid,
    state: &PrivacyState,
    category: DataCategory,
    now: DateTime<Utc>,
) -> ApiResult<Permit> {
    let kind = caller.purpose().kind();
    let purpose = caller.purpose().as_str();
    let permit = Permit { customer_id, category };
    if kind == PurposeKind::PrivacyAdmin {
        caller.require(Scope::PrivacyAdmin)?;
        return Ok(permit);
    }
    let refuse = |reason: &'static str, message: String| {
        Err(ApiError::ConsentRequired { purpose: purpose.to_owned(), reason, message })
    };
    if state.restricted {
        return refuse("PROCESSING_RESTRICTED", "processing of this customer's data is restricted".into());
    }
    // Support serves the customer operationally: it reads the raw history without a consent.
    if category == DataCategory::BehaviouralHistory && kind == PurposeKind::Support {
        return Ok(permit);
    }
    // A purpose consent does not govern (support for derived data, ingestion) has no consent to find.
    let decision = caller.purpose().consent().and_then(|(p, channel)| in_force(&state.consents, p, channel, now));
    match refusal(decision, now) {
        None => Ok(permit),
        Some(reason @ "NOT_GIVEN") => refuse(reason, format!("the customer has not consented to `{purpose}`")),
        Some(reason @ "EXPIRED") => refuse(reason, format!("the customer's consent to `{purpose}` has expired")),
        Some(reason @ "WITHDRAWN") => refuse(reason, format!("the customer has withdrawn consent to `{purpose}`")),
        Some(reason) => refuse(reason, format!("the customer has denied consent to `{purpose}`")),
    }
}

/// Why the decision in force (from `in_force`) does not allow the use, or `None` when it does: `NOT_GIVEN` (no
/// decision), `EXPIRED`, `WITHDRAWN`, `DENIED`.
pub fn refusal(decision: Option<&ConsentState>, now: DateTime<Utc>) -> Option<&'static str> {
    match decision {
        None => Some("NOT_GIVEN"),
        Some(c) if c.is_effective_at(now) => None,
        Some(c) if c.status == super::ConsentStatus::Granted => Some("EXPIRED"),
        Some(c) if c.status == super::ConsentStatus::Withdrawn => Some("WITHDRAWN"),
        Some(_) => Some("DENIED"),
    }
}

/// The decision for derived data about a customer (scores, segments, computed traits, affinities, channels): the
/// caller's permit for derived data, and then the customer may be profiled at all (`profiling_allowed`).
pub fn decide_derived(
    caller: &Caller,
    customer_id: Uuid,
    state: &PrivacyState,
    now: DateTime<Utc>,
) -> ApiResult<Permit> {
    let permit = decide(caller, customer_id, state, DataCategory::DerivedInsights, now)?;
    if !profiling_allowed(state, now) {
        return Err(not_profiled(caller, state));
    }
    Ok(permit)
}

/// On what ground a tenant counts its customers' survey answers in CX metrics (the tenant declares it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CxBasis {
    /// Only customers whose `analytics` consent is in force and granted count (the default).
    AnalyticsConsent,
    /// The tenant declares a legitimate interest (GDPR art. 6(1)(f)) in measuring its service: every customer counts
    /// unless they denied or withdrew `analytics` (their objection, art. 21).
    LegitimateInterest,
}

/// Whether a customer's survey answers count in the tenant's CX metrics now: `None` when they do not (processing
/// restricted — DOMAIN rule 3 —, or no ground under `basis`), else `Some(until)`, the moment they stop counting
/// (a grant's expiry) or `None` for as long as nothing changes. The one rule for every CX aggregate.
pub fn cx_counting(state: &PrivacyState, basis: CxBasis, now: DateTime<Utc>) -> Option<Option<DateTime<Utc>>> {
    if state.restricted {
        return None;
    }
    let decision = in_force(&state.consents, ConsentPurpose::Analytics, None, now);
    match (basis, decision) {
        (_, Some(c)) if c.is_effective_at(now) => Some(c.expires_at),
        (CxBasis::LegitimateInterest, Some(c)) if c.status == super::ConsentStatus::Granted => Some(None),
        (CxBasis::LegitimateInterest, None) => Some(None),
        _ => None,
    }
}

/// Whether a customer may be profiled at all (scores, segments, computed traits): not while processing is restricted
/// (DOMAIN rule 3), and not when the customer denied or withdrew `profiling` (never asked: profiled, and what is
/// derived is still served only under a permit for the caller's purpose). The one rule for every derived value.
pub fn profiling_allowed(state: &PrivacyState, now: DateTime<Utc>) -> bool {
    if state.restricted {
        return false;
    }
    match in_force(&state.consents, ConsentPurpose::Profiling, None, now) {
        None => true,
        Some(c) => c.status == super::ConsentStatus::Granted,
    }
}

/// A refusal to serve derived data about a customer who may not be profiled.
pub fn not_profiled(caller: &Caller, state: &PrivacyState) -> ApiError {
    let (reason, message) = if state.restricted {
        ("PROCESSING_RESTRICTED", "processing of this customer's data is restricted".to_owned())
    } else {
        ("PROFILING_REFUSED", "the customer has denied or withdrawn consent to `profiling`".to_owned())
    };
    ApiError::ConsentRequired { purpose: caller.purpose().as_str().to_owned(), reason, message }
}

/// Profile data (who the customer is) is not personalization data, but a restriction of processing withholds it
/// too: a restricted customer is served to privacy administration only.
pub fn check_profile_visible(caller: &Caller, restricted: bool) -> ApiResult<()> {
    if restricted && caller.purpose().kind() != PurposeKind::PrivacyAdmin {
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
    Ok(states_of(conn, caller.tenant(), customer_ids).await?)
}

/// The current privacy states of customers of a tenant (two queries), for work done inside a write's transaction.
pub(crate) async fn states_of(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    customer_ids: &[Uuid],
) -> Result<HashMap<Uuid, PrivacyState>, DbErr> {
    let restricted: Vec<(Uuid, bool, i64)> = customer::of_tenant(tenant)
        .filter(customer::Column::Id.is_in(customer_ids.iter().copied()))
        .select_only()
        .column(customer::Column::Id)
        .column(customer::Column::Restricted)
        .column(customer::Column::ConsentVersion)
        .into_tuple()
        .all(conn)
        .await?;
    let mut consents = ledger::states_at(conn, tenant, customer_ids, None).await?;
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

/// How restrictive a decision is: denied and withdrawn beat an expired grant, which beats a live grant.
fn restrictiveness(state: &ConsentState, now: DateTime<Utc>) -> u8 {
    match state.status {
        super::ConsentStatus::Denied | super::ConsentStatus::Withdrawn => 2,
        super::ConsentStatus::Granted if !state.is_effective_at(now) => 1,
        super::ConsentStatus::Granted => 0,
    }
}

/// The consents of customers being merged: for each (purpose, channel) either side decided on, the most
/// restrictive of the decisions each side had in force for it (by `in_force`, so a side's later purpose-wide
/// withdrawal counts for its channels too; on equal restrictiveness the later one). A decision held by only one
/// side is kept as it is (the other side never decided). Returns the merged decisions, each under its (purpose,
/// channel), and the pairs on which the customers disagreed, for the merge's evidence.
pub fn most_restrictive(
    sides: &[Vec<ConsentState>],
    now: DateTime<Utc>,
) -> (Vec<ConsentState>, Vec<(ConsentPurpose, Option<String>)>) {
    let mut keys: Vec<(ConsentPurpose, Option<String>)> =
        sides.iter().flatten().map(|s| (s.purpose, s.channel.clone())).collect();
    keys.sort();
    keys.dedup();
    let mut states = Vec::with_capacity(keys.len());
    let mut conflicts = Vec::new();
    for (purpose, channel) in keys {
        let held: Vec<&ConsentState> =
            sides.iter().filter_map(|side| in_force(side, purpose, channel.as_deref(), now)).collect();
        if held.iter().any(|h| h.status != held[0].status) {
            conflicts.push((purpose, channel.clone()));
        }
        let Some(winner) = held.into_iter().max_by(|a, b| {
            restrictiveness(a, now).cmp(&restrictiveness(b, now)).then_with(|| a.captured_at.cmp(&b.captured_at))
        }) else {
            continue;
        };
        states.push(ConsentState { purpose, channel, ..winner.clone() });
    }
    (states, conflicts)
}

/// The decisions a merge appends to the survivor's ledger so that, after the merged customer's ledger has moved
/// over (`after`: the latest decision per (purpose, channel) of both ledgers together), `in_force` answers with
/// `resolved` (from `most_restrictive`) for every purpose and channel. A decision not already in force is appended
/// captured `now`, a channel decision a microsecond later than the purpose-wide ones, and a channel decision no
/// later than its purpose-wide one is appended again, so that the purpose-wide decision does not outrank it.
pub fn merge_appends(resolved: &[ConsentState], after: &[ConsentState], now: DateTime<Utc>) -> Vec<ConsentState> {
    let channel_time = now + chrono::Duration::microseconds(1);
    let held = |s: &ConsentState| after.iter().find(|a| a.purpose == s.purpose && a.channel == s.channel);
    let mut appends = Vec::new();
    // Purpose-wide decisions first: when each ends up captured is what channel decisions must come after.
    let mut wide_at: HashMap<ConsentPurpose, DateTime<Utc>> = HashMap::new();
    for wanted in resolved.iter().filter(|s| s.channel.is_none()) {
        if held(wanted).is_some_and(|h| h.id == wanted.id) {
            wide_at.insert(wanted.purpose, wanted.captured_at);
        } else {
            wide_at.insert(wanted.purpose, now);
            appends.push(ConsentState { captured_at: now, ..wanted.clone() });
        }
    }
    for wanted in resolved.iter().filter(|s| s.channel.is_some()) {
        let kept = held(wanted).is_some_and(|h| h.id == wanted.id);
        let after_wide = wide_at.get(&wanted.purpose).is_none_or(|wide| wanted.captured_at > *wide);
        if !(kept && after_wide) {
            appends.push(ConsentState { captured_at: channel_time, ..wanted.clone() });
        }
    }
    appends
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consent::ConsentStatus;

    fn state(purpose: &str, status: ConsentStatus, days_ago: i64) -> ConsentState {
        decision(purpose, None, status, days_ago * 24 * 60)
    }

    fn decision(purpose: &str, channel: Option<&str>, status: ConsentStatus, minutes_ago: i64) -> ConsentState {
        let at = Utc::now() - chrono::Duration::minutes(minutes_ago);
        ConsentState {
            id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            purpose: purpose.parse().expect("purpose"),
            channel: channel.map(str::to_owned),
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

    fn caller(purpose: &str) -> Caller {
        Caller::new(
            TenantId::parse("acme").expect("tenant"),
            "test".into(),
            [Scope::ProfilesRead, Scope::TouchpointsRead].into_iter().collect(),
            crate::auth::Purpose::parse(purpose).expect("purpose"),
        )
    }

    /// The reason `decide` refuses with, or `None` when it permits.
    fn verdict(consents: Vec<ConsentState>, purpose: &str) -> Option<&'static str> {
        let state = PrivacyState { restricted: false, consents, consent_version: 0 };
        match decide(&caller(purpose), Uuid::now_v7(), &state, DataCategory::BehaviouralHistory, Utc::now()) {
            Ok(_) => None,
            Err(ApiError::ConsentRequired { reason, .. }) => Some(reason),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn the_later_of_the_purpose_wide_and_the_channel_decision_wins() {
        use ConsentStatus::{Denied as D, Granted as G, Withdrawn as W};
        // (decisions as (channel, status, minutes ago), caller purpose, expected refusal)
        type Decisions = Vec<(Option<&'static str>, ConsentStatus, i64)>;
        let table: Vec<(Decisions, &str, Option<&str>)> = vec![
            // Nothing decided.
            (vec![], "marketing:email", Some("NOT_GIVEN")),
            (vec![], "marketing", Some("NOT_GIVEN")),
            // Only a purpose-wide decision: it covers every channel.
            (vec![(None, G, 10)], "marketing:email", None),
            (vec![(None, G, 10)], "marketing", None),
            (vec![(None, W, 10)], "marketing:sms", Some("WITHDRAWN")),
            (vec![(None, D, 10)], "marketing:email", Some("DENIED")),
            // Only a channel decision: that channel only; the purpose without a channel is not covered.
            (vec![(Some("email"), G, 10)], "marketing:email", None),
            (vec![(Some("email"), G, 10)], "marketing:sms", Some("NOT_GIVEN")),
            (vec![(Some("email"), G, 10)], "marketing", Some("NOT_GIVEN")),
            (vec![(Some("email"), W, 10)], "marketing:email", Some("WITHDRAWN")),
            // The reported case: granted for email an hour ago, withdrawn for every channel now.
            (vec![(Some("email"), G, 60), (None, W, 0)], "marketing:email", Some("WITHDRAWN")),
            (vec![(Some("email"), G, 60), (None, W, 0)], "marketing:sms", Some("WITHDRAWN")),
            (vec![(Some("email"), G, 60), (None, D, 0)], "marketing:email", Some("DENIED")),
            // Withdrawn for every channel, then granted for email: email only.
            (vec![(None, W, 60), (Some("email"), G, 0)], "marketing:email", None),
            (vec![(None, W, 60), (Some("email"), G, 0)], "marketing:sms", Some("WITHDRAWN")),
            (vec![(None, W, 60), (Some("email"), G, 0)], "marketing", Some("WITHDRAWN")),
            // Granted for every channel, then withdrawn for email: every channel but email.
            (vec![(None, G, 60), (Some("email"), W, 0)], "marketing:email", Some("WITHDRAWN")),
            (vec![(None, G, 60), (Some("email"), W, 0)], "marketing:push", None),
            (vec![(None, G, 60), (Some("email"), W, 0)], "marketing", None),
            // Withdrawn for email, later granted for every channel: the later grant covers email again.
            (vec![(Some("email"), W, 60), (None, G, 0)], "marketing:email", None),
            // Another channel's decision never applies.
            (vec![(Some("sms"), G, 0), (None, W, 60)], "marketing:email", Some("WITHDRAWN")),
            (vec![(Some("sms"), W, 0), (None, G, 60)], "marketing:email", None),
            // Captured at the same moment: the more restrictive wins, whichever is the channel's.
            (vec![(None, G, 5), (Some("email"), W, 5)], "marketing:email", Some("WITHDRAWN")),
            (vec![(None, D, 5), (Some("email"), G, 5)], "marketing:email", Some("DENIED")),
        ];
        for (i, (decisions, purpose, expected)) in table.into_iter().enumerate() {
            let consents: Vec<ConsentState> = decisions
                .iter()
                .map(|(channel, status, minutes)| decision("marketing", *channel, *status, *minutes))
                .collect();
            // Same-moment rows share one capture time exactly.
            let consents = if decisions.len() == 2 && decisions[0].2 == decisions[1].2 {
                let at = consents[0].captured_at;
                consents.into_iter().map(|c| ConsentState { captured_at: at, ..c }).collect()
            } else {
                consents
            };
            assert_eq!(verdict(consents, purpose), expected, "row {i}: {decisions:?} for {purpose}");
        }
    }

    #[test]
    fn an_expired_grant_is_in_force_and_refuses_as_expired() {
        let mut grant = decision("marketing", Some("email"), ConsentStatus::Granted, 60);
        grant.expires_at = Some(Utc::now() - chrono::Duration::minutes(1));
        let wide = decision("marketing", None, ConsentStatus::Granted, 120);
        assert_eq!(verdict(vec![wide.clone(), grant.clone()], "marketing:email"), Some("EXPIRED"));
        assert_eq!(verdict(vec![wide], "marketing:email"), None);
    }

    /// The status `in_force` answers with, as a comparable rank (0 granted … 2 denied/withdrawn, 3 none).
    fn rank(consents: &[ConsentState], channel: Option<&str>, now: DateTime<Utc>) -> Option<u8> {
        in_force(consents, ConsentPurpose::Marketing, channel, now).map(|c| restrictiveness(c, now))
    }

    /// The latest decision per (purpose, channel) of a ledger, as `ledger::latest_states` derives them.
    fn latest(ledger: &[ConsentState]) -> Vec<ConsentState> {
        let mut by_key: HashMap<(ConsentPurpose, Option<String>), ConsentState> = HashMap::new();
        for event in ledger {
            let key = (event.purpose, event.channel.clone());
            if by_key.get(&key).is_none_or(|held| (held.captured_at, held.id) <= (event.captured_at, event.id)) {
                by_key.insert(key, event.clone());
            }
        }
        by_key.into_values().collect()
    }

    #[test]
    fn a_merged_ledger_decides_every_channel_as_the_most_restrictive_side() {
        use ConsentStatus::{Granted as G, Withdrawn as W};
        type Side = Vec<(Option<&'static str>, ConsentStatus, i64)>;
        let table: Vec<(Side, Side)> = vec![
            (vec![(None, G, 10)], vec![(Some("email"), W, 60)]),
            (vec![(None, W, 10)], vec![(Some("email"), G, 60)]),
            (vec![(None, W, 60), (Some("email"), G, 10)], vec![(None, G, 30)]),
            (vec![(None, W, 60), (Some("email"), G, 10)], vec![(Some("email"), G, 5)]),
            (vec![(Some("email"), G, 60), (None, W, 10)], vec![(None, G, 5), (Some("sms"), W, 1)]),
            (vec![(None, G, 60)], vec![(None, G, 10), (Some("email"), W, 5)]),
            (vec![(Some("email"), W, 60)], vec![(Some("sms"), G, 10)]),
            (vec![], vec![(None, W, 10), (Some("push"), G, 5)]),
        ];
        let now = Utc::now();
        for (i, (a, b)) in table.into_iter().enumerate() {
            let make = |side: &Side| -> Vec<ConsentState> {
                side.iter()
                    .map(|(channel, status, minutes)| decision("marketing", *channel, *status, *minutes))
                    .collect()
            };
            let sides = vec![make(&a), make(&b)];
            let (resolved, _) = most_restrictive(&sides, now);
            let moved: Vec<ConsentState> = sides.iter().flatten().cloned().collect();
            let after = latest(&moved);
            let mut ledger = moved;
            ledger.extend(
                merge_appends(&resolved, &after, now).into_iter().map(|s| ConsentState { id: Uuid::now_v7(), ..s }),
            );
            let merged = latest(&ledger);
            for channel in [None, Some("email"), Some("sms"), Some("push"), Some("phone")] {
                let expected = sides.iter().filter_map(|side| rank(side, channel, now)).max();
                assert_eq!(rank(&merged, channel, now), expected, "row {i}, channel {channel:?}: {a:?} + {b:?}");
            }
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
        assert_eq!(conflicts, vec![(ConsentPurpose::Personalization, None)]);
    }
}
