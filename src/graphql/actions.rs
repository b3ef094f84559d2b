//! Next-best-action resolvers: the tenant's rules, recording what a customer did with an action, and the views of
//! `Customer.nextBestAction`. Thin: the rules are in `crate::derived::actions`.
use async_graphql::{Context, Enum, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::{request, touchpoints::ItemStatus};
use crate::{
    consent::Permitted,
    derived::actions::{self, ActionRule, Decision, FrequencyCap, NextBestAction, Outcome, RuleDecision},
    error::GqlResult,
    touchpoints::Channel,
};

/// At most `max` shows within the last `days` days.
#[derive(InputObject, SimpleObject, Clone, Copy)]
#[graphql(input_name = "ActionFrequencyCapInput")]
pub struct ActionFrequencyCap {
    /// 1–1000.
    max: i32,
    /// 1–366.
    days: i32,
}

#[derive(InputObject)]
pub struct DefineActionRuleInput {
    /// 1–64 of a–z, 0–9 and `_`, starting with a letter.
    key: String,
    /// The consent purpose the action serves (`personalization`, `marketing`, `analytics`, `profiling`, `sharing`):
    /// the rule is blocked for a customer whose consent to it is not in force.
    purpose: String,
    /// Higher is tried first (ties: by key).
    #[graphql(default)]
    priority: i32,
    /// Where the action is shown (1–64 of a–z, 0–9, `_`, `-`, `.`); `nextBestAction(placement:)` considers only the
    /// rules of that placement.
    placement: Option<String>,
    /// A segment condition (as `defineSegment` takes; it may use the tenant's segments and computed traits); absent:
    /// every customer is eligible.
    condition: Option<Json<Value>>,
    /// The action handed out when the rule fires: a JSON object of at most 16 KB.
    payload: Json<Value>,
    /// No new show within this many seconds of the latest `SHOWN` outcome (1 second to 366 days).
    cooldown_seconds: Option<i32>,
    frequency_cap: Option<ActionFrequencyCap>,
    /// A disabled rule is kept and listed, never evaluated.
    #[graphql(default = true)]
    enabled: bool,
}

/// One version of a next-best-action rule.
#[derive(SimpleObject)]
#[graphql(name = "ActionRule")]
pub struct ActionRuleView {
    id: Uuid,
    key: String,
    version: i32,
    enabled: bool,
    purpose: String,
    priority: i32,
    placement: Option<String>,
    condition: Option<Json<Value>>,
    payload: Json<Value>,
    cooldown_seconds: Option<i64>,
    frequency_cap: Option<ActionFrequencyCap>,
    created_at: DateTime<Utc>,
    created_by: String,
}

impl From<ActionRule> for ActionRuleView {
    fn from(r: ActionRule) -> Self {
        ActionRuleView {
            id: r.id,
            key: r.key,
            version: r.version,
            enabled: r.enabled,
            purpose: r.purpose.as_str().to_owned(),
            priority: r.priority,
            placement: r.placement,
            condition: r.condition.map(Json),
            payload: Json(r.payload),
            cooldown_seconds: r.cooldown_seconds,
            frequency_cap: r.cap.map(|c| ActionFrequencyCap { max: c.max, days: c.days }),
            created_at: r.created_at,
            created_by: r.created_by,
        }
    }
}

/// What a customer did with an action.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The action was shown: counts for the rule's cooldown and frequency cap.
    Shown,
    Accepted,
    Dismissed,
}

impl From<ActionOutcome> for Outcome {
    fn from(o: ActionOutcome) -> Self {
        match o {
            ActionOutcome::Shown => Outcome::Shown,
            ActionOutcome::Accepted => Outcome::Accepted,
            ActionOutcome::Dismissed => Outcome::Dismissed,
        }
    }
}

impl From<Outcome> for ActionOutcome {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Shown => ActionOutcome::Shown,
            Outcome::Accepted => ActionOutcome::Accepted,
            Outcome::Dismissed => ActionOutcome::Dismissed,
        }
    }
}

#[derive(InputObject)]
pub struct RecordActionOutcomeInput {
    customer_id: Uuid,
    /// The rule's key; the outcome is recorded against its current version.
    rule: String,
    outcome: ActionOutcome,
    /// Where the action was shown.
    channel: Channel,
    /// Unique per tenant: a replay with the same key records nothing new. Absent: a fresh key.
    idempotency_key: Option<String>,
    /// Default: now.
    occurred_at: Option<DateTime<Utc>>,
}

/// The touchpoint an outcome was recorded as.
#[derive(SimpleObject)]
pub struct ActionOutcomeRecorded {
    /// `CREATED`, or `DUPLICATE` for a replayed idempotency key (the stored touchpoint, unchanged).
    status: ItemStatus,
    touchpoint_id: Uuid,
    /// The customer it landed on (the survivor, for an id merged away).
    customer_id: Uuid,
    rule: String,
    version: i32,
    outcome: ActionOutcome,
    occurred_at: DateTime<Utc>,
}

/// Why a rule did or did not give the action.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ActionDecision {
    /// This rule's action is the answer.
    Fired,
    /// The condition is false now.
    NotEligible,
    /// The customer's consent to the rule's purpose is not in force (`reason`).
    BlockedConsent,
    /// Shown within the cooldown (`until`).
    BlockedCooldown,
    /// Shown as often as the cap allows within its window (`until`).
    BlockedFrequencyCap,
    /// A rule of higher priority fired.
    NotReached,
}

/// The decision about one rule.
#[derive(SimpleObject)]
pub struct ActionRuleDecision {
    rule: String,
    version: i32,
    priority: i32,
    purpose: String,
    decision: ActionDecision,
    /// `BLOCKED_CONSENT`: `NOT_GIVEN`, `WITHDRAWN`, `DENIED` or `EXPIRED`.
    reason: Option<String>,
    /// `BLOCKED_COOLDOWN` and `BLOCKED_FREQUENCY_CAP`: when the block ends if nothing more is shown.
    until: Option<DateTime<Utc>>,
}

/// The action that fired.
#[derive(SimpleObject)]
pub struct FiredAction {
    rule: String,
    version: i32,
    purpose: String,
    placement: Option<String>,
    payload: Json<Value>,
}

/// The next best action for a customer now, and the decision about every rule considered, in the order tried.
#[derive(SimpleObject)]
#[graphql(name = "NextBestAction")]
pub struct NextBestActionView {
    /// `null` when no rule fired.
    action: Option<FiredAction>,
    decisions: Vec<ActionRuleDecision>,
    evaluated_at: DateTime<Utc>,
}

fn decision_view(d: &RuleDecision) -> ActionRuleDecision {
    ActionRuleDecision {
        rule: d.rule.key.clone(),
        version: d.rule.version,
        priority: d.rule.priority,
        purpose: d.rule.purpose.as_str().to_owned(),
        decision: match d.decision {
            Decision::Fired => ActionDecision::Fired,
            Decision::NotEligible => ActionDecision::NotEligible,
            Decision::BlockedConsent => ActionDecision::BlockedConsent,
            Decision::BlockedCooldown => ActionDecision::BlockedCooldown,
            Decision::BlockedFrequencyCap => ActionDecision::BlockedFrequencyCap,
            Decision::NotReached => ActionDecision::NotReached,
        },
        reason: d.reason.map(str::to_owned),
        until: d.until,
    }
}

impl From<Permitted<NextBestAction>> for NextBestActionView {
    fn from(p: Permitted<NextBestAction>) -> Self {
        let a = p.into_value();
        NextBestActionView {
            decisions: a.decisions.iter().map(decision_view).collect(),
            action: a.fired.map(|r| FiredAction {
                rule: r.key,
                version: r.version,
                purpose: r.purpose.as_str().to_owned(),
                placement: r.placement,
                payload: Json(r.payload),
            }),
            evaluated_at: a.evaluated_at,
        }
    }
}

#[derive(Default)]
pub struct ActionsQuery;

#[Object]
impl ActionsQuery {
    /// The tenant's next-best-action rules, the latest version of each, by priority (highest first). Needs
    /// `profiles:read`.
    async fn action_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ActionRuleView>> {
        let rc = request(ctx)?;
        Ok(actions::list(&rc.caller, &rc.services).await.gql()?.into_iter().map(ActionRuleView::from).collect())
    }
}

#[derive(Default)]
pub struct ActionsMutation;

#[Object]
impl ActionsMutation {
    /// Stores a new version of a next-best-action rule (the first is version 1; at most 200 rules per tenant); the
    /// condition is checked like a segment's against the tenant's definitions, and a refusal names the field. The
    /// new version answers at once. Needs `profiles:write`.
    async fn define_action_rule(
        &self,
        ctx: &Context<'_>,
        input: DefineActionRuleInput,
    ) -> async_graphql::Result<ActionRuleView> {
        let rc = request(ctx)?;
        let rule = actions::define(
            &rc.caller,
            &rc.services,
            actions::RuleInput {
                key: input.key,
                purpose: input.purpose,
                priority: input.priority,
                placement: input.placement,
                condition: input.condition.map(|j| j.0),
                payload: input.payload.0,
                cooldown_seconds: input.cooldown_seconds,
                cap: input.frequency_cap.map(|c| FrequencyCap { max: c.max, days: c.days }),
                enabled: input.enabled,
            },
        )
        .await
        .gql()?;
        Ok(rule.into())
    }

    /// Records what a customer did with a rule's action as a touchpoint (type `CUSTOM`, source `next-best-action`,
    /// properties `{"nbaRule": key, "nbaVersion": n, "nbaOutcome": "SHOWN"}`) through the normal ingestion path, so
    /// it follows merges and unmerges and is exported and erased with the customer. `SHOWN` outcomes count for the
    /// rule's cooldown and frequency cap. Needs `touchpoints:write`.
    async fn record_action_outcome(
        &self,
        ctx: &Context<'_>,
        input: RecordActionOutcomeInput,
    ) -> async_graphql::Result<ActionOutcomeRecorded> {
        let rc = request(ctx)?;
        let recorded = actions::record_outcome(
            &rc.caller,
            &rc.services,
            actions::OutcomeInput {
                customer_id: input.customer_id,
                rule: input.rule,
                outcome: input.outcome.into(),
                channel: input.channel,
                idempotency_key: input.idempotency_key,
                occurred_at: input.occurred_at,
            },
        )
        .await
        .gql()?;
        Ok(ActionOutcomeRecorded {
            status: if recorded.duplicate { ItemStatus::Duplicate } else { ItemStatus::Created },
            touchpoint_id: recorded.touchpoint_id,
            customer_id: recorded.customer_id,
            rule: recorded.rule,
            version: recorded.version,
            outcome: recorded.outcome.into(),
            occurred_at: recorded.occurred_at,
        })
    }
}
