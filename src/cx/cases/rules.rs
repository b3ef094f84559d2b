//! A tenant's feedback rules (which answers open a case, with what priority, team and deadlines) and its two-level
//! root-cause taxonomy.
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use uuid::Uuid;

use super::Priority;
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    services::Services,
    storage::entities::{feedback_root_cause, feedback_rule},
    touchpoints::model::{Channel, FeedbackMetric, JourneyStage},
};

/// Most rules a tenant may hold (each answer is matched against all of its metric's).
pub const MAX_RULES: u64 = 100;
/// Most root causes a tenant may hold.
pub const MAX_ROOT_CAUSES: u64 = 500;
/// The longest deadline: a year.
const MAX_DEADLINE_SECS: i64 = 366 * 24 * 3600;

/// A rule as the caller defines it.
#[derive(Debug, Clone)]
pub struct RuleInput {
    pub name: String,
    pub metric: FeedbackMetric,
    pub score_min: i32,
    pub score_max: i32,
    pub channels: Vec<Channel>,
    pub stages: Vec<JourneyStage>,
    pub priority: Priority,
    pub team: String,
    pub first_contact_secs: i64,
    pub resolution_secs: i64,
    pub enabled: bool,
}

/// A rule as stored.
#[derive(Debug, Clone)]
pub struct FeedbackRule {
    pub id: Uuid,
    pub name: String,
    pub metric: FeedbackMetric,
    pub score_min: i16,
    pub score_max: i16,
    pub channels: Vec<Channel>,
    pub stages: Vec<JourneyStage>,
    pub priority: Priority,
    pub team: String,
    pub first_contact_secs: i64,
    pub resolution_secs: i64,
    pub enabled: bool,
    pub version: i32,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

impl TryFrom<feedback_rule::Model> for FeedbackRule {
    type Error = ApiError;

    fn try_from(row: feedback_rule::Model) -> ApiResult<Self> {
        let unreadable =
            |what: &str| ApiError::internal(anyhow::anyhow!("feedback rule {}: unreadable {what}", row.id));
        let words = |list: &serde_json::Value| -> Vec<String> {
            list.as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        Ok(FeedbackRule {
            id: row.id,
            metric: FeedbackMetric::parse(&row.metric).ok_or_else(|| unreadable("metric"))?,
            priority: Priority::parse(&row.priority).ok_or_else(|| unreadable("priority"))?,
            channels: words(&row.channels).iter().filter_map(|c| Channel::parse(c)).collect(),
            stages: words(&row.stages).iter().filter_map(|s| JourneyStage::parse(s)).collect(),
            name: row.name,
            score_min: row.score_min,
            score_max: row.score_max,
            team: row.team,
            first_contact_secs: row.first_contact_secs,
            resolution_secs: row.resolution_secs,
            enabled: row.enabled,
            version: row.version,
            updated_at: row.updated_at,
            updated_by: row.updated_by,
        })
    }
}

fn validate(input: &RuleInput) -> ApiResult<(String, String)> {
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::validation("name", "1–100 characters"));
    }
    let team = input.team.trim();
    if team.is_empty() || team.chars().count() > 100 {
        return Err(ApiError::validation("team", "1–100 characters"));
    }
    let (low, high) = input.metric.range();
    let metric = input.metric.as_str().to_uppercase();
    if input.score_min < low || input.score_min > high {
        return Err(ApiError::validation("scoreMin", format!("{metric} answers run from {low} to {high}")));
    }
    if input.score_max < low || input.score_max > high {
        return Err(ApiError::validation("scoreMax", format!("{metric} answers run from {low} to {high}")));
    }
    if input.score_min > input.score_max {
        return Err(ApiError::validation("scoreMax", "must not be below scoreMin"));
    }
    for (field, secs) in
        [("firstContactWithinSeconds", input.first_contact_secs), ("resolutionWithinSeconds", input.resolution_secs)]
    {
        if secs <= 0 || secs > MAX_DEADLINE_SECS {
            return Err(ApiError::validation(field, "a positive number of seconds, at most a year"));
        }
    }
    if input.first_contact_secs > input.resolution_secs {
        return Err(ApiError::validation(
            "firstContactWithinSeconds",
            "must not be later than the resolution deadline",
        ));
    }
    Ok((name.to_owned(), team.to_owned()))
}

/// Creates or updates (by name) each of `inputs`, in one transaction: all or nothing. A rule refused is a
/// `VALIDATION` error naming `rules[i].field`. A rule whose settings change gets a new version; one sent unchanged
/// keeps its version; rules not named stay as they are (a rule is never deleted: its cases name it; send it with
/// `enabled: false` to stop it opening cases, its open cases go on). A change applies to answers recorded from then
/// on; open cases keep the deadlines they were opened with. Needs `cx:write`. Answers the tenant's rules, by name.
pub async fn update(caller: &Caller, svc: &Services, inputs: Vec<RuleInput>) -> ApiResult<Vec<FeedbackRule>> {
    caller.require(Scope::CxWrite)?;
    if inputs.len() as u64 > MAX_RULES {
        return Err(ApiError::validation("rules", format!("a tenant holds at most {MAX_RULES} rules")));
    }
    let mut checked = Vec::with_capacity(inputs.len());
    let mut names = std::collections::HashSet::new();
    for (i, input) in inputs.iter().enumerate() {
        let (name, team) = validate(input).map_err(|err| match err {
            ApiError::Validation { field, message } => {
                ApiError::Validation { field: format!("rules[{i}].{field}"), message }
            }
            other => other,
        })?;
        if !names.insert(name.clone()) {
            return Err(ApiError::validation(format!("rules[{i}].name"), format!("`{name}` is named twice")));
        }
        checked.push((input, name, team));
    }
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let mut existing: HashMap<String, feedback_rule::Model> =
        feedback_rule::of_tenant(tenant).all(&txn).await?.into_iter().map(|r| (r.name.clone(), r)).collect();
    let new = checked.iter().filter(|(_, name, _)| !existing.contains_key(name)).count();
    if (existing.len() + new) as u64 > MAX_RULES {
        return Err(ApiError::validation("rules", format!("a tenant holds at most {MAX_RULES} rules")));
    }
    let now = Utc::now();
    let subject: String = caller.subject().chars().take(256).collect();
    let words = |list: Vec<&str>| {
        let mut list: Vec<&str> = list;
        list.sort_unstable();
        list.dedup();
        serde_json::json!(list)
    };
    for (input, name, team) in checked {
        let channels = words(input.channels.iter().map(|c| c.as_str()).collect());
        let stages = words(input.stages.iter().map(|s| s.as_str()).collect());
        let found = existing.remove(&name);
        if let Some(found) = &found {
            let same = found.metric == input.metric.as_str()
                && i32::from(found.score_min) == input.score_min
                && i32::from(found.score_max) == input.score_max
                && found.channels == channels
                && found.stages == stages
                && found.priority == input.priority.as_str()
                && found.team == team
                && found.first_contact_secs == input.first_contact_secs
                && found.resolution_secs == input.resolution_secs
                && found.enabled == input.enabled;
            if same {
                continue;
            }
        }
        let mut row = match &found {
            Some(found) => feedback_rule::ActiveModel::from(found.clone()),
            None => feedback_rule::ActiveModel {
                id: Set(Uuid::now_v7()),
                tenant: Set(tenant.as_str().to_owned()),
                name: Set(name),
                created_at: Set(now),
                version: Set(0),
                ..Default::default()
            },
        };
        row.metric = Set(input.metric.as_str().to_owned());
        row.score_min = Set(input.score_min as i16);
        row.score_max = Set(input.score_max as i16);
        row.channels = Set(channels);
        row.stages = Set(stages);
        row.priority = Set(input.priority.as_str().to_owned());
        row.team = Set(team);
        row.first_contact_secs = Set(input.first_contact_secs);
        row.resolution_secs = Set(input.resolution_secs);
        row.enabled = Set(input.enabled);
        row.version = Set(found.as_ref().map_or(1, |e| e.version + 1));
        row.updated_at = Set(now);
        row.updated_by = Set(subject.clone());
        match found {
            Some(_) => row.update(&txn).await?,
            None => row.insert(&txn).await?,
        };
    }
    let rules = rules_of(&txn, tenant).await?;
    txn.commit().await?;
    Ok(rules)
}

async fn rules_of(conn: &impl ConnectionTrait, tenant: &TenantId) -> ApiResult<Vec<FeedbackRule>> {
    feedback_rule::of_tenant(tenant)
        .order_by_asc(feedback_rule::Column::Name)
        .limit(MAX_RULES)
        .all(conn)
        .await?
        .into_iter()
        .map(FeedbackRule::try_from)
        .collect()
}

/// The tenant's rules, by name. Needs `cx:read`.
pub async fn list(caller: &Caller, svc: &Services) -> ApiResult<Vec<FeedbackRule>> {
    caller.require(Scope::CxRead)?;
    rules_of(svc.db.conn(), caller.tenant()).await
}

/// A root cause of the tenant's taxonomy.
#[derive(Debug, Clone)]
pub struct RootCause {
    pub code: String,
    pub label: String,
    pub parent: Option<String>,
}

impl From<feedback_root_cause::Model> for RootCause {
    fn from(row: feedback_root_cause::Model) -> Self {
        RootCause { code: row.code, label: row.label, parent: row.parent_code }
    }
}

fn valid_code(field: &str, code: &str) -> ApiResult<String> {
    let code = code.trim();
    let ok = !code.is_empty()
        && code.len() <= 64
        && code.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(code.to_owned()) } else { Err(ApiError::validation(field, "1–64 letters, digits, `_`, `-` or `.`")) }
}

/// Creates or relabels a root cause. Two levels: a parent must be a top-level cause, and a cause with children
/// stays top-level. Needs `cx:write`.
pub async fn define_root_cause(
    caller: &Caller,
    svc: &Services,
    code: &str,
    label: &str,
    parent: Option<&str>,
) -> ApiResult<RootCause> {
    caller.require(Scope::CxWrite)?;
    let code = valid_code("code", code)?;
    let label = label.trim();
    if label.is_empty() || label.chars().count() > 200 {
        return Err(ApiError::validation("label", "1–200 characters"));
    }
    let parent = parent.map(|p| valid_code("parent", p)).transpose()?;
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    if let Some(parent) = &parent {
        if *parent == code {
            return Err(ApiError::validation("parent", "a root cause cannot be its own parent"));
        }
        let found = feedback_root_cause::of_tenant(tenant)
            .filter(feedback_root_cause::Column::Code.eq(parent.as_str()))
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::validation("parent", format!("no root cause `{parent}`")))?;
        if found.parent_code.is_some() {
            return Err(ApiError::validation("parent", "the taxonomy has two levels: the parent must be top-level"));
        }
        let children = feedback_root_cause::of_tenant(tenant)
            .filter(feedback_root_cause::Column::ParentCode.eq(code.as_str()))
            .count(&txn)
            .await?;
        if children > 0 {
            return Err(ApiError::validation("parent", "this cause has causes under it, so it stays top-level"));
        }
    }
    let existing = feedback_root_cause::of_tenant(tenant)
        .filter(feedback_root_cause::Column::Code.eq(code.as_str()))
        .one(&txn)
        .await?;
    let now = Utc::now();
    let saved = match existing {
        Some(found) => {
            let mut row = feedback_root_cause::ActiveModel::from(found);
            row.label = Set(label.to_owned());
            row.parent_code = Set(parent);
            row.updated_at = Set(now);
            row.update(&txn).await?
        }
        None => {
            if feedback_root_cause::of_tenant(tenant).count(&txn).await? >= MAX_ROOT_CAUSES {
                return Err(ApiError::validation(
                    "code",
                    format!("a tenant holds at most {MAX_ROOT_CAUSES} root causes"),
                ));
            }
            feedback_root_cause::ActiveModel {
                tenant: Set(tenant.as_str().to_owned()),
                code: Set(code),
                label: Set(label.to_owned()),
                parent_code: Set(parent),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await?
        }
    };
    txn.commit().await?;
    Ok(saved.into())
}

/// The tenant's root causes, by code. Needs `cx:read`.
pub async fn root_causes(caller: &Caller, svc: &Services) -> ApiResult<Vec<RootCause>> {
    caller.require(Scope::CxRead)?;
    Ok(feedback_root_cause::of_tenant(caller.tenant())
        .order_by_asc(feedback_root_cause::Column::Code)
        .limit(MAX_ROOT_CAUSES)
        .all(svc.db.conn())
        .await?
        .into_iter()
        .map(RootCause::from)
        .collect())
}
