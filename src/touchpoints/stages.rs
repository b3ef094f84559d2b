//! Journey-stage rules: how a tenant maps its touchpoints to journey stages. A touchpoint whose sender names no stage
//! gets the stage of the highest-priority rule it matches (conditions on type, channel, source and one property
//! value), else the built-in default (`JourneyStage::default_for`, or the tracking API's event-name table). Stored
//! per tenant, versioned; changing them re-derives the stages of stored touchpoints as a job (`jobs.rs`).
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Channel, JourneyStage, TouchpointType};
use crate::{
    auth::{Caller, Scope, TenantId},
    error::{ApiError, ApiResult},
    storage::entities::journey_rules,
};

/// At most this many rules per tenant.
pub const MAX_RULES: usize = 200;

/// One rule: every condition given must hold (an empty list is no condition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRule {
    /// Higher first; among equals, the earlier rule.
    pub priority: i32,
    pub stage: String,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub sources: Vec<String>,
    /// `properties[key] == value` (compared as JSON).
    #[serde(default)]
    pub property: Option<PropertyCondition>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyCondition {
    pub key: String,
    pub equals: Value,
}

/// A tenant's rules, checked and in the order they apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageRules {
    pub version: i64,
    pub rules: Vec<StageRule>,
    compiled: Vec<Compiled>,
}

#[derive(Debug, Clone, PartialEq)]
struct Compiled {
    stage: JourneyStage,
    types: Vec<TouchpointType>,
    channels: Vec<Channel>,
    sources: Vec<String>,
    property: Option<PropertyCondition>,
}

impl StageRules {
    /// Checks rules as a caller wrote them; a refusal names the rule and field.
    pub fn new(version: i64, rules: Vec<StageRule>) -> ApiResult<Self> {
        if rules.len() > MAX_RULES {
            return Err(ApiError::validation("rules", format!("at most {MAX_RULES}")));
        }
        let mut compiled = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let field = |name: &str| format!("rules[{i}].{name}");
            let stage = JourneyStage::parse(&rule.stage)
                .ok_or_else(|| ApiError::validation(field("stage"), format!("unknown stage `{}`", rule.stage)))?;
            let types = rule
                .types
                .iter()
                .map(|t| {
                    TouchpointType::parse(t)
                        .ok_or_else(|| ApiError::validation(field("types"), format!("unknown type `{t}`")))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            let channels = rule
                .channels
                .iter()
                .map(|c| {
                    Channel::parse(c)
                        .ok_or_else(|| ApiError::validation(field("channels"), format!("unknown channel `{c}`")))
                })
                .collect::<ApiResult<Vec<_>>>()?;
            if rule.sources.iter().any(|s| s.trim().is_empty() || s.len() > 64) {
                return Err(ApiError::validation(field("sources"), "1–64 characters each"));
            }
            if let Some(p) = &rule.property
                && (p.key.trim().is_empty() || p.key.len() > 128)
            {
                return Err(ApiError::validation(field("property.key"), "1–128 characters"));
            }
            if types.is_empty() && channels.is_empty() && rule.sources.is_empty() && rule.property.is_none() {
                return Err(ApiError::validation(field("types"), "a rule needs at least one condition"));
            }
            compiled.push((
                rule.priority,
                i,
                Compiled { stage, types, channels, sources: rule.sources.clone(), property: rule.property.clone() },
            ));
        }
        compiled.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(StageRules { version, rules, compiled: compiled.into_iter().map(|(_, _, c)| c).collect() })
    }

    /// The stage of a touchpoint whose sender named none: the first matching rule's, else `fallback`.
    pub fn stage_for(
        &self,
        kind: TouchpointType,
        channel: Channel,
        source: &str,
        properties: Option<&Value>,
        fallback: JourneyStage,
    ) -> JourneyStage {
        self.compiled
            .iter()
            .find(|r| {
                (r.types.is_empty() || r.types.contains(&kind))
                    && (r.channels.is_empty() || r.channels.contains(&channel))
                    && (r.sources.is_empty() || r.sources.iter().any(|s| s == source))
                    && r.property
                        .as_ref()
                        .is_none_or(|p| properties.and_then(|props| props.get(&p.key)) == Some(&p.equals))
            })
            .map_or(fallback, |r| r.stage)
    }
}

/// The tenant's rules (none: the built-in defaults alone).
pub async fn for_tenant(conn: &impl sea_orm::ConnectionTrait, tenant: &TenantId) -> ApiResult<StageRules> {
    let Some(row) = journey_rules::of_tenant(tenant).one(conn).await? else { return Ok(StageRules::default()) };
    let rules: Vec<StageRule> = serde_json::from_value(row.rules).map_err(ApiError::internal)?;
    StageRules::new(row.version, rules)
}

/// Replaces the tenant's rules (checked first) and queues the job that re-derives the stages of its stored
/// touchpoints. Needs `cx:write`.
pub async fn update(
    caller: &Caller,
    svc: &crate::services::Services,
    rules: Vec<StageRule>,
) -> ApiResult<(StageRules, crate::jobs::Job)> {
    use sea_orm::{ActiveValue::Set, EntityTrait, sea_query::OnConflict};
    caller.require(Scope::CxWrite)?;
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let current = for_tenant(&txn, tenant).await?;
    let checked = StageRules::new(current.version + 1, rules)?;
    let row = journey_rules::ActiveModel {
        tenant: Set(tenant.as_str().to_owned()),
        rules: Set(serde_json::to_value(&checked.rules).map_err(ApiError::internal)?),
        version: Set(checked.version),
        updated_at: Set(Utc::now()),
        updated_by: Set(caller.subject().to_owned()),
    };
    journey_rules::Entity::insert(row)
        .on_conflict(
            OnConflict::column(journey_rules::Column::Tenant)
                .update_columns([
                    journey_rules::Column::Rules,
                    journey_rules::Column::Version,
                    journey_rules::Column::UpdatedAt,
                    journey_rules::Column::UpdatedBy,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await?;
    txn.commit().await?;
    let job = crate::jobs::enqueue(caller, svc, crate::jobs::JobKind::RederiveStages).await?;
    Ok((checked, job))
}

/// The built-in stage of a touchpoint: the tracking API's event-name table for a tracked event of that type
/// (`properties.event`), else `JourneyStage::default_for`.
pub fn default_stage_of(kind: TouchpointType, channel: Channel, properties: Option<&Value>) -> JourneyStage {
    properties
        .and_then(|p| p.get("event"))
        .and_then(Value::as_str)
        .and_then(super::tracking::track_event)
        .filter(|mapped| mapped.kind == kind)
        .map_or_else(|| JourneyStage::default_for(kind, channel), |mapped| mapped.stage)
}

/// Touchpoints per re-derivation batch.
pub const REDERIVE_BATCH: u64 = 1000;

/// One batch of a re-derivation: its writes are in `txn`, which the job commits with its progress.
pub struct RederiveBatch {
    pub txn: sea_orm::DatabaseTransaction,
    /// The last touchpoint id of the batch: the next batch starts after it.
    pub last: uuid::Uuid,
    pub touchpoints: u64,
    pub changed: u64,
    touched: Vec<uuid::Uuid>,
}

impl RederiveBatch {
    pub async fn commit(self, svc: &crate::services::Services, tenant: &TenantId) -> ApiResult<()> {
        use crate::changes::{Changed, CustomerChangeKind};
        self.txn.commit().await?;
        crate::changes::committed(svc, tenant, Changed::new().customers(self.touched, CustomerChangeKind::Updated))
            .await;
        Ok(())
    }
}

/// Applies `rules` to the tenant's touchpoints after `after` (in id order, `REDERIVE_BATCH` of them) whose stage was
/// derived, not given: a touchpoint stored before this was recorded counts as given when its stage differs from
/// the built-in default. Survey answers whose stage changes move between CX rollup cells in the same transaction.
/// `None` when no touchpoint is left. Run by the `REDERIVE_STAGES` job.
pub async fn rederive_batch(
    svc: &crate::services::Services,
    tenant: &TenantId,
    rules: &StageRules,
    after: Option<uuid::Uuid>,
) -> ApiResult<Option<RederiveBatch>> {
    use std::collections::BTreeSet;

    use sea_orm::{ColumnTrait, QueryFilter, QueryOrder, QuerySelect, sea_query::Expr};

    use crate::storage::entities::touchpoint;
    let txn = svc.db.begin_write().await?;
    let mut query = touchpoint::of_tenant(tenant).order_by_asc(touchpoint::Column::Id).limit(REDERIVE_BATCH);
    if let Some(after) = after {
        query = query.filter(touchpoint::Column::Id.gt(after));
    }
    let rows = query.all(&txn).await?;
    let Some(last) = rows.last().map(|r| r.id) else {
        txn.rollback().await?;
        return Ok(None);
    };
    let mut moves: std::collections::HashMap<JourneyStage, Vec<uuid::Uuid>> = std::collections::HashMap::new();
    let mut restaged = Vec::new();
    let mut touched = BTreeSet::new();
    for row in &rows {
        let (Some(kind), Some(channel)) = (TouchpointType::parse(&row.kind), Channel::parse(&row.channel)) else {
            continue;
        };
        let fallback = default_stage_of(kind, channel, row.properties.as_ref());
        let given = row.stage_explicit.unwrap_or_else(|| row.stage != fallback.as_str());
        if given {
            continue;
        }
        let stage = rules.stage_for(kind, channel, &row.source, row.properties.as_ref(), fallback);
        if stage.as_str() != row.stage {
            moves.entry(stage).or_default().push(row.id);
            touched.insert(row.customer_id);
            if row.feedback_metric.is_some() {
                restaged.push((row.id, stage.as_str()));
            }
        }
    }
    let mut changed = 0;
    for (stage, ids) in moves {
        changed += touchpoint::update_of_tenant(tenant)
            .col_expr(touchpoint::Column::Stage, Expr::value(stage.as_str()))
            .col_expr(touchpoint::Column::StageExplicit, Expr::value(false))
            .filter(touchpoint::Column::Id.is_in(ids))
            .exec(&txn)
            .await?
            .rows_affected;
    }
    crate::cx::answers::restaged(&txn, tenant, &restaged).await?;
    Ok(Some(RederiveBatch {
        txn,
        last,
        touchpoints: rows.len() as u64,
        changed,
        touched: touched.into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(priority: i32, stage: &str, types: &[&str], channels: &[&str]) -> StageRule {
        StageRule {
            priority,
            stage: stage.into(),
            types: types.iter().map(|t| t.to_string()).collect(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            sources: vec![],
            property: None,
        }
    }

    #[test]
    fn the_highest_priority_matching_rule_decides_else_the_fallback() {
        let rules = StageRules::new(
            1,
            vec![
                rule(1, "support", &["email_sent"], &[]),
                rule(5, "onboarding", &["email_sent"], &["email"]),
                StageRule {
                    property: Some(PropertyCondition { key: "campaign".into(), equals: Value::from("welcome") }),
                    ..rule(9, "onboarding", &[], &[])
                },
            ],
        )
        .expect("valid");
        let stage = |kind, channel, props: Option<Value>| {
            rules.stage_for(kind, channel, "crm", props.as_ref(), JourneyStage::Usage)
        };
        assert_eq!(stage(TouchpointType::EmailSent, Channel::Email, None), JourneyStage::Onboarding);
        assert_eq!(stage(TouchpointType::EmailSent, Channel::Sms, None), JourneyStage::Support);
        assert_eq!(stage(TouchpointType::PageView, Channel::Web, None), JourneyStage::Usage);
        let welcome = Some(serde_json::json!({ "campaign": "welcome" }));
        assert_eq!(stage(TouchpointType::PageView, Channel::Web, welcome), JourneyStage::Onboarding);
    }

    #[test]
    fn a_bad_rule_is_refused_by_its_place_and_field() {
        let err =
            StageRules::new(1, vec![rule(1, "usage", &["page_view"], &[]), rule(1, "nowhere", &["page_view"], &[])])
                .expect_err("unknown stage");
        assert!(matches!(err, ApiError::Validation { ref field, .. } if field == "rules[1].stage"), "{err:?}");
        let err = StageRules::new(1, vec![rule(1, "usage", &[], &[])]).expect_err("no condition");
        assert!(matches!(err, ApiError::Validation { .. }), "{err:?}");
    }
}
