//! Feedback-case resolvers (the closed loop): rules and root causes, the case lifecycle, the follow-up contact,
//! reads and stats. Every rule lives in `cx::cases`.
use std::sync::Arc;

use async_graphql::{
    Context, ErrorExtensions, InputObject, Object, SimpleObject, Subscription,
    connection::{Connection, Edge},
    dataloader::DataLoader,
};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::{
    loader,
    loaders::{CaseHistoryLoader, InList},
    request, session,
    views::CustomerView,
};
use crate::{
    changes::CaseChange,
    cx::cases::{
        self, Action, CaseEvent, CaseFilter, CaseState, Change, ContactInput, Deadline, EventKind, FeedbackCase,
        Outcome, Priority,
        rules::{self, FeedbackRule, RootCause, RuleInput},
        stats::{self, CaseStats, RootCauseCount},
    },
    error::{ApiError, GqlResult},
    pagination::{Page, PageRequest, encode_cursor},
    privacy::Disclosure,
    profiles::customers,
    touchpoints::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
};

/// Which survey answers open a feedback case, and how the case is handled.
pub struct FeedbackRuleView(FeedbackRule);

#[Object(name = "FeedbackRule")]
impl FeedbackRuleView {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn metric(&self) -> FeedbackMetric {
        self.0.metric
    }
    /// The lowest score that opens a case.
    async fn score_min(&self) -> i32 {
        self.0.score_min.into()
    }
    /// The highest score that opens a case.
    async fn score_max(&self) -> i32 {
        self.0.score_max.into()
    }
    /// The channels the answer must come from; empty: any.
    async fn channels(&self) -> &[Channel] {
        &self.0.channels
    }
    /// The journey stages the answer must sit in; empty: any.
    async fn stages(&self) -> &[JourneyStage] {
        &self.0.stages
    }
    async fn priority(&self) -> Priority {
        self.0.priority
    }
    async fn team(&self) -> &str {
        &self.0.team
    }
    async fn first_contact_within_seconds(&self) -> i64 {
        self.0.first_contact_secs
    }
    async fn resolution_within_seconds(&self) -> i64 {
        self.0.resolution_secs
    }
    async fn enabled(&self) -> bool {
        self.0.enabled
    }
    /// Moves with every change of the rule.
    async fn version(&self) -> i32 {
        self.0.version
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    async fn updated_by(&self) -> &str {
        &self.0.updated_by
    }
}

/// A root cause of the tenant's two-level taxonomy.
#[derive(SimpleObject)]
#[graphql(name = "FeedbackRootCause")]
pub struct RootCauseView {
    code: String,
    label: String,
    /// The top-level cause this one refines.
    parent: Option<String>,
}

impl From<RootCause> for RootCauseView {
    fn from(c: RootCause) -> Self {
        RootCauseView { code: c.code, label: c.label, parent: c.parent }
    }
}

/// The follow-up of one poor survey answer. The answer's verbatim stays on its touchpoint. Holds the cases its
/// history loads with: a case read alone (`None`) reads its history directly, so a long-lived WebSocket connection
/// (whose loaders live as long as it does) never serves a history its loader read earlier.
pub struct FeedbackCaseView(FeedbackCase, Option<Arc<[Uuid]>>);

impl FeedbackCaseView {
    fn one(case: FeedbackCase) -> Self {
        FeedbackCaseView(case, None)
    }

    /// The views of a page of cases, which load their histories together with the cases of `list` (the page's own
    /// cases when `None`).
    fn list(cases: Vec<FeedbackCase>, list: Option<Arc<[Uuid]>>) -> Vec<Self> {
        let list: Arc<[Uuid]> = list.unwrap_or_else(|| cases.iter().map(|c| c.id).collect());
        cases.into_iter().map(|case| FeedbackCaseView(case, Some(list.clone()))).collect()
    }
}

/// A page of cases as a connection, newest first (cursors are case ids); `loaded_with`: the cases whose histories
/// load with these (a list of customers' cases), the page's own when `None`.
pub(super) fn connection(
    page: Page<FeedbackCase>,
    loaded_with: Option<Arc<[Uuid]>>,
) -> Connection<String, FeedbackCaseView> {
    let mut connection = Connection::new(page.has_previous_page, page.has_next_page);
    let views = FeedbackCaseView::list(page.items, loaded_with);
    connection.edges.extend(views.into_iter().map(|c| Edge::new(encode_cursor(c.0.id), c)));
    connection
}

#[Object(name = "FeedbackCase")]
impl FeedbackCaseView {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    /// The customer the case belongs to now (cases follow merges).
    async fn customer_id(&self) -> Uuid {
        self.0.customer_id
    }
    /// The customer, read as `Query.customer` reads it (needs `profiles:read`; `null` with the error otherwise).
    /// One profile read per case: select `customerId` for long lists.
    async fn customer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CustomerView>> {
        let rc = request(ctx)?;
        let profile =
            customers::read_profile(&rc.caller, &rc.services, session(ctx)?, self.0.customer_id).await.gql()?;
        Ok(Some(CustomerView::read(profile, Disclosure::for_caller(&rc.caller))))
    }
    async fn rule_id(&self) -> Uuid {
        self.0.rule_id
    }
    /// The SURVEY_RESPONSE touchpoint whose answer opened the case.
    async fn trigger_touchpoint_id(&self) -> Uuid {
        self.0.trigger_touchpoint_id
    }
    async fn metric(&self) -> FeedbackMetric {
        self.0.metric
    }
    async fn score(&self) -> i32 {
        self.0.score.into()
    }
    async fn answered_at(&self) -> DateTime<Utc> {
        self.0.answered_at
    }
    async fn channel(&self) -> Option<Channel> {
        self.0.channel
    }
    async fn stage(&self) -> Option<JourneyStage> {
        self.0.stage
    }
    async fn state(&self) -> CaseState {
        self.0.state
    }
    async fn priority(&self) -> Priority {
        self.0.priority
    }
    async fn team(&self) -> &str {
        &self.0.team
    }
    /// The subject working the case.
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    async fn opened_at(&self) -> DateTime<Utc> {
        self.0.opened_at
    }
    async fn first_contact_due(&self) -> DateTime<Utc> {
        self.0.first_contact_due
    }
    async fn resolution_due(&self) -> DateTime<Utc> {
        self.0.resolution_due
    }
    async fn first_contacted_at(&self) -> Option<DateTime<Utc>> {
        self.0.first_contacted_at
    }
    async fn resolved_at(&self) -> Option<DateTime<Utc>> {
        self.0.resolved_at
    }
    async fn closed_at(&self) -> Option<DateTime<Utc>> {
        self.0.closed_at
    }
    /// Whether a deadline passed unmet (either).
    async fn breached(&self) -> bool {
        self.0.breached_first_contact || self.0.breached_resolution
    }
    async fn breached_first_contact(&self) -> bool {
        self.0.breached_first_contact
    }
    async fn breached_resolution(&self) -> bool {
        self.0.breached_resolution
    }
    /// The root cause code the case was closed with.
    async fn root_cause(&self) -> Option<&str> {
        self.0.root_cause.as_deref()
    }
    async fn outcome(&self) -> Option<Outcome> {
        self.0.outcome
    }
    /// The touchpoint of the latest follow-up contact.
    async fn follow_up_touchpoint_id(&self) -> Option<Uuid> {
        self.0.follow_up_touchpoint_id
    }
    /// The answer given after the follow-up, which measures recovery.
    async fn resurvey_touchpoint_id(&self) -> Option<Uuid> {
        self.0.resurvey_touchpoint_id
    }
    async fn resurvey_score(&self) -> Option<i32> {
        self.0.resurvey_score.map(i32::from)
    }
    /// Moves with every change of the case.
    async fn version(&self) -> i32 {
        self.0.version
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// Everything that happened to the case, oldest first (the latest 1000 entries). A page of cases loads its
    /// histories in one query.
    async fn history(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<FeedbackCaseEventView>> {
        let events = match &self.1 {
            Some(list) => {
                let loader = loader::<DataLoader<CaseHistoryLoader>>(ctx)?;
                let key = InList { key: self.0.id, list: list.clone() };
                loader.load_one(key).await.map_err(|e| e.as_ref().extend())?.unwrap_or_default()
            }
            None => {
                let rc = request(ctx)?;
                let mut found = cases::history_of_many(&rc.caller, &rc.services, &[self.0.id]).await.gql()?;
                found.remove(&self.0.id).unwrap_or_default()
            }
        };
        Ok(events.into_iter().map(FeedbackCaseEventView).collect())
    }
}

/// One entry of a case's append-only history.
pub struct FeedbackCaseEventView(CaseEvent);

#[Object(name = "FeedbackCaseEvent")]
impl FeedbackCaseEventView {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The caller's subject, or `system` (a rule, the sweeper).
    async fn actor(&self) -> &str {
        &self.0.actor
    }
    async fn kind(&self) -> Option<EventKind> {
        self.0.kind
    }
    async fn from(&self) -> Option<CaseState> {
        self.0.from
    }
    async fn to(&self) -> Option<CaseState> {
        self.0.to
    }
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }
    async fn owner(&self) -> Option<&str> {
        self.0.owner.as_deref()
    }
    async fn team(&self) -> Option<&str> {
        self.0.team.as_deref()
    }
    async fn priority(&self) -> Option<Priority> {
        self.0.priority
    }
    /// For SLA_BREACHED: which deadline.
    async fn deadline(&self) -> Option<Deadline> {
        self.0.deadline
    }
    /// The contact, the linked answer or the re-survey.
    async fn touchpoint_id(&self) -> Option<Uuid> {
        self.0.touchpoint_id
    }
}

#[derive(SimpleObject)]
#[graphql(name = "FeedbackCaseStateCount")]
pub struct StateCountView {
    state: CaseState,
    count: u64,
}

#[derive(SimpleObject)]
#[graphql(name = "FeedbackRootCauseCount")]
pub struct RootCauseCountView {
    code: String,
    label: String,
    count: u64,
    /// Of the closed cases with a root cause, in percent.
    share: f64,
}

impl From<RootCauseCount> for RootCauseCountView {
    fn from(c: RootCauseCount) -> Self {
        RootCauseCountView { code: c.code, label: c.label, count: c.count, share: c.share }
    }
}

/// The root-cause Pareto of the closed cases opened by answers from one channel.
#[derive(SimpleObject)]
#[graphql(name = "FeedbackRootCausesOfChannel")]
pub struct RootCausesOfChannelView {
    channel: Channel,
    /// Most frequent first; `share` is within the channel.
    root_causes: Vec<RootCauseCountView>,
}

/// The root-cause Pareto of the closed cases opened by answers in one journey stage.
#[derive(SimpleObject)]
#[graphql(name = "FeedbackRootCausesOfStage")]
pub struct RootCausesOfStageView {
    stage: JourneyStage,
    /// Most frequent first; `share` is within the stage.
    root_causes: Vec<RootCauseCountView>,
}

fn views(counts: Vec<RootCauseCount>) -> Vec<RootCauseCountView> {
    counts.into_iter().map(RootCauseCountView::from).collect()
}

/// How the closed loop performed over the cases opened in a window.
#[derive(SimpleObject)]
#[graphql(name = "FeedbackCaseStats")]
pub struct CaseStatsView {
    opened: u64,
    by_state: Vec<StateCountView>,
    /// Seconds from opening to first contact (median, p90), over the cases contacted.
    first_contact_seconds_p50: Option<f64>,
    first_contact_seconds_p90: Option<f64>,
    /// Seconds from opening to closing (median, p90), over the cases closed.
    close_seconds_p50: Option<f64>,
    close_seconds_p90: Option<f64>,
    /// Percent of the cases whose first-contact deadline is decided that were contacted in time.
    first_contact_within_sla: Option<f64>,
    /// Percent of the cases whose resolution deadline is decided that were resolved in time.
    resolution_within_sla: Option<f64>,
    resurveyed: u64,
    /// Re-surveyed customers who recovered: NPS 7–10, CSAT 4–5, CES 5–7.
    recovered: u64,
    /// `recovered / resurveyed`, in percent.
    recovery_rate: Option<f64>,
    /// Closed cases per root cause, most frequent first.
    root_causes: Vec<RootCauseCountView>,
    /// The Pareto cut by the channel of the answer that opened each case.
    root_causes_by_channel: Vec<RootCausesOfChannelView>,
    /// The Pareto cut by the journey stage of the answer that opened each case.
    root_causes_by_stage: Vec<RootCausesOfStageView>,
}

impl From<CaseStats> for CaseStatsView {
    fn from(s: CaseStats) -> Self {
        CaseStatsView {
            opened: s.opened,
            by_state: s.by_state.into_iter().map(|(state, count)| StateCountView { state, count }).collect(),
            first_contact_seconds_p50: s.first_contact_p50,
            first_contact_seconds_p90: s.first_contact_p90,
            close_seconds_p50: s.close_p50,
            close_seconds_p90: s.close_p90,
            first_contact_within_sla: s.first_contact_within_sla,
            resolution_within_sla: s.resolution_within_sla,
            resurveyed: s.resurveyed,
            recovered: s.recovered,
            recovery_rate: s.recovery_rate,
            root_causes: views(s.root_causes),
            root_causes_by_channel: s
                .root_causes_by_channel
                .into_iter()
                .filter_map(|(c, counts)| {
                    Some(RootCausesOfChannelView { channel: Channel::parse(&c)?, root_causes: views(counts) })
                })
                .collect(),
            root_causes_by_stage: s
                .root_causes_by_stage
                .into_iter()
                .filter_map(|(st, counts)| {
                    Some(RootCausesOfStageView { stage: JourneyStage::parse(&st)?, root_causes: views(counts) })
                })
                .collect(),
        }
    }
}

#[derive(InputObject, Default)]
pub struct FeedbackCaseFilterInput {
    state: Option<CaseState>,
    team: Option<String>,
    owner: Option<String>,
    customer_id: Option<Uuid>,
    /// Only cases with a breached deadline (true) or without (false).
    breached: Option<bool>,
}

#[derive(Default)]
pub struct CasesQuery;

#[Object]
impl CasesQuery {
    /// One of the tenant's feedback cases (`NOT_FOUND` for another tenant's). Needs `cx:read`; access-logged.
    async fn feedback_case(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<FeedbackCaseView>> {
        let rc = request(ctx)?;
        Ok(Some(FeedbackCaseView::one(cases::get(&rc.caller, &rc.services, id).await.gql()?)))
    }

    /// The tenant's feedback cases, newest first, keyset-paged. Needs `cx:read`; access-logged.
    #[graphql(complexity = "first.unwrap_or(20).max(0) as usize * child_complexity + 1")]
    async fn feedback_cases(
        &self,
        ctx: &Context<'_>,
        #[graphql(validator(minimum = 0, maximum = 100))] first: Option<i32>,
        after: Option<String>,
        filter: Option<FeedbackCaseFilterInput>,
    ) -> async_graphql::Result<Connection<String, FeedbackCaseView>> {
        let rc = request(ctx)?;
        let page = PageRequest::parse(first, after.as_deref()).gql()?;
        let f = filter.unwrap_or_default();
        let filter = CaseFilter {
            state: f.state,
            team: f.team,
            owner: f.owner,
            customer_id: f.customer_id,
            breached: f.breached,
        };
        Ok(connection(cases::list(&rc.caller, &rc.services, filter, page).await.gql()?, None))
    }

    /// How the closed loop performed over the cases opened in `[from, to)` (`to` defaults to now). Needs `cx:read`.
    async fn feedback_case_stats(
        &self,
        ctx: &Context<'_>,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<CaseStatsView> {
        let rc = request(ctx)?;
        let to = to.unwrap_or_else(Utc::now);
        Ok(stats::stats(&rc.caller, &rc.services, from, to).await.gql()?.into())
    }

    /// The tenant's feedback rules, by name. Needs `cx:read`.
    async fn feedback_rules(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<FeedbackRuleView>> {
        let rc = request(ctx)?;
        Ok(rules::list(&rc.caller, &rc.services).await.gql()?.into_iter().map(FeedbackRuleView).collect())
    }

    /// The tenant's root-cause taxonomy, by code. Needs `cx:read`.
    async fn feedback_root_causes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<RootCauseView>> {
        let rc = request(ctx)?;
        Ok(rules::root_causes(&rc.caller, &rc.services).await.gql()?.into_iter().map(RootCauseView::from).collect())
    }
}

/// A feedback rule: created, or updated when the tenant has one of that name (`updateFeedbackRules`).
#[derive(InputObject)]
pub struct FeedbackRuleInput {
    name: String,
    metric: FeedbackMetric,
    /// The answers that open a case: `scoreMin..scoreMax`, inside the metric's scale (NPS 0–10, CSAT 1–5, CES 1–7).
    score_min: i32,
    score_max: i32,
    /// Only answers from these channels (absent or empty: any).
    channels: Option<Vec<Channel>>,
    /// Only answers in these journey stages (absent or empty: any).
    stages: Option<Vec<JourneyStage>>,
    #[graphql(default_with = "Priority::Normal")]
    priority: Priority,
    team: String,
    /// Seconds from opening to the first-contact deadline.
    first_contact_within_seconds: i64,
    /// Seconds from opening to the resolution deadline (not before the first-contact deadline).
    resolution_within_seconds: i64,
    #[graphql(default = true)]
    enabled: bool,
}

#[derive(InputObject)]
pub struct DefineRootCauseInput {
    code: String,
    label: String,
    /// A top-level cause this one refines (two levels).
    parent: Option<String>,
}

#[derive(InputObject)]
pub struct AssignFeedbackCaseInput {
    id: Uuid,
    /// The subject who works the case.
    owner: String,
    /// A new team (absent: the case keeps its team).
    team: Option<String>,
    reason: String,
    note: Option<String>,
}

#[derive(InputObject)]
pub struct TransitionFeedbackCaseInput {
    id: Uuid,
    /// IN_PROGRESS (start, or back from ESCALATED), ESCALATED, RESOLVED or REOPENED. ASSIGNED goes through
    /// `assignFeedbackCase`, CLOSED through `closeFeedbackCase`.
    to: CaseState,
    reason: String,
    note: Option<String>,
}

#[derive(InputObject)]
pub struct CloseFeedbackCaseInput {
    id: Uuid,
    /// A code of the tenant's root-cause taxonomy.
    root_cause: String,
    outcome: Outcome,
    reason: String,
    note: Option<String>,
}

#[derive(InputObject)]
pub struct FeedbackCaseContactInput {
    id: Uuid,
    channel: Channel,
    /// SUPPORT_CALL, SUPPORT_CHAT, SUPPORT_TICKET or EMAIL_SENT.
    #[graphql(name = "type")]
    kind: TouchpointType,
    note: Option<String>,
    /// When the contact happened (default: now).
    occurred_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct CasesMutation;

#[Object]
impl CasesMutation {
    /// Creates or updates (by name) each rule, in one transaction: all or nothing (a refused rule is `VALIDATION`
    /// naming `rules[i].field`). A changed rule gets a new `version`; rules not named stay as they are; send a rule
    /// with `enabled: false` to stop it opening cases (its open cases go on). Answers the tenant's rules, by name.
    /// Needs `cx:write`.
    async fn update_feedback_rules(
        &self,
        ctx: &Context<'_>,
        rules: Vec<FeedbackRuleInput>,
    ) -> async_graphql::Result<Vec<FeedbackRuleView>> {
        let rc = request(ctx)?;
        let inputs = rules
            .into_iter()
            .map(|input| RuleInput {
                name: input.name,
                metric: input.metric,
                score_min: input.score_min,
                score_max: input.score_max,
                channels: input.channels.unwrap_or_default(),
                stages: input.stages.unwrap_or_default(),
                priority: input.priority,
                team: input.team,
                first_contact_secs: input.first_contact_within_seconds,
                resolution_secs: input.resolution_within_seconds,
                enabled: input.enabled,
            })
            .collect();
        Ok(rules::update(&rc.caller, &rc.services, inputs).await.gql()?.into_iter().map(FeedbackRuleView).collect())
    }

    /// Creates or relabels a root cause. Needs `cx:write`.
    async fn define_root_cause(
        &self,
        ctx: &Context<'_>,
        input: DefineRootCauseInput,
    ) -> async_graphql::Result<RootCauseView> {
        let rc = request(ctx)?;
        let cause =
            rules::define_root_cause(&rc.caller, &rc.services, &input.code, &input.label, input.parent.as_deref())
                .await
                .gql()?;
        Ok(cause.into())
    }

    /// Gives a case an owner (NEW and REOPENED → ASSIGNED; otherwise a reassignment). Needs `cx:write`.
    async fn assign_feedback_case(
        &self,
        ctx: &Context<'_>,
        input: AssignFeedbackCaseInput,
    ) -> async_graphql::Result<FeedbackCaseView> {
        let rc = request(ctx)?;
        let change = Change {
            owner: Some(input.owner),
            team: input.team,
            ..Change::new(Action::Assign, input.reason, input.note)
        };
        Ok(FeedbackCaseView::one(cases::change(&rc.caller, &rc.services, input.id, change).await.gql()?))
    }

    /// Moves a case to IN_PROGRESS, ESCALATED, RESOLVED or REOPENED (`INVALID_TRANSITION` when it may not go
    /// there from its state). Needs `cx:write`.
    async fn transition_feedback_case(
        &self,
        ctx: &Context<'_>,
        input: TransitionFeedbackCaseInput,
    ) -> async_graphql::Result<FeedbackCaseView> {
        let rc = request(ctx)?;
        let action = match input.to {
            CaseState::InProgress => Action::Start,
            CaseState::Escalated => Action::Escalate,
            CaseState::Resolved => Action::Resolve,
            CaseState::Reopened => Action::Reopen,
            CaseState::Assigned => return Err(ApiError::validation("to", "use assignFeedbackCase")).gql(),
            CaseState::Closed => return Err(ApiError::validation("to", "use closeFeedbackCase")).gql(),
            CaseState::New => return Err(ApiError::validation("to", "no case goes back to NEW")).gql(),
        };
        let change = Change::new(action, input.reason, input.note);
        Ok(FeedbackCaseView::one(cases::change(&rc.caller, &rc.services, input.id, change).await.gql()?))
    }

    /// Closes a RESOLVED case with a root cause of the tenant's taxonomy and an outcome. Needs `cx:write`.
    async fn close_feedback_case(
        &self,
        ctx: &Context<'_>,
        input: CloseFeedbackCaseInput,
    ) -> async_graphql::Result<FeedbackCaseView> {
        let rc = request(ctx)?;
        let change = Change {
            root_cause: Some(input.root_cause),
            outcome: Some(input.outcome),
            ..Change::new(Action::Close, input.reason, input.note)
        };
        Ok(FeedbackCaseView::one(cases::change(&rc.caller, &rc.services, input.id, change).await.gql()?))
    }

    /// Records the follow-up contact: a touchpoint on the customer's journey (stage SUPPORT), linked to the case.
    /// Refused (`CONSENT_REQUIRED`) for a customer whose processing is restricted. Needs `cx:write`.
    async fn record_feedback_case_contact(
        &self,
        ctx: &Context<'_>,
        input: FeedbackCaseContactInput,
    ) -> async_graphql::Result<FeedbackCaseView> {
        let rc = request(ctx)?;
        let contact =
            ContactInput { channel: input.channel, kind: input.kind, note: input.note, occurred_at: input.occurred_at };
        Ok(FeedbackCaseView::one(cases::record_contact(&rc.caller, &rc.services, input.id, contact).await.gql()?))
    }
}

/// What a `feedbackCaseChanged` subscription narrows to (fields combine: all of).
#[derive(InputObject, Default)]
pub struct FeedbackCaseChangeFilterInput {
    /// Only cases of this team (the team after the change).
    team: Option<String>,
    /// Only changes that leave the case in this state.
    state: Option<CaseState>,
}

/// A committed change to a feedback case.
pub struct FeedbackCaseChangeView(CaseChange);

#[Object(name = "FeedbackCaseChange")]
impl FeedbackCaseChangeView {
    async fn case_id(&self) -> Uuid {
        self.0.case_id
    }
    async fn customer_id(&self) -> Uuid {
        self.0.customer_id
    }
    /// What happened, as the case's history records it: CREATED (opened), ANSWER_LINKED, ASSIGNED,
    /// STATUS_CHANGED, SLA_BREACHED (by the sweeper), CONTACTED, RESURVEYED, CLOSED, REOPENED.
    async fn kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.0.kind)
    }
    /// The state the change left the case in.
    async fn state(&self) -> Option<CaseState> {
        CaseState::parse(&self.0.state)
    }
    async fn team(&self) -> &str {
        &self.0.team
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The case as it is now (read when asked for; access-logged; `null` with `NOT_FOUND` once erased).
    async fn case(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<FeedbackCaseView>> {
        let rc = request(ctx)?;
        Ok(Some(FeedbackCaseView::one(cases::get(&rc.caller, &rc.services, self.0.case_id).await.gql()?)))
    }
}

#[derive(Default)]
pub struct CasesSubscription;

#[Subscription]
impl CasesSubscription {
    /// The tenant's feedback cases as they change, after commit, from every instance: opened, answer linked,
    /// assigned, moved, contacted, breached by the sweeper, closed, reopened, re-surveyed. Needs `cx:read`.
    async fn feedback_case_changed(
        &self,
        ctx: &Context<'_>,
        filter: Option<FeedbackCaseChangeFilterInput>,
    ) -> async_graphql::Result<impl Stream<Item = FeedbackCaseChangeView> + use<>> {
        let rc = request(ctx)?;
        let filter = filter.unwrap_or_default();
        let stream = cases::watch(&rc.caller, &rc.services, filter.team, filter.state).await.gql()?;
        Ok(stream.map(FeedbackCaseChangeView))
    }
}
