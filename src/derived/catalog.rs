//! Computed traits and segments as a tenant defines them: versioned definitions (`definitions` table) in the
//! language of `derived::definitions`, served for a customer by evaluating the latest versions when read — so a
//! window is exact at the moment of the read, a merge or an unmerge shows in the very next read of both people, and
//! a new version answers at once (nothing to backfill: nothing is stored per customer).
//!
//! Every served value is derived personalization data: the caller's permit (consent to the caller's purpose) and
//! `policy::profiling_allowed` are checked first, and only definitions declared for the caller's purpose are
//! served (privacy administration sees all). Lists (`segmentMembers`, `previewDefinition`) leave out the customers
//! they may not serve and count them.
//!
//! Bounds: a tenant has at most [`MAX_DEFINITIONS`] keys; a definition sees a customer's latest [`MAX_FACTS`]
//! touchpoints; `segmentMembers` examines at most [`SCAN_LIMIT`] customers per call and says where to go on.
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use super::definitions::{self, Body, Fact, References, Subject};
use crate::{
    auth::{Caller, PurposeKind, Scope, TenantId},
    consent::{ConsentPurpose, ConsentSession, Permitted, policy},
    error::{ApiError, ApiResult},
    privacy::access_log::AccessCategory,
    profiles::{IdentityKind, customers, traits},
    services::Services,
    storage::{
        entities::{customer, cx_answer, definition, touchpoint},
        window::{TopPerCustomer, top_per_customer},
    },
    touchpoints::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
};

pub const MAX_DEFINITIONS: usize = 500;
pub const MAX_FACTS: usize = 5000;
pub const SCAN_LIMIT: usize = 5000;
const CHUNK: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Segment,
    ComputedTrait,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Segment => "segment",
            Kind::ComputedTrait => "computed_trait",
        }
    }
}

/// One version of a definition.
#[derive(Debug, Clone)]
pub struct Definition {
    pub id: Uuid,
    pub key: String,
    pub kind: Kind,
    pub purpose: ConsentPurpose,
    pub version: i32,
    pub body: Value,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// When this version began to answer reads; `None` while its backfill runs (the previous version answers).
    pub activated_at: Option<DateTime<Utc>>,
    /// When every customer's stored state was computed for this version.
    pub backfilled_at: Option<DateTime<Utc>>,
    parsed: Body,
}

impl Definition {
    pub fn parsed(&self) -> &Body {
        &self.parsed
    }
}

fn from_row(row: definition::Model) -> Option<Definition> {
    let kind = match row.kind.as_str() {
        "segment" => Kind::Segment,
        "computed_trait" => Kind::ComputedTrait,
        _ => return None,
    };
    let parsed = definitions::parse(kind == Kind::Segment, &row.body).ok()?;
    Some(Definition {
        id: row.id,
        key: row.key,
        kind,
        purpose: row.purpose.parse().ok()?,
        version: row.version,
        body: row.body,
        created_at: row.created_at,
        created_by: row.created_by,
        activated_at: row.activated_at,
        backfilled_at: row.backfilled_at,
        parsed,
    })
}

/// The tenant's definitions, the latest version of each key, by key.
pub struct Catalog(BTreeMap<String, Definition>);

impl References for Catalog {
    fn computed_trait(&self, key: &str) -> Option<&definitions::Aggregation> {
        match self.0.get(key).map(|d| &d.parsed) {
            Some(Body::ComputedTrait(a)) => Some(a),
            _ => None,
        }
    }

    fn segment(&self, key: &str) -> Option<&definitions::Condition> {
        match self.0.get(key).map(|d| &d.parsed) {
            Some(Body::Segment(c)) => Some(c),
            _ => None,
        }
    }
}

impl Catalog {
    pub fn definitions(&self) -> impl Iterator<Item = &Definition> {
        self.0.values()
    }

    pub fn get(&self, key: &str) -> Option<&Definition> {
        self.0.get(key)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How long an instance keeps a tenant's parsed definitions. The instance that stores a version forgets its copy at
/// once; other instances serve the new version within this.
pub const CATALOG_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Parsed definitions per tenant, kept [`CATALOG_TTL`] in the process.
#[derive(Clone)]
pub struct CatalogCache(moka::future::Cache<String, std::sync::Arc<Catalog>>);

impl Default for CatalogCache {
    fn default() -> Self {
        CatalogCache(moka::future::Cache::builder().max_capacity(10_000).time_to_live(CATALOG_TTL).build())
    }
}

/// The tenant's current definitions, from the cache when it holds them.
pub(crate) async fn cached(svc: &Services, tenant: &TenantId) -> ApiResult<std::sync::Arc<Catalog>> {
    if let Some(found) = svc.definitions.0.get(tenant.as_str()).await {
        return Ok(found);
    }
    let found = std::sync::Arc::new(catalog(svc.db.conn(), tenant).await?);
    svc.definitions.0.insert(tenant.as_str().to_owned(), found.clone()).await;
    Ok(found)
}

/// The tenant's definitions that answer reads: the latest activated version of each key.
pub async fn catalog(conn: &impl sea_orm::ConnectionTrait, tenant: &TenantId) -> ApiResult<Catalog> {
    let rows = definition::of_tenant(tenant)
        .filter(definition::Column::ActivatedAt.is_not_null())
        .order_by_asc(definition::Column::Version)
        .all(conn)
        .await?;
    Ok(by_key(rows))
}

/// The latest version of each key, activated or still being backfilled: what derived state is maintained by, and
/// what a new version is checked against.
pub async fn latest(conn: &impl sea_orm::ConnectionTrait, tenant: &TenantId) -> ApiResult<Catalog> {
    let rows = definition::of_tenant(tenant).order_by_asc(definition::Column::Version).all(conn).await?;
    Ok(by_key(rows))
}

fn by_key(rows: Vec<definition::Model>) -> Catalog {
    let mut latest = BTreeMap::new();
    for row in rows {
        if let Some(d) = from_row(row) {
            latest.insert(d.key.clone(), d);
        }
    }
    Catalog(latest)
}

/// Marks the versions a finished backfill computed (`ids`) backfilled and activates those still pending; forgets
/// this instance's cached catalog of the tenant. Returns how many were activated.
pub async fn activate(svc: &Services, tenant: &TenantId, ids: &[Uuid]) -> ApiResult<u64> {
    use sea_orm::sea_query::Expr;
    let now = Utc::now();
    let activated = definition::update_of_tenant(tenant)
        .col_expr(definition::Column::ActivatedAt, Expr::value(now))
        .filter(definition::Column::Id.is_in(ids.iter().copied()))
        .filter(definition::Column::ActivatedAt.is_null())
        .exec(svc.db.conn())
        .await?
        .rows_affected;
    definition::update_of_tenant(tenant)
        .col_expr(definition::Column::BackfilledAt, Expr::value(now))
        .filter(definition::Column::Id.is_in(ids.iter().copied()))
        .exec(svc.db.conn())
        .await?;
    svc.definitions.0.invalidate(tenant.as_str()).await;
    Ok(activated)
}

/// Stores a new version of a definition (the first is version 1), checked against the tenant's other definitions.
/// Needs `profiles:write`.
pub async fn define(
    caller: &Caller,
    svc: &Services,
    kind: Kind,
    key: &str,
    purpose: &str,
    body: Value,
) -> ApiResult<Definition> {
    caller.require(Scope::ProfilesWrite)?;
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && key.starts_with(|c: char| c.is_ascii_lowercase());
    if !key_ok {
        return Err(ApiError::validation("key", "1–64 of a–z, 0–9 and `_`, starting with a letter"));
    }
    let purpose: ConsentPurpose = purpose.parse().map_err(|e: String| ApiError::validation("purpose", e))?;
    let parsed = definitions::parse(kind == Kind::Segment, &body)?;
    let tenant = caller.tenant();
    let txn = svc.db.begin_write().await?;
    let current = latest(&txn, tenant).await?;
    if let Some(existing) = current.0.get(key)
        && existing.kind != kind
    {
        return Err(ApiError::validation("key", format!("`{key}` is a {} already", existing.kind.as_str())));
    }
    if !current.0.contains_key(key) && current.0.len() >= MAX_DEFINITIONS {
        return Err(ApiError::validation("key", format!("at most {MAX_DEFINITIONS} definitions per tenant")));
    }
    definitions::validate(key, &parsed, &current)?;
    let version = current.0.get(key).map_or(1, |d| d.version + 1);
    let row = definition::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        key: Set(key.to_owned()),
        kind: Set(kind.as_str().to_owned()),
        purpose: Set(purpose.as_str().to_owned()),
        version: Set(version),
        body: Set(body),
        created_at: Set(Utc::now()),
        created_by: Set(caller.subject().chars().take(256).collect()),
        // A new key answers at once (there is nothing before it to keep serving); a new version of a key waits for
        // its backfill while the previous version answers.
        activated_at: Set((version == 1).then(Utc::now)),
        backfilled_at: Set(None),
    }
    .insert(&txn)
    .await?;
    txn.commit().await?;
    svc.definitions.0.invalidate(tenant.as_str()).await;
    // Every version is backfilled: the stored memberships and values follow it, and their changes are announced.
    let job_caller = Caller::for_job(tenant.clone(), caller.subject().to_owned(), [Scope::ProfilesWrite].into());
    crate::jobs::enqueue(&job_caller, svc, crate::jobs::JobKind::BackfillDefinitions).await?;
    from_row(row).ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored an unreadable definition")))
}

/// The latest version of each of the tenant's definitions (`activatedAt` unset: still backfilling, the previous
/// version answers). Needs `profiles:read`.
pub async fn list(caller: &Caller, svc: &Services) -> ApiResult<Vec<Definition>> {
    caller.require(Scope::ProfilesRead)?;
    Ok(latest(svc.db.conn(), caller.tenant()).await?.0.into_values().collect())
}

/// Whether a definition may be served to this caller: declared for the caller's purpose (privacy administration:
/// any).
fn serves(caller: &Caller, d: &Definition) -> bool {
    match caller.purpose().kind() {
        PurposeKind::PrivacyAdmin => true,
        _ => caller.purpose().consent().is_some_and(|(p, _)| p == d.purpose),
    }
}

/// What one customer's definitions are evaluated over.
#[derive(Default)]
pub(crate) struct SubjectData {
    facts: Vec<Fact>,
    traits: HashMap<String, Value>,
    identities: Vec<IdentityKind>,
    feedback: HashMap<FeedbackMetric, i32>,
}

impl SubjectData {
    pub(crate) fn subject(&self, now: DateTime<Utc>) -> Subject<'_> {
        Subject {
            now,
            touchpoints: &self.facts,
            traits: &self.traits,
            identities: &self.identities,
            latest_feedback: &self.feedback,
        }
    }
}

/// The subjects of many customers (four statements per chunk of 500: touchpoints, traits, identities, feedback).
pub(crate) async fn subjects(caller: &Caller, svc: &Services, ids: &[Uuid]) -> ApiResult<HashMap<Uuid, SubjectData>> {
    let tenant = caller.tenant();
    let query = TopPerCustomer {
        table: "touchpoints",
        key_columns: &["customer_id"],
        filter: None,
        order_desc: &["occurred_at", "id"],
        limit: MAX_FACTS,
    };
    let rows = top_per_customer::<touchpoint::Entity>(&svc.db, tenant, &query, ids).await?;
    let mut traits = traits::traits_of_many(caller, svc, ids).await?;
    let mut identities = customers::identities_of(tenant, svc, ids).await?;
    let answers: Vec<(Uuid, String, i16, DateTime<Utc>)> = cx_answer::of_tenant(tenant)
        .filter(cx_answer::Column::CustomerId.is_in(ids.iter().copied()))
        .select_only()
        .column(cx_answer::Column::CustomerId)
        .column(cx_answer::Column::Metric)
        .column(cx_answer::Column::Score)
        .column(cx_answer::Column::AnsweredAt)
        .order_by_asc(cx_answer::Column::AnsweredAt)
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    let mut out: HashMap<Uuid, SubjectData> = HashMap::new();
    for (id, list) in rows {
        let facts = list
            .into_iter()
            .filter_map(|t| {
                Some(Fact {
                    at: t.occurred_at,
                    kind: TouchpointType::parse(&t.kind)?,
                    channel: Channel::parse(&t.channel)?,
                    stage: JourneyStage::parse(&t.stage)?,
                    value: t.value,
                    properties: t.properties,
                })
            })
            .collect();
        let data = SubjectData {
            facts,
            traits: traits.remove(&id).unwrap_or_default().into_iter().map(|(k, v)| (k, v.value)).collect(),
            identities: identities.remove(&id).unwrap_or_default().iter().map(|i| i.identity.kind()).collect(),
            feedback: HashMap::new(),
        };
        out.insert(id, data);
    }
    for (id, metric, score, _) in answers {
        if let (Some(data), Some(metric)) = (out.get_mut(&id), FeedbackMetric::parse(&metric)) {
            // In time order: the last one written is the latest.
            data.feedback.insert(metric, score as i32);
        }
    }
    Ok(out)
}

/// What a customer is, by the definitions served to the caller.
#[derive(Debug, Clone, Default)]
pub struct Derived {
    /// Segments the customer is in now, with when time alone could take them out.
    pub segments: Vec<(Definition, Option<DateTime<Utc>>)>,
    /// Computed traits, with when time alone could change them.
    pub traits: Vec<(Definition, Value, Option<DateTime<Utc>>)>,
}

fn evaluate(catalog: &Catalog, caller: &Caller, data: &SubjectData, now: DateTime<Utc>) -> Derived {
    let subject = data.subject(now);
    let mut derived = Derived::default();
    for d in catalog.0.values().filter(|d| serves(caller, d)) {
        match &d.parsed {
            Body::Segment(c) => {
                let e = definitions::evaluate_segment(c, &subject, catalog);
                if e.value {
                    derived.segments.push((d.clone(), e.changes_at));
                }
            }
            Body::ComputedTrait(a) => {
                let e = definitions::evaluate_trait(a, &subject, catalog);
                derived.traits.push((d.clone(), e.value, e.changes_at));
            }
        }
    }
    derived
}

/// A customer's segments and computed traits now. Needs `profiles:read`; logged.
pub async fn read(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    id: Uuid,
) -> ApiResult<Permitted<Derived>> {
    caller.require(Scope::ProfilesRead)?;
    let permit = session.decide_derived(caller, svc, id).await?;
    let catalog = cached(svc, caller.tenant()).await?;
    let mut data = subjects(caller, svc, &[id]).await?;
    let derived = evaluate(&catalog, caller, &data.remove(&id).unwrap_or_default(), Utc::now());
    svc.access_log.record(caller, [id], AccessCategory::Scores);
    Ok(permit.serve(derived))
}

/// Customers of a chunk the caller may be served derived data about.
async fn visible(caller: &Caller, svc: &Services, ids: &[Uuid]) -> ApiResult<std::collections::HashSet<Uuid>> {
    let states = policy::states_of(svc.db.conn(), caller.tenant(), ids).await?;
    let now = Utc::now();
    Ok(states
        .into_iter()
        .filter(|(id, s)| policy::decide_derived(caller, *id, s, now).is_ok())
        .map(|(id, _)| id)
        .collect())
}

/// One page of a segment's members.
#[derive(Debug, Clone, Default)]
pub struct Members {
    pub members: Vec<Uuid>,
    /// Members left out: the caller may not be served derived data about them.
    pub excluded: u64,
    /// Customers examined in this call.
    pub scanned: u64,
    /// Where the next call goes on (the last customer examined); `None` when every customer was examined.
    pub resume_after: Option<Uuid>,
}

/// The members of segment `key`, in customer id order after `after`: examines customers until `first` members are
/// found or [`SCAN_LIMIT`] customers were examined. Needs `profiles:read`; the members served are logged.
pub async fn members(
    caller: &Caller,
    svc: &Services,
    key: &str,
    first: usize,
    after: Option<Uuid>,
) -> ApiResult<Members> {
    caller.require(Scope::ProfilesRead)?;
    if !(1..=500).contains(&first) {
        return Err(ApiError::validation("first", "from 1 to 500"));
    }
    let tenant = caller.tenant();
    let catalog = cached(svc, tenant).await?;
    let Some(d) = catalog.0.get(key).filter(|d| d.kind == Kind::Segment) else {
        return Err(ApiError::not_found(format!("segment {key}")));
    };
    let Body::Segment(condition) = d.parsed.clone() else { return Err(ApiError::not_found(format!("segment {key}"))) };
    if !serves(caller, d) {
        return Err(ApiError::ConsentRequired {
            purpose: caller.purpose().as_str().to_owned(),
            reason: "NOT_GIVEN",
            message: format!("segment `{key}` serves the `{}` purpose", d.purpose),
        });
    }
    let mut out = Members { resume_after: after, ..Members::default() };
    let now = Utc::now();
    loop {
        let mut query = customer::of_tenant(tenant)
            .filter(customer::Column::MergedInto.is_null())
            .order_by_asc(customer::Column::Id)
            .select_only()
            .column(customer::Column::Id)
            .limit(CHUNK as u64);
        if let Some(after) = out.resume_after {
            query = query.filter(customer::Column::Id.gt(after));
        }
        let ids: Vec<Uuid> = query.into_tuple().all(svc.db.conn()).await?;
        if ids.is_empty() {
            out.resume_after = None;
            break;
        }
        let allowed = visible(caller, svc, &ids).await?;
        let data = subjects(caller, svc, &ids).await?;
        for id in &ids {
            out.scanned += 1;
            out.resume_after = Some(*id);
            let Some(d) = data.get(id) else { continue };
            let subject = d.subject(now);
            if definitions::evaluate_segment(&condition, &subject, catalog.as_ref()).value {
                if allowed.contains(id) {
                    out.members.push(*id);
                } else {
                    out.excluded += 1;
                }
            }
            if out.members.len() >= first {
                break;
            }
        }
        if out.members.len() >= first {
            break;
        }
        if ids.len() < CHUNK {
            // The last customer was examined.
            out.resume_after = None;
            break;
        }
        if out.scanned as usize >= SCAN_LIMIT {
            break;
        }
    }
    svc.access_log.record(caller, out.members.iter().copied(), AccessCategory::Scores);
    Ok(out)
}

/// What a definition would answer now, over a sample of the tenant's customers.
#[derive(Debug, Clone, Default)]
pub struct Preview {
    pub sampled: u64,
    /// Customers of the sample the definition matches (a segment) or gives a value (a computed trait).
    pub matched: u64,
    /// Of those, the ones the caller's purpose may be served.
    pub visible: u64,
    /// Up to 10 visible customers, with the computed value for a computed trait.
    pub examples: Vec<(Uuid, Value)>,
}

/// Checks a body as `define` would and evaluates it over the `sample` most recently created customers, without
/// storing anything. Needs `profiles:read`.
pub async fn preview(
    caller: &Caller,
    svc: &Services,
    kind: Kind,
    key: &str,
    body: &Value,
    sample: usize,
) -> ApiResult<Preview> {
    caller.require(Scope::ProfilesRead)?;
    if !(1..=SCAN_LIMIT).contains(&sample) {
        return Err(ApiError::validation("sample", format!("from 1 to {SCAN_LIMIT}")));
    }
    let tenant = caller.tenant();
    let parsed = definitions::parse(kind == Kind::Segment, body)?;
    let catalog = cached(svc, tenant).await?;
    definitions::validate(key, &parsed, catalog.as_ref())?;
    let ids: Vec<Uuid> = customer::of_tenant(tenant)
        .filter(customer::Column::MergedInto.is_null())
        .order_by_desc(customer::Column::Id)
        .select_only()
        .column(customer::Column::Id)
        .limit(sample as u64)
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    let now = Utc::now();
    let mut out = Preview::default();
    for chunk in ids.chunks(CHUNK) {
        let allowed = visible(caller, svc, chunk).await?;
        let data = subjects(caller, svc, chunk).await?;
        for id in chunk {
            out.sampled += 1;
            let Some(d) = data.get(id) else { continue };
            let subject = d.subject(now);
            let value = match &parsed {
                Body::Segment(c) => Value::Bool(definitions::evaluate_segment(c, &subject, catalog.as_ref()).value),
                Body::ComputedTrait(a) => definitions::evaluate_trait(a, &subject, catalog.as_ref()).value,
            };
            let matched = match &value {
                Value::Bool(b) => *b,
                Value::Null => false,
                Value::Array(list) => !list.is_empty(),
                _ => true,
            };
            if matched {
                out.matched += 1;
                if allowed.contains(id) {
                    out.visible += 1;
                    if out.examples.len() < 10 {
                        out.examples.push((*id, value));
                    }
                }
            }
        }
    }
    Ok(out)
}
