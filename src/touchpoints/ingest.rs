//! Touchpoint ingestion: per-item validation, identity resolution and an idempotent write per item, so one bad
//! item never sinks a batch and a replayed batch creates nothing twice.
use crate::changes::{self, Changed};
use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseTransaction, NotSet, QueryFilter, QuerySelect, Set};
use uuid::Uuid;

use super::model::{Channel, Feedback, FeedbackMetric, JourneyStage, Touchpoint, TouchpointType};
use crate::{
    auth::{Caller, Scope, TenantId},
    consent::{RecordConsent, ledger},
    error::{ApiError, ApiResult},
    profiles::{
        Identity,
        customers::{Customer, IdentifyInput, IdentityInput},
        resolution::{self, Resolution},
        rules,
    },
    services::Services,
    storage::entities::{customer, touchpoint},
};

pub const MAX_BATCH: usize = 5000;
const MAX_PROPERTIES_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone)]
pub struct FeedbackInput {
    pub metric: FeedbackMetric,
    pub score: i32,
    pub verbatim: Option<String>,
    /// The touchpoint the answer rates (a support call, a delivery), of the same customer.
    pub about_touchpoint_id: Option<Uuid>,
}

/// One touchpoint as a sender gives it. The customer is named by id or by identities.
#[derive(Debug, Clone)]
pub struct TouchpointInput {
    pub customer_id: Option<Uuid>,
    pub identities: Vec<IdentityInput>,
    pub channel: Channel,
    pub kind: TouchpointType,
    pub stage: Option<JourneyStage>,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub idempotency_key: String,
    pub properties: Option<serde_json::Value>,
    pub value: Option<f64>,
    pub currency: Option<String>,
    pub feedback: Option<FeedbackInput>,
    /// Consent decisions that came with the event (the tracking API's `context.consent`, Global Privacy Control).
    /// Appended to the ledger only where they change the decision in force.
    pub consents: Vec<RecordConsent>,
    /// The consent context as the sender gave it, kept with the touchpoint.
    pub consent_context: Option<serde_json::Value>,
}

/// What happened to one item of a batch.
#[derive(Debug)]
pub enum ItemOutcome {
    Created(Touchpoint),
    /// The idempotency key was seen before: the stored touchpoint, unchanged.
    Duplicate(Touchpoint),
    Rejected(ApiError),
    /// An identity belongs to an erased person: dropped and counted, never turned back into a person.
    Suppressed,
}

/// One item of a mixed batch (the tracking API's `/v1/batch`), applied in order: a touchpoint, or an identify step
/// (Segment's identify, group and alias) that links identities, names and consents between touchpoints.
#[derive(Debug)]
pub enum BatchItem {
    Touchpoint(Box<TouchpointInput>),
    Identify(IdentifyInput),
}

/// What happened to one item of a mixed batch.
#[derive(Debug)]
pub enum BatchOutcome {
    Touchpoint(ItemOutcome),
    /// The customer the identities now point at; `Ok(None)` when one belongs to an erased person (suppressed).
    Identify(ApiResult<Option<Customer>>),
}

/// Refuses a batch larger than [`MAX_BATCH`]; `field` names the list as the caller sent it.
pub fn check_batch_size(len: usize, field: &str) -> ApiResult<()> {
    if len > MAX_BATCH {
        return Err(ApiError::validation(field, format!("at most {MAX_BATCH} per batch")));
    }
    Ok(())
}

struct Valid {
    /// Whole microseconds: what PostgreSQL keeps, and what timeline cursors carry.
    occurred_at: DateTime<Utc>,
    identities: Vec<Identity>,
    stage: JourneyStage,
    /// The sender gave the stage (kept when journey rules change).
    stage_explicit: bool,
    source: String,
    key: String,
    feedback: Option<Feedback>,
    /// The touchpoint the feedback rates.
    about: Option<Uuid>,
    currency: Option<String>,
}

fn validate(svc: &Services, stages: &super::stages::StageRules, input: &TouchpointInput) -> ApiResult<Valid> {
    let identities = Identity::parse_all(&input.identities, &svc.settings)?;
    if input.customer_id.is_none() && identities.is_empty() {
        return Err(ApiError::validation("customer", "name the customer by customerId or by at least one identity"));
    }
    let key = input.idempotency_key.trim();
    if key.is_empty() || key.len() > 128 {
        return Err(ApiError::validation("idempotencyKey", "1–128 characters"));
    }
    let source = input.source.trim();
    if source.is_empty() || source.len() > 64 {
        return Err(ApiError::validation("source", "1–64 characters"));
    }
    let now = Utc::now();
    if input.occurred_at > now + chrono::Duration::minutes(5) {
        return Err(ApiError::validation("occurredAt", "lies in the future"));
    }
    if let Some(props) = &input.properties {
        if !props.is_object() {
            return Err(ApiError::validation("properties", "must be a JSON object"));
        }
        if props.to_string().len() > MAX_PROPERTIES_BYTES {
            return Err(ApiError::validation("properties", format!("larger than {MAX_PROPERTIES_BYTES} bytes")));
        }
    }
    if let Some(value) = input.value
        && !value.is_finite()
    {
        return Err(ApiError::validation("value", "must be a finite number"));
    }
    let currency = match input.currency.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) if c.len() == 3 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => Some(c.to_ascii_uppercase()),
        Some(_) => return Err(ApiError::validation("currency", "an ISO 4217 code such as EUR or DKK")),
    };
    if input.value.is_some() && currency.is_none() && input.kind == TouchpointType::Purchase {
        return Err(ApiError::validation("currency", "a purchase with a value needs its currency"));
    }
    let feedback = match &input.feedback {
        None => None,
        Some(f) => {
            let (low, high) = f.metric.range();
            if f.score < low || f.score > high {
                return Err(ApiError::validation(
                    "feedback.score",
                    format!("{} answers run from {low} to {high}", f.metric.as_str().to_uppercase()),
                ));
            }
            let verbatim = f.verbatim.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
            if verbatim.as_ref().is_some_and(|v| v.chars().count() > 4000) {
                return Err(ApiError::validation("feedback.verbatim", "longer than 4000 characters"));
            }
            Some(Feedback { metric: f.metric, score: f.score as i16, verbatim })
        }
    };
    if feedback.is_some() && input.kind != TouchpointType::SurveyResponse {
        return Err(ApiError::validation("feedback", "only a SURVEY_RESPONSE carries feedback"));
    }
    Ok(Valid {
        occurred_at: input.occurred_at.trunc_subsecs(6),
        identities,
        stage: input.stage.unwrap_or_else(|| {
            let fallback = super::stages::default_stage_of(input.kind, input.channel, input.properties.as_ref());
            stages.stage_for(input.kind, input.channel, source, input.properties.as_ref(), fallback)
        }),
        stage_explicit: input.stage.is_some(),
        source: source.to_owned(),
        key: key.to_owned(),
        feedback,
        about: input.feedback.as_ref().and_then(|f| f.about_touchpoint_id),
        currency,
    })
}

/// Records a batch; one outcome per item, in order. Needs `touchpoints:write`.
///
/// Each item is its own transaction: one bad item never sinks the others, an acknowledged item is committed, and no
/// lock is held longer than one item's write (one transaction per batch was measured slower under 32 concurrent
/// batches: their locks queued behind each other). Known idempotency keys are looked up once for the whole batch.
pub async fn record_touchpoints(
    caller: &Caller,
    svc: &Services,
    items: Vec<TouchpointInput>,
) -> ApiResult<Vec<ItemOutcome>> {
    caller.require(Scope::TouchpointsWrite)?;
    check_batch_size(items.len(), "touchpoints")?;
    let items = items.into_iter().map(|input| BatchItem::Touchpoint(Box::new(input))).collect();
    // Only touchpoints went in, so there is one touchpoint outcome per item.
    Ok(record_batch(caller, svc, items)
        .await?
        .into_iter()
        .filter_map(|outcome| match outcome {
            BatchOutcome::Touchpoint(outcome) => Some(outcome),
            BatchOutcome::Identify(_) => None,
        })
        .collect())
}

/// Records a mixed batch of touchpoints and identify steps, in order; one outcome per item. Needs
/// `touchpoints:write` when it holds touchpoints and `profiles:write` when it holds identify steps.
///
/// Touchpoints are written as `record_touchpoints` writes them (one transaction each, the batch's known idempotency
/// keys looked up once); an identify step is `customers::identify` at its place in the batch, so a touchpoint sent
/// after an identify lands on the customer the identify linked. An identify step is not idempotent by key: a replay
/// applies it again, which links nothing new.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), items = items.len()))]
pub async fn record_batch(caller: &Caller, svc: &Services, items: Vec<BatchItem>) -> ApiResult<Vec<BatchOutcome>> {
    if items.iter().any(|item| matches!(item, BatchItem::Touchpoint(_))) {
        caller.require(Scope::TouchpointsWrite)?;
    }
    if items.iter().any(|item| matches!(item, BatchItem::Identify(_))) {
        caller.require(Scope::ProfilesWrite)?;
    }
    check_batch_size(items.len(), "batch")?;
    let rules = rules::for_tenant(svc, caller.tenant()).await?;
    let stages = super::stages::for_tenant(svc.db.conn(), caller.tenant()).await?;
    enum Checked {
        Touchpoint(Box<TouchpointInput>, ApiResult<Valid>),
        Identify(IdentifyInput),
    }
    let checked: Vec<Checked> = items
        .into_iter()
        .map(|item| match item {
            BatchItem::Touchpoint(input) => {
                let valid = validate(svc, &stages, &input);
                Checked::Touchpoint(input, valid)
            }
            BatchItem::Identify(input) => Checked::Identify(input),
        })
        .collect();
    let keys: Vec<String> = checked
        .iter()
        .filter_map(|c| if let Checked::Touchpoint(_, Ok(valid)) = c { Some(valid.key.clone()) } else { None })
        .collect();
    let mut known = known_keys(svc, caller.tenant(), &keys).await?;
    let mut outcomes = Vec::with_capacity(checked.len());
    let mut created = 0u64;
    for item in checked {
        let outcome = match item {
            Checked::Identify(input) => {
                BatchOutcome::Identify(crate::profiles::customers::identify(caller, svc, input).await)
            }
            Checked::Touchpoint(_, Err(err)) => BatchOutcome::Touchpoint(ItemOutcome::Rejected(err)),
            Checked::Touchpoint(input, Ok(valid)) => {
                let outcome = match known.get(&valid.key) {
                    Some(found) => ItemOutcome::Duplicate(found.clone()),
                    None => record_one(caller, svc, &rules, &input, &valid).await,
                };
                if let ItemOutcome::Created(tp) = &outcome {
                    known.insert(tp.idempotency_key.clone(), tp.clone());
                    created += 1;
                }
                BatchOutcome::Touchpoint(outcome)
            }
        };
        outcomes.push(outcome);
    }
    metrics::counter!("kontakt_touchpoints_ingested_total").increment(created);
    Ok(outcomes)
}

/// The touchpoints already stored under the batch's idempotency keys (one query per 500 keys).
async fn known_keys(svc: &Services, tenant: &TenantId, keys: &[String]) -> ApiResult<HashMap<String, Touchpoint>> {
    let mut known = HashMap::new();
    for chunk in keys.chunks(500) {
        let rows = touchpoint::of_tenant(tenant)
            .filter(touchpoint::Column::IdempotencyKey.is_in(chunk.iter().cloned()))
            .all(svc.db.conn())
            .await?;
        known.extend(rows.into_iter().filter_map(Touchpoint::from_row).map(|tp| (tp.idempotency_key.clone(), tp)));
    }
    Ok(known)
}

async fn record_one(
    caller: &Caller,
    svc: &Services,
    rules: &rules::CompiledRules,
    input: &TouchpointInput,
    valid: &Valid,
) -> ItemOutcome {
    let tenant = caller.tenant();
    for attempt in 1..=3 {
        let written = async {
            let txn = svc.db.begin_write().await?;
            let (outcome, changed) = write_in(&txn, svc, caller, rules, input, valid).await?;
            if let ItemOutcome::Created(tp) = &outcome {
                txn.commit().await?;
                // The customer's cached identities and latest page no longer hold (a new touchpoint, maybe a new
                // customer, identity or merge); subscribers hear of the touchpoint.
                changes::committed(svc, tenant, changed.touchpoint(tp.id, tp.customer_id)).await;
            } else {
                txn.rollback().await?;
            }
            Ok::<_, sea_orm::DbErr>(outcome)
        }
        .await;
        match written {
            Ok(result) => return result,
            Err(err) if ApiError::is_unique_violation(&err) => {
                // Either a concurrent replay of the same key, or two writers creating the same identity.
                match existing(svc, tenant, &valid.key).await {
                    Ok(Some(found)) => return ItemOutcome::Duplicate(found),
                    Ok(None) if attempt < 3 => continue,
                    Ok(None) => return ItemOutcome::Rejected(ApiError::from(err)),
                    Err(err) => return ItemOutcome::Rejected(err),
                }
            }
            Err(err) => return ItemOutcome::Rejected(err.into()),
        }
    }
    ItemOutcome::Rejected(ApiError::Conflict("could not settle concurrent writes; retry".into()))
}

async fn existing(svc: &Services, tenant: &TenantId, key: &str) -> ApiResult<Option<Touchpoint>> {
    let row =
        touchpoint::of_tenant(tenant).filter(touchpoint::Column::IdempotencyKey.eq(key)).one(svc.db.conn()).await?;
    Ok(row.and_then(Touchpoint::from_row))
}

/// Resolves the customer and writes one touchpoint (and the consents it carries) in `txn`, which the caller
/// commits on `Created` and rolls back otherwise. Also returns the customers resolution merged.
async fn write_in(
    txn: &DatabaseTransaction,
    svc: &Services,
    caller: &Caller,
    rules: &rules::CompiledRules,
    input: &TouchpointInput,
    valid: &Valid,
) -> Result<(ItemOutcome, Changed), sea_orm::DbErr> {
    let tenant = caller.tenant();
    let now = Utc::now();
    let mut merged = Changed::new();
    // The identity the touchpoint is attached through: an unmerge sends later touchpoints where it points.
    let mut via = None;
    let customer_id = match input.customer_id {
        Some(id) => {
            if !customer_exists(txn, tenant, id).await? {
                let err = ApiError::validation("customerId", format!("no customer {id}"));
                return Ok((ItemOutcome::Rejected(err), merged));
            }
            id
        }
        None => match resolution::resolve(txn, tenant, &svc.settings, rules, caller.subject(), &valid.identities, now)
            .await?
        {
            Resolution::Resolved(resolved) => {
                merged = resolution::changes_of(resolved.customer.id, resolved.created, &resolved.merged, false);
                via = resolved.via;
                resolved.customer.id
            }
            Resolution::Suppressed => return Ok((ItemOutcome::Suppressed, merged)),
            Resolution::Blocked => {
                let err = ApiError::validation("identities", "every identity is on the tenant's block list");
                return Ok((ItemOutcome::Rejected(err), merged));
            }
        },
    };
    let row = touchpoint::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        customer_id: Set(customer_id),
        channel: Set(input.channel.as_str().to_owned()),
        kind: Set(input.kind.as_str().to_owned()),
        stage: Set(valid.stage.as_str().to_owned()),
        occurred_at: Set(valid.occurred_at),
        received_at: Set(now),
        source: Set(valid.source.clone()),
        idempotency_key: Set(valid.key.clone()),
        properties: Set(input.properties.clone()),
        value: Set(input.value),
        currency: Set(valid.currency.clone()),
        feedback_metric: Set(valid.feedback.as_ref().map(|f| f.metric.as_str().to_owned())),
        feedback_score: Set(valid.feedback.as_ref().map(|f| f.score)),
        feedback_verbatim: Set(valid.feedback.as_ref().and_then(|f| f.verbatim.clone())),
        consent: Set(input.consent_context.clone()),
        identity_id: Set(via),
        commit_position: NotSet,
        stage_explicit: Set(Some(valid.stage_explicit)),
    }
    .insert(txn)
    .await?;
    crate::derived::maintain::mark(txn, tenant, &[customer_id], crate::derived::maintain::Cause::Touchpoint).await?;
    if row.feedback_metric.is_some() {
        let about = match valid.about {
            None => None,
            Some(id) => {
                let about = touchpoint::of_tenant(tenant).filter(touchpoint::Column::Id.eq(id)).one(txn).await?;
                match about.filter(|a| a.customer_id == customer_id) {
                    Some(about) => Some(about),
                    None => {
                        let err = ApiError::validation(
                            "feedback.aboutTouchpointId",
                            format!("no touchpoint {id} of this customer"),
                        );
                        return Ok((ItemOutcome::Rejected(err), merged));
                    }
                }
            }
        };
        crate::cx::answers::recorded(txn, tenant, &row, about.as_ref()).await?;
        // The cases the answer opened, was linked to or re-surveyed: announced once the item commits.
        merged = merged.cases(crate::cx::cases::changed_by_answer(txn, tenant, customer_id, row.id).await?);
    }
    for consent in &input.consents {
        let consent = RecordConsent { customer_id, ..consent.clone() };
        if let Err(err) = ledger::append_if_changed(txn, tenant, caller.subject(), consent).await {
            return Ok((ItemOutcome::Rejected(err), merged));
        }
    }
    let outcome = match Touchpoint::from_row(row) {
        Some(tp) => ItemOutcome::Created(tp),
        None => ItemOutcome::Rejected(ApiError::internal(anyhow::anyhow!("stored an unreadable touchpoint"))),
    };
    Ok((outcome, merged))
}

async fn customer_exists(txn: &DatabaseTransaction, tenant: &TenantId, id: Uuid) -> Result<bool, sea_orm::DbErr> {
    Ok(customer::of_tenant(tenant)
        .filter(customer::Column::Id.eq(id))
        .select_only()
        .column(customer::Column::Id)
        .into_tuple::<Uuid>()
        .one(txn)
        .await?
        .is_some())
}
