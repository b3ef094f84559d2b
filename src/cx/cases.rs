//! The closed loop: feedback cases opened from poor survey answers by the tenant's rules, worked through a state
//! machine with a reason on every transition, an append-only history, deadlines watched by the sweeper, a follow-up
//! contact recorded as a touchpoint, and the re-survey that measures recovery.
//!
//! States: NEW → ASSIGNED → IN_PROGRESS ⇄ ESCALATED → RESOLVED → CLOSED, and REOPENED from RESOLVED or CLOSED.
//! A REOPENED case behaves like an ASSIGNED one (it keeps its owner): it is started again (→ IN_PROGRESS),
//! reassigned (→ ASSIGNED) or escalated. Escalation is open to every working state (NEW, ASSIGNED, IN_PROGRESS,
//! REOPENED), as the sweeper escalates a breached case wherever it stands; ESCALATED goes back to IN_PROGRESS.
//! Assigning again keeps the state (a reassignment). Only a RESOLVED case closes, with a root cause and an outcome.
//! `next` is the one table of legal moves.
//!
//! A case is "open" until CLOSED: its `open_key` (`customer:rule`) is unique per tenant, so a customer has at most
//! one open case per rule, and a later poor answer is linked to it as an event. Every write is conditional on the
//! version it read, so two concurrent transitions never both win.
//!
//! Cases follow merges (`follow_merge`, `follow_unmerge`): the merged customer's cases move to the survivor and the
//! merge records their ids, so an unmerge moves exactly those back. A moved open case keeps its own open key when
//! the survivor has an open case of the same rule (both stay open; nothing is closed for the caller).
//!
//! Every committed change is announced on `feedbackCaseChanged` through `changes::committed` (the sweeper's through
//! `changes::publish_case_changes`), with the kind of the history entry it appended.
pub mod rules;
pub mod stats;
pub mod sweep;

use std::collections::BTreeSet;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use uuid::Uuid;

use crate::{
    auth::{Caller, Purpose, Scope, TenantId},
    changes::{self, CaseChange, Changed},
    consent::policy::{self, DataCategory},
    error::{ApiError, ApiResult},
    pagination::{Page, PageRequest},
    privacy::access_log::AccessCategory,
    services::Services,
    storage::entities::{cx_answer, feedback_case, feedback_case_event, feedback_root_cause, feedback_rule},
    touchpoints::{
        ingest::{self, ItemOutcome, TouchpointInput},
        model::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
    },
};

/// The actor of what the system does on its own (a rule opening a case, the sweeper).
pub const SYSTEM: &str = "system";

/// Declares a closed set stored as its GraphQL name (`IN_PROGRESS`).
macro_rules! closed_set {
    ($(#[$meta:meta])* $name:ident as $gql:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
        #[graphql(name = $gql)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }
    };
}

closed_set!(
    /// Where a feedback case is.
    CaseState as "FeedbackCaseState" {
        New => "NEW", Assigned => "ASSIGNED", InProgress => "IN_PROGRESS", Escalated => "ESCALATED",
        Resolved => "RESOLVED", Closed => "CLOSED", Reopened => "REOPENED",
    }
);

closed_set!(
    /// How urgent a case is; a breached deadline raises it one step.
    Priority as "FeedbackCasePriority" { Low => "LOW", Normal => "NORMAL", High => "HIGH", Urgent => "URGENT" }
);

closed_set!(
    /// How a closed case ended.
    Outcome as "FeedbackCaseOutcome" {
        Recovered => "RECOVERED", NotRecovered => "NOT_RECOVERED", Unreachable => "UNREACHABLE",
        NoActionNeeded => "NO_ACTION_NEEDED",
    }
);

closed_set!(
    /// What an entry of a case's history records.
    EventKind as "FeedbackCaseEventKind" {
        Created => "CREATED", AnswerLinked => "ANSWER_LINKED", Assigned => "ASSIGNED",
        StatusChanged => "STATUS_CHANGED", SlaBreached => "SLA_BREACHED", Contacted => "CONTACTED",
        Resurveyed => "RESURVEYED", Closed => "CLOSED", Reopened => "REOPENED",
    }
);

closed_set!(
    /// A case's deadlines.
    Deadline as "FeedbackCaseDeadline" { FirstContact => "FIRST_CONTACT", Resolution => "RESOLUTION" }
);

impl Priority {
    /// One step up (URGENT stays URGENT).
    pub fn raised(self) -> Self {
        match self {
            Priority::Low => Priority::Normal,
            Priority::Normal => Priority::High,
            Priority::High | Priority::Urgent => Priority::Urgent,
        }
    }
}

impl CaseState {
    /// Not yet RESOLVED or CLOSED: deadlines still run.
    pub fn is_working(self) -> bool {
        !matches!(self, CaseState::Resolved | CaseState::Closed)
    }
}

/// What a caller asks of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Assign,
    Start,
    Escalate,
    Resolve,
    Close,
    Reopen,
}

impl Action {
    /// The state the action aims at, for the error that refuses it.
    fn target(self) -> CaseState {
        match self {
            Action::Assign => CaseState::Assigned,
            Action::Start => CaseState::InProgress,
            Action::Escalate => CaseState::Escalated,
            Action::Resolve => CaseState::Resolved,
            Action::Close => CaseState::Closed,
            Action::Reopen => CaseState::Reopened,
        }
    }
}

/// The one table of legal moves: the state `action` takes a case in `from` to, or `None` when it may not.
pub fn next(from: CaseState, action: Action) -> Option<CaseState> {
    use CaseState as S;
    match (action, from) {
        (Action::Assign, S::New | S::Reopened) => Some(S::Assigned),
        (Action::Assign, S::Assigned | S::InProgress | S::Escalated) => Some(from),
        (Action::Start, S::Assigned | S::Escalated | S::Reopened) => Some(S::InProgress),
        (Action::Escalate, S::New | S::Assigned | S::InProgress | S::Reopened) => Some(S::Escalated),
        (Action::Resolve, S::InProgress | S::Escalated) => Some(S::Resolved),
        (Action::Close, S::Resolved) => Some(S::Closed),
        (Action::Reopen, S::Resolved | S::Closed) => Some(S::Reopened),
        _ => None,
    }
}

/// A feedback case as callers see it (no verbatim: the answer's words stay on its touchpoint).
#[derive(Debug, Clone)]
pub struct FeedbackCase {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub rule_id: Uuid,
    pub trigger_touchpoint_id: Uuid,
    pub metric: FeedbackMetric,
    pub score: i16,
    pub answered_at: DateTime<Utc>,
    pub channel: Option<Channel>,
    pub stage: Option<JourneyStage>,
    pub state: CaseState,
    pub priority: Priority,
    pub team: String,
    pub owner: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub first_contact_due: DateTime<Utc>,
    pub resolution_due: DateTime<Utc>,
    pub first_contacted_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub breached_first_contact: bool,
    pub breached_resolution: bool,
    pub root_cause: Option<String>,
    pub outcome: Option<Outcome>,
    pub follow_up_touchpoint_id: Option<Uuid>,
    pub resurvey_touchpoint_id: Option<Uuid>,
    pub resurvey_score: Option<i16>,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<feedback_case::Model> for FeedbackCase {
    type Error = ApiError;

    fn try_from(row: feedback_case::Model) -> ApiResult<Self> {
        let unreadable =
            |what: &str| ApiError::internal(anyhow::anyhow!("feedback case {}: unreadable {what}", row.id));
        Ok(FeedbackCase {
            id: row.id,
            customer_id: row.customer_id,
            rule_id: row.rule_id,
            trigger_touchpoint_id: row.trigger_touchpoint_id,
            metric: FeedbackMetric::parse(&row.metric).ok_or_else(|| unreadable("metric"))?,
            score: row.score,
            answered_at: row.answered_at,
            channel: Channel::parse(&row.channel),
            stage: JourneyStage::parse(&row.stage),
            state: CaseState::parse(&row.state).ok_or_else(|| unreadable("state"))?,
            priority: Priority::parse(&row.priority).ok_or_else(|| unreadable("priority"))?,
            team: row.team,
            owner: row.owner,
            opened_at: row.opened_at,
            first_contact_due: row.first_contact_due,
            resolution_due: row.resolution_due,
            first_contacted_at: row.first_contacted_at,
            resolved_at: row.resolved_at,
            closed_at: row.closed_at,
            breached_first_contact: row.breached_first_contact,
            breached_resolution: row.breached_resolution,
            root_cause: row.root_cause_code,
            outcome: row.outcome.as_deref().and_then(Outcome::parse),
            follow_up_touchpoint_id: row.follow_up_touchpoint_id,
            resurvey_touchpoint_id: row.resurvey_touchpoint_id,
            resurvey_score: row.resurvey_score,
            version: row.version,
            updated_at: row.updated_at,
        })
    }
}

/// One entry of a case's history.
#[derive(Debug, Clone)]
pub struct CaseEvent {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub kind: Option<EventKind>,
    pub from: Option<CaseState>,
    pub to: Option<CaseState>,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub priority: Option<Priority>,
    pub deadline: Option<Deadline>,
    pub touchpoint_id: Option<Uuid>,
}

impl From<feedback_case_event::Model> for CaseEvent {
    fn from(row: feedback_case_event::Model) -> Self {
        CaseEvent {
            id: row.id,
            at: row.at,
            actor: row.actor,
            kind: EventKind::parse(&row.kind),
            from: row.from_state.as_deref().and_then(CaseState::parse),
            to: row.to_state.as_deref().and_then(CaseState::parse),
            reason: row.reason,
            note: row.note,
            owner: row.owner,
            team: row.team,
            priority: row.priority.as_deref().and_then(Priority::parse),
            deadline: row.deadline.as_deref().and_then(Deadline::parse),
            touchpoint_id: row.touchpoint_id,
        }
    }
}

/// An event about to be appended: everything but the id, tenant and case.
#[derive(Debug, Default)]
pub(crate) struct NewEvent<'a> {
    pub actor: &'a str,
    pub at: Option<DateTime<Utc>>,
    pub kind: Option<EventKind>,
    pub from: Option<CaseState>,
    pub to: Option<CaseState>,
    pub reason: Option<String>,
    pub note: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub priority: Option<Priority>,
    pub deadline: Option<Deadline>,
    pub touchpoint_id: Option<Uuid>,
}

/// Appends to a case's history (the only write its events ever get, erasure aside).
pub(crate) async fn append(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    case_id: Uuid,
    event: NewEvent<'_>,
) -> Result<(), DbErr> {
    let row = feedback_case_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        case_id: Set(case_id),
        at: Set(event.at.unwrap_or_else(Utc::now)),
        actor: Set(event.actor.chars().take(256).collect()),
        kind: Set(event.kind.unwrap_or(EventKind::StatusChanged).as_str().to_owned()),
        from_state: Set(event.from.map(|s| s.as_str().to_owned())),
        to_state: Set(event.to.map(|s| s.as_str().to_owned())),
        reason: Set(event.reason),
        note: Set(event.note),
        owner: Set(event.owner),
        team: Set(event.team),
        priority: Set(event.priority.map(|p| p.as_str().to_owned())),
        deadline: Set(event.deadline.map(|d| d.as_str().to_owned())),
        touchpoint_id: Set(event.touchpoint_id),
    };
    feedback_case_event::Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

fn open_key(customer: Uuid, rule: Uuid) -> String {
    format!("{customer}:{rule}")
}

/// The announcement of a committed change to a case, for `feedbackCaseChanged`.
pub(crate) fn announce(row: &feedback_case::Model, kind: EventKind, at: DateTime<Utc>) -> CaseChange {
    CaseChange {
        case_id: row.id,
        customer_id: row.customer_id,
        kind: kind.as_str().to_owned(),
        state: row.state.clone(),
        team: row.team.clone(),
        at,
    }
}

/// What a survey answer just did to the customer's cases, in the answer's transaction (after
/// `cx::answers::recorded`): every history entry the answer's touchpoint appended (CREATED, ANSWER_LINKED,
/// RESURVEYED), announced with the case's state. Two statements, the second only when the answer changed a case.
pub(crate) async fn changed_by_answer(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    customer_id: Uuid,
    touchpoint_id: Uuid,
) -> Result<Vec<CaseChange>, DbErr> {
    let of_customer = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.eq(customer_id))
        .select_only()
        .column(feedback_case::Column::Id)
        .into_query();
    let events = feedback_case_event::of_tenant(tenant)
        .filter(feedback_case_event::Column::TouchpointId.eq(touchpoint_id))
        .filter(feedback_case_event::Column::CaseId.in_subquery(of_customer))
        .order_by_asc(feedback_case_event::Column::Id)
        .all(conn)
        .await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let cases: std::collections::HashMap<Uuid, feedback_case::Model> = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::Id.is_in(events.iter().map(|e| e.case_id)))
        .all(conn)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    Ok(events.iter().filter_map(|e| Some(announce(cases.get(&e.case_id)?, EventKind::parse(&e.kind)?, e.at))).collect())
}

/// Whether a rule opens a case for this answer.
fn matches(rule: &feedback_rule::Model, answer: &cx_answer::Model) -> bool {
    let listed = |list: &serde_json::Value, value: &str| {
        list.as_array().is_none_or(|items| items.is_empty() || items.iter().any(|i| i.as_str() == Some(value)))
    };
    rule.enabled
        && rule.metric == answer.metric
        && (rule.score_min..=rule.score_max).contains(&answer.score)
        && listed(&rule.channels, &answer.channel)
        && listed(&rule.stages, &answer.stage)
}

/// What a recorded survey answer does to the closed loop, in the answer's transaction: it is linked as the
/// re-survey of the customer's latest earlier case of its metric that has been contacted, resolved or closed, and
/// each enabled rule it matches opens a case (deadlines from the rule), or, when the customer already has an open
/// case of that rule, is linked to it. Nothing happens for a customer whose processing is restricted (DOMAIN rule 3).
/// Whether the answer counts in the metrics does not matter: the follow-up is service, not analytics.
pub(crate) async fn on_answer(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    answer: &cx_answer::Model,
) -> Result<(), DbErr> {
    let states = policy::states_of(conn, tenant, &[answer.customer_id]).await?;
    if states.get(&answer.customer_id).is_none_or(|s| s.restricted) {
        return Ok(());
    }
    let now = Utc::now();
    link_resurvey(conn, tenant, answer, now).await?;
    let rules = feedback_rule::of_tenant(tenant)
        .filter(feedback_rule::Column::Metric.eq(answer.metric.as_str()))
        .filter(feedback_rule::Column::Enabled.eq(true))
        .order_by_asc(feedback_rule::Column::Id)
        .all(conn)
        .await?;
    for rule in rules.iter().filter(|r| matches(r, answer)) {
        let key = open_key(answer.customer_id, rule.id);
        let id = Uuid::now_v7();
        let row = feedback_case::ActiveModel {
            id: Set(id),
            tenant: Set(tenant.as_str().to_owned()),
            customer_id: Set(answer.customer_id),
            rule_id: Set(rule.id),
            trigger_touchpoint_id: Set(answer.touchpoint_id),
            metric: Set(answer.metric.clone()),
            score: Set(answer.score),
            answered_at: Set(answer.answered_at),
            channel: Set(answer.channel.clone()),
            stage: Set(answer.stage.clone()),
            state: Set(CaseState::New.as_str().to_owned()),
            priority: Set(rule.priority.clone()),
            team: Set(rule.team.clone()),
            owner: Set(None),
            opened_at: Set(now),
            first_contact_due: Set(now + chrono::Duration::seconds(rule.first_contact_secs)),
            resolution_due: Set(now + chrono::Duration::seconds(rule.resolution_secs)),
            first_contacted_at: Set(None),
            resolved_at: Set(None),
            closed_at: Set(None),
            breached_first_contact: Set(false),
            breached_resolution: Set(false),
            root_cause_code: Set(None),
            outcome: Set(None),
            follow_up_touchpoint_id: Set(None),
            resurvey_touchpoint_id: Set(None),
            resurvey_score: Set(None),
            open_key: Set(Some(key.clone())),
            version: Set(1),
            updated_at: Set(now),
        };
        // A concurrent or earlier open case of the same customer and rule wins; this answer is linked to it.
        let inserted = feedback_case::Entity::insert(row)
            .on_conflict(
                OnConflict::columns([feedback_case::Column::Tenant, feedback_case::Column::OpenKey])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
        let score = format!("{} {} (rule `{}`)", answer.metric.to_uppercase(), answer.score, rule.name);
        if inserted == 1 {
            let event = NewEvent {
                actor: SYSTEM,
                at: Some(now),
                kind: Some(EventKind::Created),
                to: Some(CaseState::New),
                reason: Some(format!("opened by {score}")),
                team: Some(rule.team.clone()),
                priority: Priority::parse(&rule.priority),
                touchpoint_id: Some(answer.touchpoint_id),
                ..Default::default()
            };
            append(conn, tenant, id, event).await?;
        } else if let Some(open) =
            feedback_case::of_tenant(tenant).filter(feedback_case::Column::OpenKey.eq(key)).one(conn).await?
        {
            let event = NewEvent {
                actor: SYSTEM,
                at: Some(now),
                kind: Some(EventKind::AnswerLinked),
                reason: Some(format!("another poor answer: {score}")),
                touchpoint_id: Some(answer.touchpoint_id),
                ..Default::default()
            };
            append(conn, tenant, open.id, event).await?;
        }
    }
    Ok(())
}

/// Links an answer as the re-survey of the customer's latest case of the same metric, answered before it, that
/// has been contacted, resolved or closed (a later re-survey replaces an earlier one; the history keeps both).
async fn link_resurvey(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    answer: &cx_answer::Model,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let followed_up = sea_orm::Condition::any()
        .add(feedback_case::Column::FirstContactedAt.is_not_null())
        .add(feedback_case::Column::State.is_in([CaseState::Resolved.as_str(), CaseState::Closed.as_str()]));
    let Some(case) = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.eq(answer.customer_id))
        .filter(feedback_case::Column::Metric.eq(answer.metric.as_str()))
        .filter(feedback_case::Column::AnsweredAt.lt(answer.answered_at))
        .filter(feedback_case::Column::TriggerTouchpointId.ne(answer.touchpoint_id))
        .filter(followed_up)
        .order_by_desc(feedback_case::Column::AnsweredAt)
        .order_by_desc(feedback_case::Column::Id)
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    feedback_case::update_of_tenant(tenant)
        .col_expr(feedback_case::Column::ResurveyTouchpointId, Expr::value(answer.touchpoint_id))
        .col_expr(feedback_case::Column::ResurveyScore, Expr::value(answer.score))
        .col_expr(feedback_case::Column::Version, Expr::col(feedback_case::Column::Version).add(1))
        .col_expr(feedback_case::Column::UpdatedAt, Expr::value(now))
        .filter(feedback_case::Column::Id.eq(case.id))
        .exec(conn)
        .await?;
    let event = NewEvent {
        actor: SYSTEM,
        at: Some(now),
        kind: Some(EventKind::Resurveyed),
        reason: Some(format!("re-survey: {} {}", answer.metric.to_uppercase(), answer.score)),
        touchpoint_id: Some(answer.touchpoint_id),
        ..Default::default()
    };
    append(conn, tenant, case.id, event).await
}

/// Whether a re-survey score shows the customer recovered: NPS promoter or passive (≥ 7), CSAT ≥ 4, CES ≥ 5.
pub fn recovered(metric: FeedbackMetric, score: i16) -> bool {
    match metric {
        FeedbackMetric::Nps => score >= 7,
        FeedbackMetric::Csat => score >= 4,
        FeedbackMetric::Ces => score >= 5,
    }
}

/// A change a caller asks of a case.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub reason: String,
    pub note: Option<String>,
    /// For `Assign`: the new owner (a subject) and, optionally, team.
    pub owner: Option<String>,
    pub team: Option<String>,
    /// For `Close`.
    pub root_cause: Option<String>,
    pub outcome: Option<Outcome>,
}

impl Change {
    pub fn new(action: Action, reason: String, note: Option<String>) -> Self {
        Change { action, reason, note, owner: None, team: None, root_cause: None, outcome: None }
    }
}

fn text(field: &str, value: Option<&str>, max: usize, required: bool) -> ApiResult<Option<String>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None if required => Err(ApiError::validation(field, "must not be empty")),
        None => Ok(None),
        Some(v) if v.chars().count() > max => Err(ApiError::validation(field, format!("at most {max} characters"))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// One of the caller's tenant's cases, as stored (`NOT_FOUND` for another tenant's).
async fn row_of(conn: &impl ConnectionTrait, tenant: &TenantId, id: Uuid) -> ApiResult<feedback_case::Model> {
    feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::Id.eq(id))
        .one(conn)
        .await?
        .ok_or_else(|| ApiError::not_found("feedback case"))
}

/// Applies a change: the move must be legal from the state read (`INVALID_TRANSITION` naming both states), and
/// the write is conditional on the version read, so of two concurrent changes one wins and the other is judged
/// again against the state the winner left. Needs `cx:write`; the history gets the caller as actor.
pub async fn change(caller: &Caller, svc: &Services, id: Uuid, change: Change) -> ApiResult<FeedbackCase> {
    caller.require(Scope::CxWrite)?;
    let tenant = caller.tenant();
    let reason = text("reason", Some(&change.reason), 2000, true)?;
    let note = text("note", change.note.as_deref(), 4000, false)?;
    let owner = text("owner", change.owner.as_deref(), 256, change.action == Action::Assign)?;
    let team = text("team", change.team.as_deref(), 100, false)?;
    if change.action == Action::Close {
        let code = text("rootCause", change.root_cause.as_deref(), 64, true)?.unwrap_or_default();
        let known = feedback_root_cause::of_tenant(tenant)
            .filter(feedback_root_cause::Column::Code.eq(code.as_str()))
            .one(svc.db.conn())
            .await?;
        if known.is_none() {
            return Err(ApiError::validation("rootCause", format!("no root cause `{code}`: define it first")));
        }
        if change.outcome.is_none() {
            return Err(ApiError::validation("outcome", "closing needs an outcome"));
        }
    }
    for _ in 0..5 {
        let txn = svc.db.begin_write().await?;
        let row = row_of(&txn, tenant, id).await?;
        let from = CaseState::parse(&row.state)
            .ok_or_else(|| ApiError::internal(anyhow::anyhow!("feedback case {id}: unreadable state")))?;
        let to = next(from, change.action)
            .ok_or(ApiError::InvalidTransition { from: from.as_str(), to: change.action.target().as_str() })?;
        if change.action == Action::Start && row.owner.is_none() {
            return Err(ApiError::validation("owner", "assign the case before starting it"));
        }
        let now = Utc::now();
        let mut update = feedback_case::update_of_tenant(tenant)
            .col_expr(feedback_case::Column::State, Expr::value(to.as_str()))
            .col_expr(feedback_case::Column::Version, Expr::value(row.version + 1))
            .col_expr(feedback_case::Column::UpdatedAt, Expr::value(now))
            .filter(feedback_case::Column::Id.eq(id))
            .filter(feedback_case::Column::Version.eq(row.version));
        let mut event = NewEvent {
            actor: caller.subject(),
            at: Some(now),
            kind: Some(EventKind::StatusChanged),
            from: Some(from),
            to: Some(to),
            reason: reason.clone(),
            note: note.clone(),
            ..Default::default()
        };
        match change.action {
            Action::Assign => {
                event.kind = Some(EventKind::Assigned);
                event.owner = owner.clone();
                update = update.col_expr(feedback_case::Column::Owner, Expr::value(owner.clone()));
                if let Some(team) = &team {
                    event.team = Some(team.clone());
                    update = update.col_expr(feedback_case::Column::Team, Expr::value(team.clone()));
                }
            }
            Action::Start | Action::Escalate => {}
            Action::Resolve => update = update.col_expr(feedback_case::Column::ResolvedAt, Expr::value(now)),
            Action::Close => {
                event.kind = Some(EventKind::Closed);
                let outcome = change.outcome.map(|o| o.as_str().to_owned());
                update = update
                    .col_expr(feedback_case::Column::ClosedAt, Expr::value(now))
                    .col_expr(feedback_case::Column::RootCauseCode, Expr::value(change.root_cause.clone()))
                    .col_expr(feedback_case::Column::Outcome, Expr::value(outcome))
                    .col_expr(feedback_case::Column::OpenKey, Expr::value(None::<String>));
                let code = change.root_cause.as_deref().map(str::trim).unwrap_or_default();
                let outcome = change.outcome.map_or("", |o| o.as_str());
                event.note = Some(match &note {
                    Some(note) => format!("root cause {code}, outcome {outcome}: {note}"),
                    None => format!("root cause {code}, outcome {outcome}"),
                });
            }
            Action::Reopen => {
                event.kind = Some(EventKind::Reopened);
                let key = open_key(row.customer_id, row.rule_id);
                if from == CaseState::Closed {
                    let taken = feedback_case::of_tenant(tenant)
                        .filter(feedback_case::Column::OpenKey.eq(key.as_str()))
                        .one(&txn)
                        .await?;
                    if taken.is_some() {
                        return Err(ApiError::Conflict(
                            "the customer has another open case of this rule; work that one instead".into(),
                        ));
                    }
                }
                update = update
                    .col_expr(feedback_case::Column::ResolvedAt, Expr::value(None::<DateTime<Utc>>))
                    .col_expr(feedback_case::Column::ClosedAt, Expr::value(None::<DateTime<Utc>>))
                    .col_expr(feedback_case::Column::RootCauseCode, Expr::value(None::<String>))
                    .col_expr(feedback_case::Column::Outcome, Expr::value(None::<String>))
                    .col_expr(feedback_case::Column::OpenKey, Expr::value(key));
            }
        }
        let updated = match update.exec(&txn).await {
            Ok(done) => done.rows_affected,
            Err(err) if ApiError::is_unique_violation(&err) => {
                return Err(ApiError::Conflict("the customer has another open case of this rule".into()));
            }
            Err(err) => return Err(err.into()),
        };
        if updated == 0 {
            // Another change won the race: judge this one again against what it left.
            txn.rollback().await?;
            continue;
        }
        let kind = event.kind.unwrap_or(EventKind::StatusChanged);
        append(&txn, tenant, id, event).await?;
        let row = row_of(&txn, tenant, id).await?;
        txn.commit().await?;
        changes::committed(svc, tenant, Changed::new().cases([announce(&row, kind, now)])).await;
        return row.try_into();
    }
    Err(ApiError::Conflict("the case keeps changing; try again".into()))
}

/// The follow-up contact as the caller gives it.
#[derive(Debug, Clone)]
pub struct ContactInput {
    pub channel: Channel,
    pub kind: TouchpointType,
    pub note: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
}

/// The touchpoint types a follow-up contact may be.
pub const CONTACT_TYPES: [TouchpointType; 4] = [
    TouchpointType::SupportCall,
    TouchpointType::SupportChat,
    TouchpointType::SupportTicket,
    TouchpointType::EmailSent,
];

/// Records the follow-up contact of a case: a touchpoint on the customer's journey (stage SUPPORT, written through
/// the ingestion like any other), linked to the case as its follow-up, the first contact time set, a CONTACTED
/// event appended. Needs `cx:write`.
///
/// The contact goes through the policy decision point for the service purpose (`support`): a customer whose
/// processing is restricted is refused (`CONSENT_REQUIRED`, `PROCESSING_RESTRICTED`). A marketing consent denied or
/// withdrawn, for that channel or at all, does not refuse it: following up the customer's own complaint is service
/// under the tenant's legitimate interest, not marketing, and nothing else is sent on that ground.
pub async fn record_contact(caller: &Caller, svc: &Services, id: Uuid, input: ContactInput) -> ApiResult<FeedbackCase> {
    caller.require(Scope::CxWrite)?;
    let tenant = caller.tenant();
    if !CONTACT_TYPES.contains(&input.kind) {
        let names: Vec<&str> = CONTACT_TYPES.iter().map(|t| t.as_str()).collect();
        return Err(ApiError::validation("type", format!("a follow-up contact is one of {}", names.join(", "))));
    }
    let note = text("note", input.note.as_deref(), 4000, false)?;
    let now = Utc::now();
    let occurred_at = input.occurred_at.unwrap_or(now).trunc_subsecs(6);
    let conn = svc.db.conn();
    let row = row_of(conn, tenant, id).await?;
    if row.state == CaseState::Closed.as_str() {
        return Err(ApiError::validation("id", "the case is CLOSED: reopen it before contacting the customer"));
    }
    let customer = crate::profiles::customers::current_id(conn, tenant, row.customer_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("customer {}", row.customer_id)))?;
    let mut states = policy::states_of(conn, tenant, &[customer]).await?;
    let state = states.remove(&customer).ok_or_else(|| ApiError::not_found(format!("customer {customer}")))?;
    let service = Caller::new(tenant.clone(), caller.subject().to_owned(), BTreeSet::new(), Purpose::parse("support")?);
    policy::decide(&service, customer, &state, DataCategory::BehaviouralHistory, now)?;

    let writer = Caller::for_job(tenant.clone(), caller.subject().to_owned(), [Scope::TouchpointsWrite].into());
    let touchpoint = TouchpointInput {
        customer_id: Some(customer),
        identities: Vec::new(),
        channel: input.channel,
        kind: input.kind,
        stage: Some(JourneyStage::Support),
        occurred_at,
        source: "feedback-case".to_owned(),
        idempotency_key: format!("feedback-case:{id}:{}", Uuid::now_v7()),
        properties: Some(serde_json::json!({ "feedbackCaseId": id })),
        value: None,
        currency: None,
        feedback: None,
        consents: Vec::new(),
        consent_context: None,
    };
    let touchpoint_id = match ingest::record_touchpoints(&writer, svc, vec![touchpoint]).await?.pop() {
        Some(ItemOutcome::Created(tp) | ItemOutcome::Duplicate(tp)) => tp.id,
        Some(ItemOutcome::Rejected(err)) => return Err(err),
        Some(ItemOutcome::Suppressed) | None => return Err(ApiError::not_found(format!("customer {customer}"))),
    };
    for _ in 0..5 {
        let txn = svc.db.begin_write().await?;
        let row = row_of(&txn, tenant, id).await?;
        let first = row.first_contacted_at.map_or(occurred_at, |at| Ord::min(at, occurred_at));
        let updated = feedback_case::update_of_tenant(tenant)
            .col_expr(feedback_case::Column::FollowUpTouchpointId, Expr::value(touchpoint_id))
            .col_expr(feedback_case::Column::FirstContactedAt, Expr::value(first))
            .col_expr(feedback_case::Column::Version, Expr::value(row.version + 1))
            .col_expr(feedback_case::Column::UpdatedAt, Expr::value(now))
            .filter(feedback_case::Column::Id.eq(id))
            .filter(feedback_case::Column::Version.eq(row.version))
            .exec(&txn)
            .await?
            .rows_affected;
        if updated == 0 {
            txn.rollback().await?;
            continue;
        }
        let event = NewEvent {
            actor: caller.subject(),
            at: Some(now),
            kind: Some(EventKind::Contacted),
            reason: Some(format!("{} on {}", input.kind.as_str(), input.channel.as_str())),
            note,
            touchpoint_id: Some(touchpoint_id),
            ..Default::default()
        };
        append(&txn, tenant, id, event).await?;
        let row = row_of(&txn, tenant, id).await?;
        txn.commit().await?;
        changes::committed(svc, tenant, Changed::new().cases([announce(&row, EventKind::Contacted, now)])).await;
        svc.access_log.record(caller, [row.customer_id], AccessCategory::FeedbackCase);
        return row.try_into();
    }
    Err(ApiError::Conflict("the case keeps changing; try again".into()))
}

/// One case of the caller's tenant. Needs `cx:read`; the read is access-logged under the customer.
pub async fn get(caller: &Caller, svc: &Services, id: Uuid) -> ApiResult<FeedbackCase> {
    caller.require(Scope::CxRead)?;
    let row = row_of(svc.db.conn(), caller.tenant(), id).await?;
    svc.access_log.record(caller, [row.customer_id], AccessCategory::FeedbackCase);
    row.try_into()
}

/// Which cases a list holds.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub state: Option<CaseState>,
    pub team: Option<String>,
    pub owner: Option<String>,
    pub customer_id: Option<Uuid>,
    /// Cases with a breached deadline (either), or without.
    pub breached: Option<bool>,
}

/// The tenant's cases, newest first, keyset-paged on `(tenant, id)`. Needs `cx:read`; every case served is
/// access-logged under its customer.
pub async fn list(
    caller: &Caller,
    svc: &Services,
    filter: CaseFilter,
    page: PageRequest,
) -> ApiResult<Page<FeedbackCase>> {
    caller.require(Scope::CxRead)?;
    let mut query =
        feedback_case::of_tenant(caller.tenant()).order_by_desc(feedback_case::Column::Id).limit(page.first as u64 + 1);
    if let Some(after) = page.after {
        query = query.filter(feedback_case::Column::Id.lt(after));
    }
    if let Some(state) = filter.state {
        query = query.filter(feedback_case::Column::State.eq(state.as_str()));
    }
    if let Some(team) = filter.team {
        query = query.filter(feedback_case::Column::Team.eq(team));
    }
    if let Some(owner) = filter.owner {
        query = query.filter(feedback_case::Column::Owner.eq(owner));
    }
    if let Some(customer) = filter.customer_id {
        query = query.filter(feedback_case::Column::CustomerId.eq(customer));
    }
    match filter.breached {
        Some(true) => {
            query = query.filter(
                sea_orm::Condition::any()
                    .add(feedback_case::Column::BreachedFirstContact.eq(true))
                    .add(feedback_case::Column::BreachedResolution.eq(true)),
            );
        }
        Some(false) => {
            query = query
                .filter(feedback_case::Column::BreachedFirstContact.eq(false))
                .filter(feedback_case::Column::BreachedResolution.eq(false));
        }
        None => {}
    }
    let mut rows = query.all(svc.db.conn()).await?;
    let has_next_page = rows.len() > page.first;
    rows.truncate(page.first);
    svc.access_log.record(caller, rows.iter().map(|r| r.customer_id), AccessCategory::FeedbackCase);
    Ok(Page {
        items: rows.into_iter().map(FeedbackCase::try_from).collect::<ApiResult<_>>()?,
        has_next_page,
        has_previous_page: page.after.is_some(),
    })
}

/// The tenant's case changes as they commit, optionally only those of a team or leaving a case in a state. Needs
/// `cx:read`. Ids, kinds and states only: reading the case itself goes through [`get`] (access-logged).
pub async fn watch(
    caller: &Caller,
    svc: &Services,
    team: Option<String>,
    state: Option<CaseState>,
) -> ApiResult<futures_util::stream::BoxStream<'static, CaseChange>> {
    use futures_util::StreamExt;
    caller.require(Scope::CxRead)?;
    let stream = svc.pubsub.subscribe(&changes::cases_topic(caller.tenant())).await.map_err(|err| {
        tracing::error!(error = %err, "subscribing to feedback-case changes failed");
        ApiError::Unavailable("feedback-case notifications are unavailable, try again".into())
    })?;
    Ok(stream
        .filter_map(move |payload| {
            let wanted = serde_json::from_str::<CaseChange>(&payload).ok().filter(|change| {
                team.as_ref().is_none_or(|t| *t == change.team) && state.is_none_or(|s| s.as_str() == change.state)
            });
            async move { wanted }
        })
        .boxed())
}

/// Most history entries served per case (the latest ones).
pub const MAX_HISTORY: usize = 1000;

/// The histories of many cases at once (the loader behind `FeedbackCase.history`): one window statement per 500
/// cases; each case's latest [`MAX_HISTORY`] entries, oldest first. Every case asked for is in the answer. Needs
/// `cx:read`.
pub async fn history_of_many(
    caller: &Caller,
    svc: &Services,
    case_ids: &[Uuid],
) -> ApiResult<std::collections::HashMap<Uuid, Vec<CaseEvent>>> {
    use crate::storage::window::{TopPerCustomer, top_per_customer};
    caller.require(Scope::CxRead)?;
    let query = TopPerCustomer {
        table: "feedback_case_events",
        key_columns: &["case_id"],
        filter: None,
        order_desc: &["id"],
        limit: MAX_HISTORY,
    };
    let by_case = top_per_customer::<feedback_case_event::Entity>(&svc.db, caller.tenant(), &query, case_ids).await?;
    Ok(by_case.into_iter().map(|(id, rows)| (id, rows.into_iter().rev().map(CaseEvent::from).collect())).collect())
}

/// The first page (newest first, `first` cases) of many customers' cases, in one window statement per 500
/// customers (the loader behind a list's `Customer.feedbackCases`). Needs `cx:read`; every case served is
/// access-logged under its customer.
pub async fn first_pages_for(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
    first: usize,
) -> ApiResult<std::collections::HashMap<Uuid, Page<FeedbackCase>>> {
    use crate::storage::window::{TopPerCustomer, top_per_customer};
    caller.require(Scope::CxRead)?;
    let query = TopPerCustomer {
        table: "feedback_cases",
        key_columns: &["customer_id"],
        filter: None,
        order_desc: &["id"],
        limit: first + 1,
    };
    let by_customer = top_per_customer::<feedback_case::Entity>(&svc.db, caller.tenant(), &query, customer_ids).await?;
    svc.access_log.record(
        caller,
        by_customer.iter().filter(|(_, rows)| !rows.is_empty()).map(|(id, _)| *id),
        AccessCategory::FeedbackCase,
    );
    by_customer
        .into_iter()
        .map(|(id, mut rows)| {
            let has_next_page = rows.len() > first;
            rows.truncate(first);
            let items = rows.into_iter().map(FeedbackCase::try_from).collect::<ApiResult<_>>()?;
            Ok((id, Page { items, has_next_page, has_previous_page: false }))
        })
        .collect()
}

/// In a merge's transaction: `merged`'s cases move to `survivor`; their ids are returned for the merge's record.
///
/// A moved open case keeps its open key (`merged:rule`), so it never collides with an open case the survivor has
/// of the same rule: both stay open, nothing is closed automatically, and later answers link to the survivor's
/// own. When the survivor has no open case of that rule, the moved case takes the survivor's key
/// (`survivor:rule`), so later answers link to it instead of opening a second case.
pub(crate) async fn follow_merge(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    survivor: Uuid,
    merged: Uuid,
) -> Result<Vec<Uuid>, DbErr> {
    let moving = feedback_case::of_tenant(tenant).filter(feedback_case::Column::CustomerId.eq(merged)).all(txn).await?;
    if moving.is_empty() {
        return Ok(Vec::new());
    }
    let held: BTreeSet<String> = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.eq(survivor))
        .filter(feedback_case::Column::OpenKey.is_not_null())
        .select_only()
        .column(feedback_case::Column::OpenKey)
        .into_tuple::<String>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let ids: Vec<Uuid> = moving.iter().map(|c| c.id).collect();
    for chunk in ids.chunks(500) {
        feedback_case::update_of_tenant(tenant)
            .col_expr(feedback_case::Column::CustomerId, Expr::value(survivor))
            .filter(feedback_case::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    for case in moving.iter().filter(|c| c.open_key.is_some()) {
        let key = open_key(survivor, case.rule_id);
        if !held.contains(&key) {
            feedback_case::update_of_tenant(tenant)
                .col_expr(feedback_case::Column::OpenKey, Expr::value(key))
                .filter(feedback_case::Column::Id.eq(case.id))
                .exec(txn)
                .await?;
        }
    }
    Ok(ids)
}

/// In an unmerge's transaction: the cases the merge moved (`ids`) go back to `restored`, and those still open
/// take its open key again (cases opened on the survivor after the merge stay with it).
pub(crate) async fn follow_unmerge(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    ids: &[Uuid],
    restored: Uuid,
) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    for chunk in ids.chunks(500) {
        feedback_case::update_of_tenant(tenant)
            .col_expr(feedback_case::Column::CustomerId, Expr::value(restored))
            .filter(feedback_case::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    let open: Vec<(Uuid, Uuid, String)> = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.eq(restored))
        .filter(feedback_case::Column::OpenKey.is_not_null())
        .select_only()
        .column(feedback_case::Column::Id)
        .column(feedback_case::Column::RuleId)
        .column(feedback_case::Column::OpenKey)
        .into_tuple()
        .all(txn)
        .await?;
    let mut held: BTreeSet<String> = open.iter().map(|(_, _, key)| key.clone()).collect();
    for (id, rule, key) in open {
        let wanted = open_key(restored, rule);
        // Two open cases of one rule (both sides had one): the other keeps the key, this one its own.
        if key != wanted && held.insert(wanted.clone()) {
            feedback_case::update_of_tenant(tenant)
                .col_expr(feedback_case::Column::OpenKey, Expr::value(wanted))
                .filter(feedback_case::Column::Id.eq(id))
                .exec(txn)
                .await?;
        }
    }
    Ok(())
}

/// Deletes the cases of erased customers and their histories (in the erasure's transaction). Returns how many
/// cases went.
pub(crate) async fn erase(txn: &DatabaseTransaction, tenant: &TenantId, customers: &[Uuid]) -> Result<u64, DbErr> {
    let ids: Vec<Uuid> = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.is_in(customers.iter().copied()))
        .select_only()
        .column(feedback_case::Column::Id)
        .into_tuple()
        .all(txn)
        .await?;
    for chunk in ids.chunks(500) {
        feedback_case_event::delete_of_tenant(tenant)
            .filter(feedback_case_event::Column::CaseId.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?;
    }
    let gone = feedback_case::delete_of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.is_in(customers.iter().copied()))
        .exec(txn)
        .await?;
    Ok(gone.rows_affected)
}

/// The cases of a person (all their ids) with their histories, for the export.
pub(crate) async fn export(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    customers: &[Uuid],
) -> Result<Vec<serde_json::Value>, DbErr> {
    let cases = feedback_case::of_tenant(tenant)
        .filter(feedback_case::Column::CustomerId.is_in(customers.iter().copied()))
        .order_by_asc(feedback_case::Column::Id)
        .all(conn)
        .await?;
    let events = feedback_case_event::of_tenant(tenant)
        .filter(feedback_case_event::Column::CaseId.is_in(cases.iter().map(|c| c.id)))
        .order_by_asc(feedback_case_event::Column::Id)
        .all(conn)
        .await?;
    Ok(cases
        .iter()
        .map(|c| {
            serde_json::json!({
                "id": c.id, "customerId": c.customer_id, "triggerTouchpointId": c.trigger_touchpoint_id,
                "metric": c.metric, "score": c.score, "answeredAt": c.answered_at, "channel": c.channel,
                "stage": c.stage, "state": c.state, "priority": c.priority, "team": c.team, "owner": c.owner,
                "openedAt": c.opened_at, "firstContactDue": c.first_contact_due, "resolutionDue": c.resolution_due,
                "firstContactedAt": c.first_contacted_at, "resolvedAt": c.resolved_at, "closedAt": c.closed_at,
                "breachedFirstContact": c.breached_first_contact, "breachedResolution": c.breached_resolution,
                "rootCause": c.root_cause_code, "outcome": c.outcome, "followUpTouchpointId": c.follow_up_touchpoint_id,
                "resurveyTouchpointId": c.resurvey_touchpoint_id, "resurveyScore": c.resurvey_score,
                "history": events.iter().filter(|e| e.case_id == c.id).map(|e| serde_json::json!({
                    "at": e.at, "actor": e.actor, "kind": e.kind, "from": e.from_state, "to": e.to_state,
                    "reason": e.reason, "note": e.note, "owner": e.owner, "team": e.team, "priority": e.priority,
                    "deadline": e.deadline, "touchpointId": e.touchpoint_id,
                })).collect::<Vec<_>>(),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_machine_allows_exactly_its_moves() {
        use CaseState as S;
        assert_eq!(next(S::New, Action::Assign), Some(S::Assigned));
        assert_eq!(next(S::Assigned, Action::Start), Some(S::InProgress));
        assert_eq!(next(S::InProgress, Action::Escalate), Some(S::Escalated));
        assert_eq!(next(S::Escalated, Action::Start), Some(S::InProgress));
        assert_eq!(next(S::Escalated, Action::Resolve), Some(S::Resolved));
        assert_eq!(next(S::Resolved, Action::Close), Some(S::Closed));
        assert_eq!(next(S::Closed, Action::Reopen), Some(S::Reopened));
        assert_eq!(next(S::Reopened, Action::Start), Some(S::InProgress));
        assert_eq!(next(S::New, Action::Resolve), None);
        assert_eq!(next(S::New, Action::Close), None);
        assert_eq!(next(S::InProgress, Action::Close), None);
        assert_eq!(next(S::Closed, Action::Assign), None);
        assert_eq!(next(S::New, Action::Reopen), None);
    }

    #[test]
    fn priority_rises_to_urgent_and_stays() {
        assert_eq!(Priority::Low.raised(), Priority::Normal);
        assert_eq!(Priority::High.raised(), Priority::Urgent);
        assert_eq!(Priority::Urgent.raised(), Priority::Urgent);
    }
}
