//! Customers: upsert by identities, reads by id and identity, keyset-paged lists, and batched identity loads.
use crate::changes::{self, CustomerChange};
use crate::privacy::access_log::AccessCategory;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    identity::{Identity, IdentityKind},
    records::{self, ApiValues},
    resolution::{self, Resolution},
    rules, traits,
};
use crate::{
    auth::{Caller, Scope, TenantId},
    consent::{ConsentSession, policy},
    error::{ApiError, ApiResult},
    pagination::{Page, PageRequest},
    services::Services,
    storage::entities::{customer, identity, trait_value},
};

/// The unified person, as the domain hands it out. Personal fields are masked later, in `privacy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Customer {
    pub id: Uuid,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub merged_into: Option<Uuid>,
    pub restricted: bool,
    /// The merged-away id the caller asked for, when this is the customer it was merged into.
    #[serde(default)]
    pub resolved_from: Option<Uuid>,
}

/// One identity of a customer.
#[derive(Debug, Clone)]
pub struct CustomerIdentity {
    pub identity: Identity,
    pub created_at: DateTime<Utc>,
}

/// An identity as a caller gives it, before normalisation.
#[derive(Debug, Clone)]
pub struct IdentityInput {
    pub kind: IdentityKind,
    pub value: String,
    pub source: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UpsertCustomer {
    pub identities: Vec<IdentityInput>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    /// The source the names come from (`api` when not given): they are trait values like any source's.
    pub source: Option<String>,
}

/// The source of names given through `upsertCustomer` without one.
pub const API_SOURCE: &str = "api";
/// The source of names given by tracking `identify` events.
pub const TRACKING_SOURCE: &str = "tracking";

#[derive(Debug, Clone)]
pub struct UpsertOutcome {
    pub customer: Customer,
    pub created: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    pub identity_kind: Option<IdentityKind>,
    pub updated_since: Option<DateTime<Utc>>,
    /// A trait name and a value some source gave it (compared as JSON).
    pub has_trait: Option<(String, serde_json::Value)>,
}

const MAX_IDENTITIES_PER_UPSERT: usize = 50;
const MAX_NAME_LEN: usize = 200;

impl From<customer::Model> for Customer {
    fn from(m: customer::Model) -> Self {
        Customer {
            id: m.id,
            given_name: m.given_name,
            family_name: m.family_name,
            created_at: m.created_at,
            updated_at: m.updated_at,
            merged_into: m.merged_into,
            restricted: m.restricted,
            resolved_from: None,
        }
    }
}

fn to_customer_identity(m: identity::Model) -> Option<CustomerIdentity> {
    let kind = m.kind.parse().ok()?;
    Some(CustomerIdentity { identity: Identity::from_stored(kind, m.source, m.value), created_at: m.created_at })
}

/// The names given, as trait values from `source`.
fn api_values(source: String, given_name: Option<String>, family_name: Option<String>) -> ApiValues {
    let mut values = serde_json::Map::new();
    for (name, value) in [("givenName", given_name), ("familyName", family_name)] {
        if let Some(value) = value {
            values.insert(name.to_owned(), serde_json::Value::String(value));
        }
    }
    ApiValues { source, values }
}

fn parse_name(field: &str, raw: Option<&str>) -> ApiResult<Option<String>> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(name) if name.chars().count() > MAX_NAME_LEN => {
            Err(ApiError::validation(field, format!("longer than {MAX_NAME_LEN} characters")))
        }
        Some(name) => Ok(Some(name.to_owned())),
    }
}

/// Creates the customer the identities point at, or updates the one they already point at.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn upsert_customer(caller: &Caller, svc: &Services, input: UpsertCustomer) -> ApiResult<UpsertOutcome> {
    caller.require(Scope::ProfilesWrite)?;
    if input.identities.is_empty() {
        return Err(ApiError::validation("identities", "give at least one identity"));
    }
    if input.identities.len() > MAX_IDENTITIES_PER_UPSERT {
        return Err(ApiError::validation("identities", format!("at most {MAX_IDENTITIES_PER_UPSERT}")));
    }
    let identities = Identity::parse_all(&input.identities, &svc.settings)?;
    let given_name = parse_name("givenName", input.given_name.as_deref())?;
    let family_name = parse_name("familyName", input.family_name.as_deref())?;
    let source = match input.source.as_deref() {
        Some(raw) => records::parse_source("source", raw)?,
        None => API_SOURCE.to_owned(),
    };
    let values = api_values(source, given_name, family_name);

    // Two writers creating the same new identity race on the unique index; the loser retries and attaches.
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        match write_upsert(caller.tenant(), caller.subject(), svc, &identities, &values).await {
            Err(err) if attempt < 4 && ApiError::is_unique_violation(&err) => continue,
            Err(err) => return Err(err.into()),
            Ok(Err(conflict)) => return Err(conflict),
            Ok(Ok(outcome)) => break outcome,
        }
    };

    Ok(outcome)
}

async fn write_upsert(
    tenant: &TenantId,
    actor: &str,
    svc: &Services,
    identities: &[Identity],
    values: &ApiValues,
) -> Result<ApiResult<UpsertOutcome>, sea_orm::DbErr> {
    let rules = match rules::for_tenant(svc, tenant).await {
        Ok(rules) => rules,
        Err(err) => return Ok(Err(err)),
    };
    let trait_rules = traits::rules_for(svc.db.conn(), tenant).await?;
    let txn = svc.db.begin_write().await?;
    let now = Utc::now();
    let resolved = match resolution::resolve(&txn, tenant, &svc.settings, &rules, actor, identities, now).await? {
        Resolution::Resolved(resolved) => *resolved,
        Resolution::Suppressed => {
            txn.rollback().await?;
            return Ok(Err(ApiError::Conflict("an identity belongs to an erased person and stays suppressed".into())));
        }
        Resolution::Blocked => {
            txn.rollback().await?;
            return Ok(Err(ApiError::validation("identities", "every identity is on the tenant's block list")));
        }
    };
    if !resolved.conflicting.is_empty() {
        txn.rollback().await?;
        return Ok(Err(ApiError::Conflict(format!(
            "these identities belong to {} different customers; merge them before updating them together",
            resolved.conflicting.len() + 1
        ))));
    }
    let model = set_names(&txn, tenant, &trait_rules, resolved.customer, identities, values, now).await?;
    txn.commit().await?;
    changes::committed(svc, tenant, resolution::changes_of(model.id, resolved.created, &resolved.merged, true)).await;
    Ok(Ok(UpsertOutcome { customer: model.into(), created: resolved.created }))
}

/// Keeps the names that were given as trait values of their source (a name not given keeps its values) and
/// re-derives the customer's names from the winners; returns the row as it now stands.
async fn set_names(
    txn: &sea_orm::DatabaseTransaction,
    tenant: &TenantId,
    trait_rules: &traits::TraitRules,
    row: customer::Model,
    identities: &[Identity],
    values: &ApiValues,
    now: DateTime<Utc>,
) -> Result<customer::Model, sea_orm::DbErr> {
    if values.values.is_empty() {
        return Ok(row);
    }
    let refresh = records::write_api_values(txn, tenant, trait_rules, row.id, identities, values, now).await?;
    if traits::refresh_derived(txn, tenant, trait_rules, &refresh, now).await? == 0 {
        return Ok(row);
    }
    let id = row.id;
    Ok(customer::of_tenant(tenant).filter(customer::Column::Id.eq(id)).one(txn).await?.unwrap_or(row))
}

/// One customer as a single read serves it: the row and its privacy state, read together from the database.
#[derive(Debug, Clone)]
pub struct Profile {
    pub customer: Customer,
}

/// One customer of the caller's tenant; `NOT_FOUND` for ids of other tenants. A merged-away id answers with its
/// survivor. One statement reads the row with its consent ledger (`policy::load_customer`), so the profile and
/// every decision about its personalization data in this request rest on the same fresh state; a single instance
/// keeps both in process (`cache::state`), dropped by every write before it answers, so no cache sits between an
/// acknowledged withdrawal or restriction and the next read.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), customer = %id))]
pub async fn read_profile(caller: &Caller, svc: &Services, session: &ConsentSession, id: Uuid) -> ApiResult<Profile> {
    caller.require(Scope::ProfilesRead)?;
    let not_found = || ApiError::not_found(format!("customer {id}"));
    let conn = svc.db.conn();
    let (mut row, mut privacy) = match super::cache::state(svc, caller.tenant(), id) {
        Some(cached) => cached.as_ref().clone(),
        None => {
            let ticket = super::cache::ticket(svc, id);
            let (row, privacy) = policy::load_customer(conn, caller.tenant(), id).await?.ok_or_else(not_found)?;
            super::cache::remember_state(svc, ticket, caller.tenant(), &row, &privacy);
            (row, privacy)
        }
    };
    // A merged-away id answers with the survivor (following a chain of merges, boundedly).
    for _ in 0..8 {
        let Some(survivor) = row.merged_into else { break };
        (row, privacy) = policy::load_customer(conn, caller.tenant(), survivor).await?.ok_or_else(not_found)?;
    }
    let mut customer = Customer::from(row);
    if customer.id != id {
        customer.resolved_from = Some(id);
    }
    policy::check_profile_visible(caller, customer.restricted)?;
    // Logged under the person served (the survivor), so the person's access log and export show the read.
    svc.access_log.record(caller, [customer.id], AccessCategory::Profile);
    session.remember(customer.id, privacy).await;
    Ok(Profile { customer })
}

/// The customer an id stands for now: itself, or the customer it was merged into (following a chain of merges,
/// boundedly). `None` when the id is not a customer of the tenant. Privacy operations (export, erasure) act on the
/// person, so a request naming an old, merged-away id reaches everything held about them.
pub(crate) async fn current_id(
    conn: &impl sea_orm::ConnectionTrait,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Option<Uuid>, sea_orm::DbErr> {
    let mut current = id;
    for _ in 0..8 {
        let merged_into: Option<Option<Uuid>> = customer::of_tenant(tenant)
            .filter(customer::Column::Id.eq(current))
            .select_only()
            .column(customer::Column::MergedInto)
            .into_tuple()
            .one(conn)
            .await?;
        match merged_into {
            None => return Ok(None),
            Some(None) => return Ok(Some(current)),
            Some(Some(survivor)) => current = survivor,
        }
    }
    Ok(Some(current))
}

/// The ids that stand for one person: the customer itself and every id merged into it (following chains of
/// merges, boundedly). Reads logged under an id before it was merged away belong to the person too.
pub(crate) async fn person_ids(
    conn: &impl sea_orm::ConnectionTrait,
    tenant: &TenantId,
    id: Uuid,
) -> Result<Vec<Uuid>, sea_orm::DbErr> {
    let mut ids = vec![id];
    let mut frontier = vec![id];
    for _ in 0..8 {
        let merged: Vec<Uuid> = customer::of_tenant(tenant)
            .filter(customer::Column::MergedInto.is_in(frontier))
            .select_only()
            .column(customer::Column::Id)
            .into_tuple()
            .all(conn)
            .await?;
        frontier = merged.into_iter().filter(|m| !ids.contains(m)).collect();
        if frontier.is_empty() {
            break;
        }
        ids.extend(frontier.iter().copied());
    }
    Ok(ids)
}

/// The customer an identity points at, after normalising the identity the same way writes do.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn find_by_identity(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    input: IdentityInput,
) -> ApiResult<Profile> {
    caller.require(Scope::ProfilesRead)?;
    let identity = Identity::parse(input.kind, &input.value, input.source.as_deref(), &svc.settings, "value")?;
    let found = resolution::find_identities(svc.db.conn(), caller.tenant(), std::slice::from_ref(&identity)).await?;
    let owner =
        found.first().map(|m| m.customer_id).ok_or_else(|| ApiError::not_found("customer with that identity"))?;
    read_profile(caller, svc, session, owner).await
}

/// A page of the tenant's customers in creation order (UUIDv7), keyset-paged on (tenant, id).
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn list_customers(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    filter: &CustomerFilter,
    page: PageRequest,
) -> ApiResult<CustomerPage> {
    caller.require(Scope::ProfilesRead)?;
    let mut query = customer::of_tenant(caller.tenant()).filter(customer::Column::MergedInto.is_null());
    if let Some(after) = page.after {
        query = query.filter(customer::Column::Id.gt(after));
    }
    if let Some(since) = filter.updated_since {
        query = query.filter(customer::Column::UpdatedAt.gte(since));
    }
    if let Some(kind) = filter.identity_kind {
        query = query.filter(
            customer::Column::Id.in_subquery(
                Query::select()
                    .column(identity::Column::CustomerId)
                    .from(identity::Entity)
                    .and_where(identity::Column::Tenant.eq(caller.tenant().as_str()))
                    .and_where(identity::Column::Kind.eq(kind.as_str()))
                    .to_owned(),
            ),
        );
    }
    if let Some((name, value)) = &filter.has_trait {
        // JSON is compared in its canonical text form, which both backends store.
        let text = serde_json::to_string(value).map_err(ApiError::internal)?;
        query = query.filter(
            customer::Column::Id.in_subquery(
                Query::select()
                    .column(trait_value::Column::CustomerId)
                    .from(trait_value::Entity)
                    .and_where(trait_value::Column::Tenant.eq(caller.tenant().as_str()))
                    .and_where(trait_value::Column::Name.eq(name.as_str()))
                    .and_where(Expr::col(trait_value::Column::Value).cast_as("text").eq(text))
                    .to_owned(),
            ),
        );
    }
    let mut rows = query.order_by_asc(customer::Column::Id).limit(page.first as u64 + 1).all(svc.db.conn()).await?;
    let has_next_page = rows.len() > page.first;
    rows.truncate(page.first);
    let resume_after = rows.last().map(|r| r.id);
    let fetched = rows.len();
    // Restricted customers are served to privacy administration only: left out here, and counted.
    rows.retain(|r| policy::check_profile_visible(caller, r.restricted).is_ok());
    svc.access_log.record(caller, rows.iter().map(|r| r.id), AccessCategory::Profile);
    session.expect(rows.iter().map(|r| r.id)).await;
    Ok(CustomerPage {
        excluded: fetched - rows.len(),
        resume_after,
        page: Page {
            items: rows.into_iter().map(Customer::from).collect(),
            has_next_page,
            has_previous_page: page.after.is_some(),
        },
    })
}

/// A page of customers, with how many the policy left out.
#[derive(Debug, Clone)]
pub struct CustomerPage {
    pub page: Page<Customer>,
    pub excluded: usize,
    /// The id to resume after, even when every customer of the page was left out.
    pub resume_after: Option<Uuid>,
}

/// The identities of many customers in one query (the DataLoader behind `Customer.identities`).
pub async fn identities_of(
    tenant: &TenantId,
    svc: &Services,
    customer_ids: &[Uuid],
) -> ApiResult<HashMap<Uuid, Vec<CustomerIdentity>>> {
    let rows = match customer_ids {
        // One customer (a profile read): from the profile cache when it holds them.
        [one] => match super::cache::identities(svc, tenant, *one).await {
            Some(rows) => rows,
            None => {
                let ticket = super::cache::ticket(svc, *one);
                let rows = identity_rows(tenant, svc, &[*one]).await?;
                super::cache::remember_identities(svc, ticket, tenant, *one, &rows).await;
                rows
            }
        },
        _ => identity_rows(tenant, svc, customer_ids).await?,
    };
    let mut by_customer: HashMap<Uuid, Vec<CustomerIdentity>> = HashMap::new();
    for row in rows {
        let owner = row.customer_id;
        if let Some(identity) = to_customer_identity(row) {
            by_customer.entry(owner).or_default().push(identity);
        }
    }
    Ok(by_customer)
}

/// The identity rows of these customers, oldest first.
async fn identity_rows(tenant: &TenantId, svc: &Services, customer_ids: &[Uuid]) -> ApiResult<Vec<identity::Model>> {
    Ok(identity::of_tenant(tenant)
        .filter(identity::Column::CustomerId.is_in(customer_ids.iter().copied()))
        .order_by_asc(identity::Column::Id)
        .all(svc.db.conn())
        .await?)
}

/// Changes to the caller's tenant's customers as they happen (on every instance, through pub/sub).
pub async fn watch_changes(
    caller: &Caller,
    svc: &Services,
) -> ApiResult<futures_util::stream::BoxStream<'static, CustomerChange>> {
    use futures_util::StreamExt;
    caller.require(Scope::ProfilesRead)?;
    let stream = svc.pubsub.subscribe(&changes::customers_topic(caller.tenant())).await.map_err(|err| {
        tracing::error!(error = %err, "subscribing to customer changes failed");
        ApiError::Unavailable("change notifications are unavailable, try again".into())
    })?;
    Ok(stream.filter_map(|payload| async move { serde_json::from_str(&payload).ok() }).boxed())
}

/// What a tracking `identify`/`alias`/`group` call says about a person.
#[derive(Debug, Clone)]
pub struct IdentifyInput {
    pub identities: Vec<IdentityInput>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub consents: Vec<crate::consent::RecordConsent>,
}

/// Links identities into one customer (creating it when none matches), updates names and appends the consents
/// that changed, in one transaction. Unlike `upsert_customer` it never refuses: identities that already belong
/// to another customer stay there until a merge. `None` when an identity was erased (suppressed): nothing is
/// written. Needs `profiles:write`.
pub async fn identify(caller: &Caller, svc: &Services, input: IdentifyInput) -> ApiResult<Option<Customer>> {
    caller.require(Scope::ProfilesWrite)?;
    let identities = Identity::parse_all(&input.identities, &svc.settings)?;
    if identities.is_empty() {
        return Err(ApiError::validation("identities", "give at least one identity"));
    }
    let given_name = parse_name("givenName", input.given_name.as_deref())?;
    let family_name = parse_name("familyName", input.family_name.as_deref())?;
    let values = api_values(TRACKING_SOURCE.to_owned(), given_name, family_name);
    let mut attempt = 0;
    let customer = loop {
        attempt += 1;
        match write_identify(caller, svc, &identities, &values, &input.consents).await {
            Err(err) if attempt < 4 && ApiError::is_unique_violation(&err) => continue,
            Err(err) => return Err(err.into()),
            Ok(result) => break result?,
        }
    };
    Ok(customer)
}

async fn write_identify(
    caller: &Caller,
    svc: &Services,
    identities: &[Identity],
    values: &ApiValues,
    consents: &[crate::consent::RecordConsent],
) -> Result<ApiResult<Option<Customer>>, sea_orm::DbErr> {
    let rules = match rules::for_tenant(svc, caller.tenant()).await {
        Ok(rules) => rules,
        Err(err) => return Ok(Err(err)),
    };
    let trait_rules = traits::rules_for(svc.db.conn(), caller.tenant()).await?;
    let txn = svc.db.begin_write().await?;
    let now = Utc::now();
    let resolved =
        match resolution::resolve(&txn, caller.tenant(), &svc.settings, &rules, caller.subject(), identities, now)
            .await?
        {
            Resolution::Resolved(resolved) => *resolved,
            Resolution::Suppressed => {
                txn.rollback().await?;
                return Ok(Ok(None));
            }
            Resolution::Blocked => {
                txn.rollback().await?;
                return Ok(Err(ApiError::validation("identities", "every identity is on the tenant's block list")));
            }
        };
    let (merged, created) = (resolved.merged.clone(), resolved.created);
    let model = set_names(&txn, caller.tenant(), &trait_rules, resolved.customer, identities, values, now).await?;
    for consent in consents {
        let consent = crate::consent::RecordConsent { customer_id: model.id, ..consent.clone() };
        if let Err(err) =
            crate::consent::ledger::append_if_changed(&txn, caller.tenant(), caller.subject(), consent).await
        {
            txn.rollback().await?;
            return Ok(Err(err));
        }
    }
    txn.commit().await?;
    changes::committed(svc, caller.tenant(), resolution::changes_of(model.id, created, &merged, true)).await;
    Ok(Ok(Some(model.into())))
}
