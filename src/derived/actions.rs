//! Next best action: a tenant's rules (priority, condition, action payload, purpose, cooldown, frequency cap),
//! stored and versioned in `action_rules`, evaluated for one customer when read.
//!
//! A rule's condition is a segment condition of `derived::definitions` (it may use the tenant's segments and computed
//! traits). Rules are tried by priority, highest first (then by key); each gets a decision:
//! - `BLOCKED_CONSENT`: the customer's consent to the rule's purpose is not in force (`policy::in_force`,
//!   `policy::refusal`: `NOT_GIVEN`, `WITHDRAWN`, `DENIED`, `EXPIRED`); the condition is not evaluated;
//! - `NOT_ELIGIBLE`: the condition is false now;
//! - `BLOCKED_COOLDOWN`: the rule was last shown within its cooldown (`until`: when the cooldown ends);
//! - `BLOCKED_FREQUENCY_CAP`: the rule was shown `max` times or more within its last `days` (`until`: when a show
//!   leaves the window);
//! - `FIRED`: the first rule that passes all of these; every rule after it is `NOT_REACHED`.
//!
//! Shows are touchpoints (type `CUSTOM`, properties `{"nbaRule": key, "nbaVersion": n, "nbaOutcome": "SHOWN"}`),
//! recorded by `record_outcome` through the normal ingestion path, so merges, unmerges, erasure and export cover
//! them, and a definition can filter on them (`properties: [{key: "nbaRule", equals: …}]`). Cooldowns and caps
//! count the `SHOWN` outcomes of the rule's key (any version) among the customer's latest
//! [`catalog::MAX_FACTS`] touchpoints.
//!
//! The answer is derived personalization data: served under the caller's permit for derived data
//! (`ConsentSession::decide_derived`: consent to the caller's purpose, not restricted, `profiling` not refused),
//! logged as `scores`.
//!
//! Bounds: at most [`MAX_RULES`] keys per tenant; a payload of at most [`MAX_PAYLOAD_BYTES`].
use chrono::{DateTime, Duration, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    catalog,
    definitions::{self, Body, Condition, Fact, References, Subject},
};
use crate::{
    auth::{Caller, Scope, TenantId},
    consent::{ConsentPurpose, ConsentSession, Permitted, ledger::ConsentState, policy},
    error::{ApiError, ApiResult},
    privacy::access_log::AccessCategory,
    profiles::customers,
    services::Services,
    storage::entities::action_rule,
    touchpoints::{Channel, ItemOutcome, TouchpointInput, TouchpointType, record_touchpoints},
};

/// At most this many rule keys per tenant.
pub const MAX_RULES: usize = 200;
/// A payload is a JSON object of at most this many bytes.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// A cooldown or a frequency-cap window is at most this long.
pub const MAX_DAYS: i64 = 366;
/// A frequency cap allows at most this many shows.
pub const MAX_CAP: i32 = 1000;

/// The touchpoint properties a recorded outcome carries (flat, so the definition language's `properties` filter can
/// select them).
pub const RULE_PROPERTY: &str = "nbaRule";
pub const VERSION_PROPERTY: &str = "nbaVersion";
pub const OUTCOME_PROPERTY: &str = "nbaOutcome";
/// The source of the touchpoints `record_outcome` writes.
pub const SOURCE: &str = "next-best-action";

/// At most `max` shows within the last `days` days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    pub max: i32,
    pub days: i32,
}

/// One version of a rule.
#[derive(Debug, Clone)]
pub struct ActionRule {
    pub id: Uuid,
    pub key: String,
    pub version: i32,
    pub enabled: bool,
    pub purpose: ConsentPurpose,
    pub priority: i32,
    pub placement: Option<String>,
    pub condition: Option<Value>,
    pub payload: Value,
    pub cooldown_seconds: Option<i64>,
    pub cap: Option<FrequencyCap>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// `None`: the rule applies to everyone (consent, cooldown and cap aside).
    parsed: Option<Condition>,
}

fn parse_condition(json: &Value) -> ApiResult<Condition> {
    match definitions::parse(true, json)? {
        Body::Segment(c) => Ok(c),
        Body::ComputedTrait(_) => Err(ApiError::validation("condition", "a condition object")),
    }
}

fn from_row(row: action_rule::Model) -> Option<ActionRule> {
    let parsed = match &row.condition {
        None => None,
        Some(json) => Some(parse_condition(json).ok()?),
    };
    let cap = match (row.cap_max, row.cap_days) {
        (Some(max), Some(days)) => Some(FrequencyCap { max, days }),
        _ => None,
    };
    Some(ActionRule {
        id: row.id,
        purpose: row.purpose.parse().ok()?,
        key: row.key,
        version: row.version,
        enabled: row.enabled,
        priority: row.priority,
        placement: row.placement,
        condition: row.condition,
        payload: row.payload,
        cooldown_seconds: row.cooldown_seconds,
        cap,
        created_at: row.created_at,
        created_by: row.created_by,
        parsed,
    })
}

/// The tenant's rules, the current version of each key, by priority (highest first), then key.
async fn current(conn: &impl ConnectionTrait, tenant: &TenantId) -> ApiResult<Vec<ActionRule>> {
    let rows = action_rule::of_tenant(tenant)
        .filter(action_rule::Column::Current.eq(true))
        .order_by_desc(action_rule::Column::Priority)
        .order_by_asc(action_rule::Column::Key)
        .all(conn)
        .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// A rule as the caller writes it.
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub key: String,
    pub purpose: String,
    pub priority: i32,
    pub placement: Option<String>,
    /// `None`: always eligible.
    pub condition: Option<Value>,
    pub payload: Value,
    pub cooldown_seconds: Option<i32>,
    pub cap: Option<FrequencyCap>,
    pub enabled: bool,
}

fn is_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && text.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A placement: 1–64 of a–z, 0–9, `_`, `-`, `.`.
fn check_placement(placement: &str, field: &str) -> ApiResult<()> {
    let ok = !placement.is_empty()
        && placement.len() <= 64
        && placement.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(ApiError::validation(field, "1–64 of a–z, 0–9, `_`, `-` and `.`"));
    }
    Ok(())
}

/// Checks what needs no database; the condition parsed.
fn check(input: &RuleInput) -> ApiResult<(ConsentPurpose, Option<Condition>)> {
    if !is_key(&input.key) {
        return Err(ApiError::validation("key", "1–64 of a–z, 0–9 and `_`, starting with a letter"));
    }
    let purpose: ConsentPurpose = input.purpose.parse().map_err(|e: String| ApiError::validation("purpose", e))?;
    if let Some(placement) = &input.placement {
        check_placement(placement, "placement")?;
    }
    let condition = input.condition.as_ref().map(parse_condition).transpose()?;
    if !input.payload.is_object() {
        return Err(ApiError::validation("payload", "a JSON object"));
    }
    if input.payload.to_string().len() > MAX_PAYLOAD_BYTES {
        return Err(ApiError::validation("payload", format!("larger than {MAX_PAYLOAD_BYTES} bytes")));
    }
    if let Some(secs) = input.cooldown_seconds
        && !(1..=MAX_DAYS * 86_400).contains(&i64::from(secs))
    {
        return Err(ApiError::validation("cooldownSeconds", format!("from 1 to {} (366 days)", MAX_DAYS * 86_400)));
    }
    if let Some(cap) = input.cap {
        if !(1..=MAX_CAP).contains(&cap.max) {
            return Err(ApiError::validation("frequencyCap.max", format!("from 1 to {MAX_CAP}")));
        }
        if !(1..=MAX_DAYS).contains(&i64::from(cap.days)) {
            return Err(ApiError::validation("frequencyCap.days", format!("from 1 to {MAX_DAYS}")));
        }
    }
    Ok((purpose, condition))
}

/// Stores a new version of a rule (the first is version 1), its condition checked against the tenant's definitions.
/// Needs `profiles:write`.
pub async fn define(caller: &Caller, svc: &Services, input: RuleInput) -> ApiResult<ActionRule> {
    caller.require(Scope::ProfilesWrite)?;
    let (purpose, condition) = check(&input)?;
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let definitions = catalog::catalog(&txn, tenant).await?;
    // A rule key cannot be a definition key (`:` is not allowed in those), so the cycle check never mistakes one.
    if let Some(condition) = condition {
        definitions::validate(&format!("rule:{}", input.key), &Body::Segment(condition), &definitions)?;
    }
    let rules = current(&txn, tenant).await?;
    let existing = rules.iter().find(|r| r.key == input.key);
    if existing.is_none() && rules.len() >= MAX_RULES {
        return Err(ApiError::validation("key", format!("at most {MAX_RULES} action rules per tenant")));
    }
    if let Some(previous) = existing {
        action_rule::update_of_tenant(tenant)
            .col_expr(action_rule::Column::Current, Expr::value(false))
            .filter(action_rule::Column::Id.eq(previous.id))
            .exec(&txn)
            .await?;
    }
    let row = action_rule::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        key: Set(input.key.clone()),
        version: Set(existing.map_or(1, |r| r.version + 1)),
        current: Set(true),
        enabled: Set(input.enabled),
        purpose: Set(purpose.as_str().to_owned()),
        priority: Set(input.priority),
        placement: Set(input.placement),
        condition: Set(input.condition),
        payload: Set(input.payload),
        cooldown_seconds: Set(input.cooldown_seconds.map(i64::from)),
        cap_max: Set(input.cap.map(|c| c.max)),
        cap_days: Set(input.cap.map(|c| c.days)),
        created_at: Set(Utc::now()),
        created_by: Set(caller.subject().chars().take(256).collect()),
    }
    .insert(&txn)
    .await;
    let row = match row {
        Ok(row) => row,
        Err(err) if ApiError::is_unique_violation(&err) => {
            return Err(ApiError::Conflict(format!("rule `{}` changed meanwhile; try again", input.key)));
        }
        Err(err) => return Err(err.into()),
    };
    txn.commit().await?;
    from_row(row).ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored an unreadable action rule")))
}

/// The tenant's rules, the latest version of each, by priority. Needs `profiles:read`.
pub async fn list(caller: &Caller, svc: &Services) -> ApiResult<Vec<ActionRule>> {
    caller.require(Scope::ProfilesRead)?;
    current(svc.db.conn(), caller.tenant()).await
}

/// What was decided about one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Fired,
    NotEligible,
    BlockedConsent,
    BlockedCooldown,
    BlockedFrequencyCap,
    NotReached,
}

#[derive(Debug, Clone)]
pub struct RuleDecision {
    pub rule: ActionRule,
    pub decision: Decision,
    /// `BLOCKED_CONSENT`: `NOT_GIVEN`, `WITHDRAWN`, `DENIED` or `EXPIRED`.
    pub reason: Option<&'static str>,
    /// `BLOCKED_COOLDOWN`, `BLOCKED_FREQUENCY_CAP`: when the block ends (if nothing else is shown).
    pub until: Option<DateTime<Utc>>,
}

/// The action for a customer now, and why every rule considered did or did not give it.
#[derive(Debug, Clone)]
pub struct NextBestAction {
    pub fired: Option<ActionRule>,
    pub decisions: Vec<RuleDecision>,
    pub evaluated_at: DateTime<Utc>,
}

/// When the rule's shows (`SHOWN` outcomes of its key) happened, latest first.
fn shows_of(facts: &[Fact], key: &str) -> Vec<DateTime<Utc>> {
    let mut shows: Vec<DateTime<Utc>> = facts
        .iter()
        .filter(|f| f.kind == TouchpointType::Custom)
        .filter(|f| {
            f.properties.as_ref().is_some_and(|p| {
                p.get(RULE_PROPERTY).and_then(Value::as_str) == Some(key)
                    && p.get(OUTCOME_PROPERTY).and_then(Value::as_str) == Some(Outcome::Shown.as_str())
            })
        })
        .map(|f| f.at)
        .collect();
    shows.sort_unstable_by(|a, b| b.cmp(a));
    shows
}

/// Until when the cooldown after the latest show blocks the rule, if it does now.
fn cooldown_until(rule: &ActionRule, shows: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let until = *shows.first()? + Duration::seconds(rule.cooldown_seconds?);
    (until > now).then_some(until)
}

/// Until when the frequency cap blocks the rule, if it does now: the cap is reached while `max` shows lie within the
/// window, so it lifts when the `max`-th latest of them leaves it.
fn cap_until(rule: &ActionRule, shows: &[DateTime<Utc>], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cap = rule.cap?;
    let window = Duration::days(i64::from(cap.days));
    let nth = *shows.get(usize::try_from(cap.max).ok()?.checked_sub(1)?)?;
    let until = nth + window;
    (until > now).then_some(until)
}

/// Decides every rule for one customer. Pure: `rules` in the order they are tried, `consents` the customer's
/// latest decisions, `subject` what conditions see (with the touchpoints that hold the shows).
pub fn evaluate(
    rules: &[ActionRule],
    consents: &[ConsentState],
    subject: &Subject<'_>,
    refs: &impl References,
) -> NextBestAction {
    let now = subject.now;
    let mut fired: Option<ActionRule> = None;
    let mut decisions = Vec::with_capacity(rules.len());
    for rule in rules {
        let mut reason = None;
        let mut until = None;
        let decision = if fired.is_some() {
            Decision::NotReached
        } else if let Some(refused) = policy::refusal(policy::in_force(consents, rule.purpose, None, now), now) {
            reason = Some(refused);
            Decision::BlockedConsent
        } else if rule.parsed.as_ref().is_some_and(|c| !definitions::evaluate_segment(c, subject, refs).value) {
            Decision::NotEligible
        } else {
            let shows = shows_of(subject.touchpoints, &rule.key);
            if let Some(at) = cooldown_until(rule, &shows, now) {
                until = Some(at);
                Decision::BlockedCooldown
            } else if let Some(at) = cap_until(rule, &shows, now) {
                until = Some(at);
                Decision::BlockedFrequencyCap
            } else {
                fired = Some(rule.clone());
                Decision::Fired
            }
        };
        decisions.push(RuleDecision { rule: rule.clone(), decision, reason, until });
    }
    NextBestAction { fired, decisions, evaluated_at: now }
}

/// The next best action for a customer now, among the enabled rules (of `placement`, when given: only rules with
/// that placement). Needs `profiles:read`; derived personalization data, gated like segments; logged.
pub async fn next_best_action(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    id: Uuid,
    placement: Option<&str>,
) -> ApiResult<Permitted<NextBestAction>> {
    caller.require(Scope::ProfilesRead)?;
    if let Some(placement) = placement {
        check_placement(placement, "placement")?;
    }
    let permit = session.decide_derived(caller, svc, id).await?;
    let state = session.state(caller, svc, id).await?;
    let tenant = caller.tenant();
    let rules: Vec<ActionRule> = current(svc.db.conn(), tenant)
        .await?
        .into_iter()
        .filter(|r| r.enabled && placement.is_none_or(|p| r.placement.as_deref() == Some(p)))
        .collect();
    let now = Utc::now();
    let answer = if rules.is_empty() {
        NextBestAction { fired: None, decisions: Vec::new(), evaluated_at: now }
    } else {
        let refs = catalog::cached(svc, tenant).await?;
        let data = catalog::subjects(caller, svc, &[id]).await?.remove(&id).unwrap_or_default();
        evaluate(&rules, &state.consents, &data.subject(now), refs.as_ref())
    };
    svc.access_log.record(caller, [id], AccessCategory::Scores);
    Ok(permit.serve(answer))
}

/// What a customer did with an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Shown,
    Accepted,
    Dismissed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Shown => "SHOWN",
            Outcome::Accepted => "ACCEPTED",
            Outcome::Dismissed => "DISMISSED",
        }
    }
}

pub struct OutcomeInput {
    pub customer_id: Uuid,
    pub rule: String,
    pub outcome: Outcome,
    pub channel: Channel,
    /// Default: a fresh key (the call is then not idempotent).
    pub idempotency_key: Option<String>,
    /// Default: now.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// The touchpoint an outcome was recorded as.
#[derive(Debug, Clone)]
pub struct RecordedOutcome {
    pub touchpoint_id: Uuid,
    /// The customer it landed on (the survivor, when the id given was merged away).
    pub customer_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// The idempotency key was seen before: the stored touchpoint, unchanged.
    pub duplicate: bool,
    pub rule: String,
    pub version: i32,
    pub outcome: Outcome,
}

/// Records what a customer did with a rule's action (its current version) as a `CUSTOM` touchpoint, through the
/// normal ingestion path. Needs `touchpoints:write`.
pub async fn record_outcome(caller: &Caller, svc: &Services, input: OutcomeInput) -> ApiResult<RecordedOutcome> {
    caller.require(Scope::TouchpointsWrite)?;
    if !is_key(&input.rule) {
        return Err(ApiError::validation("rule", "1–64 of a–z, 0–9 and `_`, starting with a letter"));
    }
    let rule = action_rule::of_tenant(caller.tenant())
        .filter(action_rule::Column::Current.eq(true))
        .filter(action_rule::Column::Key.eq(input.rule.as_str()))
        .one(svc.db.conn())
        .await?
        .ok_or_else(|| ApiError::validation("rule", format!("the tenant has no action rule `{}`", input.rule)))?;
    // A show counts for the person: an id merged away records on its survivor.
    let customer = customers::current_id(svc.db.conn(), caller.tenant(), input.customer_id)
        .await?
        .ok_or_else(|| ApiError::validation("customerId", format!("no customer {}", input.customer_id)))?;
    let touchpoint = TouchpointInput {
        customer_id: Some(customer),
        identities: Vec::new(),
        channel: input.channel,
        kind: TouchpointType::Custom,
        stage: None,
        occurred_at: input.occurred_at.unwrap_or_else(Utc::now),
        source: SOURCE.to_owned(),
        idempotency_key: input.idempotency_key.unwrap_or_else(|| format!("nba:{}:{}", rule.key, Uuid::now_v7())),
        properties: Some(json!({
            RULE_PROPERTY: rule.key,
            VERSION_PROPERTY: rule.version,
            OUTCOME_PROPERTY: input.outcome.as_str(),
        })),
        value: None,
        currency: None,
        feedback: None,
        consents: Vec::new(),
        consent_context: None,
    };
    let (tp, duplicate) = match record_touchpoints(caller, svc, vec![touchpoint]).await?.pop() {
        Some(ItemOutcome::Created(tp)) => (tp, false),
        Some(ItemOutcome::Duplicate(tp)) => (tp, true),
        Some(ItemOutcome::Rejected(err)) => return Err(err),
        Some(ItemOutcome::Suppressed) | None => {
            return Err(ApiError::not_found(format!("customer {}", input.customer_id)));
        }
    };
    // A duplicate answers what was stored the first time.
    let props = tp.properties.as_ref();
    let stored = |name: &str| props.and_then(|p| p.get(name));
    let outcome = match stored(OUTCOME_PROPERTY).and_then(Value::as_str) {
        Some("SHOWN") => Outcome::Shown,
        Some("ACCEPTED") => Outcome::Accepted,
        Some("DISMISSED") => Outcome::Dismissed,
        _ => input.outcome,
    };
    Ok(RecordedOutcome {
        touchpoint_id: tp.id,
        customer_id: tp.customer_id,
        occurred_at: tp.occurred_at,
        duplicate,
        rule: stored(RULE_PROPERTY).and_then(Value::as_str).map_or(rule.key, str::to_owned),
        version: stored(VERSION_PROPERTY)
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(rule.version),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{consent::ConsentStatus, touchpoints::JourneyStage};

    fn rule(key: &str, purpose: ConsentPurpose, condition: Option<Value>) -> ActionRule {
        let parsed = condition.as_ref().map(|c| parse_condition(c).expect("condition"));
        ActionRule {
            id: Uuid::now_v7(),
            key: key.into(),
            version: 1,
            enabled: true,
            purpose,
            priority: 0,
            placement: None,
            condition,
            payload: json!({}),
            cooldown_seconds: None,
            cap: None,
            created_at: Utc::now(),
            created_by: "t".into(),
            parsed,
        }
    }

    fn show(key: &str, at: DateTime<Utc>) -> Fact {
        Fact {
            at,
            kind: TouchpointType::Custom,
            channel: Channel::Web,
            stage: JourneyStage::Usage,
            value: None,
            properties: Some(json!({ RULE_PROPERTY: key, VERSION_PROPERTY: 1, OUTCOME_PROPERTY: "SHOWN" })),
        }
    }

    fn granted(purpose: ConsentPurpose, now: DateTime<Utc>) -> ConsentState {
        ConsentState {
            id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            purpose,
            channel: None,
            status: ConsentStatus::Granted,
            captured_at: now - Duration::days(1),
            recorded_at: now - Duration::days(1),
            source: "web".into(),
            policy_version: None,
            legal_basis: None,
            expires_at: None,
            evidence: None,
        }
    }

    #[test]
    fn decisions_follow_priority_consent_cooldown_and_cap() {
        let now = Utc::now();
        let always = None;
        let mut cooled = rule("cooled", ConsentPurpose::Personalization, always.clone());
        cooled.cooldown_seconds = Some(3600);
        let mut capped = rule("capped", ConsentPurpose::Personalization, always.clone());
        capped.cap = Some(FrequencyCap { max: 2, days: 7 });
        let rules = vec![
            rule("mkt", ConsentPurpose::Marketing, always.clone()),
            rule("never", ConsentPurpose::Personalization, Some(json!({ "hasIdentity": "PHONE" }))),
            cooled,
            capped,
            rule("fires", ConsentPurpose::Personalization, always.clone()),
            rule("after", ConsentPurpose::Personalization, always),
        ];
        let facts = vec![
            show("cooled", now - Duration::minutes(10)),
            show("capped", now - Duration::days(1)),
            show("capped", now - Duration::days(3)),
            show("capped", now - Duration::days(8)),
        ];
        let consents = vec![granted(ConsentPurpose::Personalization, now)];
        let (traits, feedback) = (HashMap::new(), HashMap::new());
        let subject =
            Subject { now, touchpoints: &facts, traits: &traits, identities: &[], latest_feedback: &feedback };
        let refs: HashMap<String, Body> = HashMap::new();
        let answer = evaluate(&rules, &consents, &subject, &refs);
        let got: Vec<(&str, Decision, Option<&str>)> =
            answer.decisions.iter().map(|d| (d.rule.key.as_str(), d.decision, d.reason)).collect();
        assert_eq!(
            got,
            vec![
                ("mkt", Decision::BlockedConsent, Some("NOT_GIVEN")),
                ("never", Decision::NotEligible, None),
                ("cooled", Decision::BlockedCooldown, None),
                ("capped", Decision::BlockedFrequencyCap, None),
                ("fires", Decision::Fired, None),
                ("after", Decision::NotReached, None),
            ]
        );
        assert_eq!(answer.fired.map(|r| r.key), Some("fires".to_owned()));
        assert_eq!(answer.decisions[2].until, Some(now - Duration::minutes(10) + Duration::hours(1)));
        // Two shows in the 7-day window: the cap lifts when the second latest (3 days ago) leaves it.
        assert_eq!(answer.decisions[3].until, Some(now - Duration::days(3) + Duration::days(7)));
    }

    #[test]
    fn a_cap_counts_only_shows_within_its_window() {
        let now = Utc::now();
        let mut capped = rule("capped", ConsentPurpose::Personalization, None);
        capped.cap = Some(FrequencyCap { max: 2, days: 2 });
        let shows = vec![now - Duration::days(1), now - Duration::days(3)];
        assert_eq!(cap_until(&capped, &shows, now), None);
        capped.cap = Some(FrequencyCap { max: 1, days: 2 });
        assert_eq!(cap_until(&capped, &shows, now), Some(now + Duration::days(1)));
    }
}
