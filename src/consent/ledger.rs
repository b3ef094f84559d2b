//! The consent ledger: decisions are appended, never overwritten; the current state is derived from them.
use crate::changes::{Changed, CustomerChangeKind};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, QueryFilter, QueryOrder, QuerySelect, Set,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope, TenantId},
    consent::ConsentPurpose,
    error::{ApiError, ApiResult},
    pagination::{Page, PageRequest},
    services::Services,
    storage::entities::{consent_event, customer},
};

/// A person's decision about one purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum ConsentStatus {
    Granted,
    Denied,
    Withdrawn,
}

impl ConsentStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Granted => "granted",
            ConsentStatus::Denied => "denied",
            ConsentStatus::Withdrawn => "withdrawn",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [ConsentStatus::Granted, ConsentStatus::Denied, ConsentStatus::Withdrawn].into_iter().find(|c| c.as_str() == s)
    }
}

/// One entry of the ledger.
#[derive(Debug, Clone)]
pub struct ConsentEvent {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub purpose: ConsentPurpose,
    /// `None` means every channel of the purpose.
    pub channel: Option<String>,
    pub status: ConsentStatus,
    pub captured_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: String,
    pub policy_version: Option<String>,
    pub legal_basis: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub evidence: Option<serde_json::Value>,
}

/// The decision in force for one (purpose, channel): the latest event by capture time.
pub type ConsentState = ConsentEvent;

impl ConsentEvent {
    /// Granted and not expired at `at`.
    pub fn is_effective_at(&self, at: DateTime<Utc>) -> bool {
        self.status == ConsentStatus::Granted && self.expires_at.is_none_or(|e| e > at)
    }
}

fn from_row(m: consent_event::Model) -> Option<ConsentEvent> {
    Some(ConsentEvent {
        id: m.id,
        customer_id: m.customer_id,
        purpose: m.purpose.parse().ok()?,
        channel: (!m.channel.is_empty()).then_some(m.channel),
        status: ConsentStatus::parse(&m.status)?,
        captured_at: m.captured_at,
        recorded_at: m.recorded_at,
        source: m.source,
        policy_version: m.policy_version,
        legal_basis: m.legal_basis,
        expires_at: m.expires_at,
        evidence: m.evidence,
    })
}

/// A decision to append.
#[derive(Debug, Clone)]
pub struct RecordConsent {
    pub customer_id: Uuid,
    /// As the caller wrote it: a `ConsentPurpose` text, optionally with its channel (`marketing:email`); `append`
    /// refuses any other.
    pub purpose: String,
    pub channel: Option<String>,
    pub status: ConsentStatus,
    pub captured_at: Option<DateTime<Utc>>,
    pub source: String,
    pub policy_version: Option<String>,
    pub legal_basis: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub evidence: Option<serde_json::Value>,
}

const LEGAL_BASES: [&str; 6] =
    ["consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interests"];

fn clean(field: &str, value: Option<&str>, max: usize) -> ApiResult<Option<String>> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if v.chars().count() > max => Err(ApiError::validation(field, format!("longer than {max} characters"))),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// The purpose and channel a decision is about. A purpose written the way callers act for it, `marketing:email`,
/// is the purpose `marketing` for the channel `email`; a `channel` given as well must name the same channel.
fn purpose_and_channel(purpose: &str, channel: Option<&str>) -> ApiResult<(ConsentPurpose, Option<String>)> {
    let invalid = || {
        ApiError::validation(
            "purpose",
            format!("one of {}, optionally followed by `:channel` (marketing:email)", ConsentPurpose::list()),
        )
    };
    let channel = clean("channel", channel, 32)?.map(|c| c.to_lowercase());
    let (purpose, named) = match purpose.trim().split_once(':') {
        Some((purpose, named)) => (purpose, Some(named)),
        None => (purpose.trim(), None),
    };
    if purpose.is_empty() || purpose.contains(':') {
        return Err(invalid());
    }
    let purpose = purpose.parse::<ConsentPurpose>().map_err(|e| {
        ApiError::validation("purpose", format!("{e}; a channel may follow after `:` (marketing:email)"))
    })?;
    let Some(named) = named else { return Ok((purpose, channel)) };
    let named = clean("purpose", Some(named), 32)?.ok_or_else(invalid)?.to_lowercase();
    if named.contains(':') {
        return Err(invalid());
    }
    match channel {
        Some(given) if given != named => Err(ApiError::validation(
            "channel",
            format!("`{given}` disagrees with the channel `{named}` named in the purpose"),
        )),
        _ => Ok((purpose, Some(named))),
    }
}

/// Appends a decision for a customer of the caller's tenant. Needs `consent:write`. Takes effect at once: the
/// customer's consent version moves in the same transaction, and every later read decides from the ledger.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant(), customer = %input.customer_id))]
pub async fn record_consent(caller: &Caller, svc: &Services, input: RecordConsent) -> ApiResult<ConsentEvent> {
    caller.require(Scope::ConsentWrite)?;
    let txn = svc.db.begin_write().await?;
    let exists = customer::of_tenant(caller.tenant())
        .filter(customer::Column::Id.eq(input.customer_id))
        .select_only()
        .column(customer::Column::Id)
        .into_tuple::<Uuid>()
        .one(&txn)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found(format!("customer {}", input.customer_id)));
    }
    let event = append(&txn, caller.tenant(), caller.subject(), input).await?;
    txn.commit().await?;
    let changed = Changed::new().customer(event.customer_id, CustomerChangeKind::ConsentChanged);
    crate::changes::committed(svc, caller.tenant(), changed).await;
    Ok(event)
}

/// Appends inside a transaction the caller owns (used by ingestion: `context.consent`, Global Privacy Control).
pub(crate) async fn append(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    recorded_by: &str,
    input: RecordConsent,
) -> ApiResult<ConsentEvent> {
    let (purpose, channel) = purpose_and_channel(&input.purpose, input.channel.as_deref())?;
    let source = clean("source", Some(&input.source), 64)?.ok_or_else(|| ApiError::validation("source", "required"))?;
    let policy_version = clean("policyVersion", input.policy_version.as_deref(), 64)?;
    let legal_basis = clean("legalBasis", input.legal_basis.as_deref(), 32)?.map(|b| b.to_lowercase());
    if let Some(basis) = &legal_basis
        && !LEGAL_BASES.contains(&basis.as_str())
    {
        return Err(ApiError::validation("legalBasis", format!("one of {}", LEGAL_BASES.join(", "))));
    }
    let now = Utc::now();
    let captured_at = input.captured_at.unwrap_or(now);
    if captured_at > now + chrono::Duration::minutes(5) {
        return Err(ApiError::validation("capturedAt", "lies in the future"));
    }
    if let Some(expires) = input.expires_at
        && expires <= captured_at
    {
        return Err(ApiError::validation("expiresAt", "must be after capturedAt"));
    }
    let row = consent_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        tenant: Set(tenant.as_str().to_owned()),
        customer_id: Set(input.customer_id),
        purpose: Set(purpose.as_str().to_owned()),
        channel: Set(channel.unwrap_or_default()),
        status: Set(input.status.as_str().to_owned()),
        captured_at: Set(captured_at),
        recorded_at: Set(now),
        source: Set(source),
        policy_version: Set(policy_version),
        legal_basis: Set(legal_basis),
        expires_at: Set(input.expires_at),
        evidence: Set(input.evidence),
        recorded_by: Set(recorded_by.chars().take(256).collect()),
    }
    .insert(txn)
    .await?;
    bump_consent_version(txn, tenant, input.customer_id).await?;
    from_row(row).ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored an unreadable consent status")))
}

/// Appends unless the decision in force for (purpose, channel) already has this status: signals that repeat on
/// every event (Global Privacy Control, a consent banner's state) do not flood the ledger.
pub(crate) async fn append_if_changed(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    recorded_by: &str,
    input: RecordConsent,
) -> ApiResult<Option<ConsentEvent>> {
    let (purpose, channel) = purpose_and_channel(&input.purpose, input.channel.as_deref())?;
    let latest = consent_event::of_tenant(tenant)
        .filter(consent_event::Column::CustomerId.eq(input.customer_id))
        .filter(consent_event::Column::Purpose.eq(purpose.as_str()))
        .filter(consent_event::Column::Channel.eq(channel.unwrap_or_default()))
        .order_by_desc(consent_event::Column::CapturedAt)
        .order_by_desc(consent_event::Column::Id)
        .one(txn)
        .await?;
    if latest.is_some_and(|l| l.status == input.status.as_str() && l.expires_at.is_none() && input.expires_at.is_none())
    {
        return Ok(None);
    }
    append(txn, tenant, recorded_by, input).await.map(Some)
}

/// Moves the customer's consent version (and `updated_at`), so cached decisions keyed by it can never be read again,
/// applies the CX counting rule to the customer's survey answers again, and drops stored derived data of a customer
/// who may no longer be profiled: every change of a privacy state (consent, restriction) and of who holds which
/// touchpoints (merge, unmerge) comes through here, in its transaction.
pub(crate) async fn bump_consent_version(
    txn: &DatabaseTransaction,
    tenant: &TenantId,
    customer_id: Uuid,
) -> Result<(), sea_orm::DbErr> {
    customer::update_of_tenant(tenant)
        .col_expr(customer::Column::ConsentVersion, Expr::col(customer::Column::ConsentVersion).add(1))
        .col_expr(customer::Column::UpdatedAt, Expr::value(Utc::now()))
        .filter(customer::Column::Id.eq(customer_id))
        .exec(txn)
        .await?;
    crate::cx::answers::recount(txn, tenant, &[customer_id]).await?;
    // Queue first, then touch derived state: a transaction holds a customer's queue row before their derived rows,
    // the order the derived-state worker relies on to never wait on it (`derived::maintain::unqueue`).
    crate::derived::maintain::mark(txn, tenant, &[customer_id], crate::derived::maintain::Cause::Consent).await?;
    crate::derived::maintain::forget_if_not_profiled(txn, tenant, customer_id).await?;
    crate::derived::scores::on_privacy_change(txn, tenant, customer_id).await
}

/// The decisions in force for many customers at `at` (one query): per customer, per (purpose, channel), the
/// latest decision captured at or before `at`.
pub(crate) async fn states_at(
    conn: &impl ConnectionTrait,
    tenant: &TenantId,
    customer_ids: &[Uuid],
    at: Option<DateTime<Utc>>,
) -> Result<HashMap<Uuid, Vec<ConsentState>>, sea_orm::DbErr> {
    if customer_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query =
        consent_event::of_tenant(tenant).filter(consent_event::Column::CustomerId.is_in(customer_ids.iter().copied()));
    if let Some(at) = at {
        query = query.filter(consent_event::Column::CapturedAt.lte(at));
    }
    let rows =
        query.order_by_asc(consent_event::Column::CapturedAt).order_by_asc(consent_event::Column::Id).all(conn).await?;
    Ok(latest_states(rows))
}

/// The decision in force per customer and (purpose, channel): the last of `rows`, which come in ledger order
/// (captured at, then id).
pub(crate) fn latest_states(rows: impl IntoIterator<Item = consent_event::Model>) -> HashMap<Uuid, Vec<ConsentState>> {
    let mut latest: HashMap<(Uuid, String, String), ConsentEvent> = HashMap::new();
    for row in rows {
        let key = (row.customer_id, row.purpose.clone(), row.channel.clone());
        if let Some(event) = from_row(row) {
            latest.insert(key, event);
        }
    }
    let mut states: HashMap<Uuid, Vec<ConsentState>> = HashMap::new();
    for ((customer, _, _), event) in latest {
        states.entry(customer).or_default().push(event);
    }
    for list in states.values_mut() {
        list.sort_by(|a, b| (&a.purpose, &a.channel).cmp(&(&b.purpose, &b.channel)));
    }
    states
}

/// A page of one customer's ledger, newest first.
pub async fn history(
    tenant: &TenantId,
    svc: &Services,
    customer_id: Uuid,
    page: PageRequest,
) -> ApiResult<Page<ConsentEvent>> {
    let mut query = consent_event::of_tenant(tenant).filter(consent_event::Column::CustomerId.eq(customer_id));
    if let Some(after) = page.after {
        query = query.filter(consent_event::Column::Id.lt(after));
    }
    let mut rows =
        query.order_by_desc(consent_event::Column::Id).limit(page.first as u64 + 1).all(svc.db.conn()).await?;
    let has_next_page = rows.len() > page.first;
    rows.truncate(page.first);
    Ok(Page {
        items: rows.into_iter().filter_map(from_row).collect(),
        has_next_page,
        has_previous_page: page.after.is_some(),
    })
}

/// The decisions in force for a customer of the caller's tenant, now or at a past moment. Needs `profiles:read`.
pub async fn current_for(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
    at: Option<DateTime<Utc>>,
) -> ApiResult<HashMap<Uuid, Vec<ConsentState>>> {
    caller.require(Scope::ProfilesRead)?;
    Ok(states_at(svc.db.conn(), caller.tenant(), customer_ids, at).await?)
}

/// A page of a customer's ledger for the caller. Needs `profiles:read`.
pub async fn history_for(
    caller: &Caller,
    svc: &Services,
    customer_id: Uuid,
    page: PageRequest,
) -> ApiResult<Page<ConsentEvent>> {
    caller.require(Scope::ProfilesRead)?;
    history(caller.tenant(), svc, customer_id, page).await
}

/// The first page of the ledger of many customers at once (the loader behind a list's `consentHistory` without
/// `after`): one window query per 500 customers; each customer's page is the one [`history_for`] gives. Every
/// customer asked for is in the answer. Needs `profiles:read`.
pub async fn first_pages_for(
    caller: &Caller,
    svc: &Services,
    customer_ids: &[Uuid],
    first: usize,
) -> ApiResult<HashMap<Uuid, Page<ConsentEvent>>> {
    use crate::storage::window::{TopPerCustomer, top_per_customer};
    caller.require(Scope::ProfilesRead)?;
    let query = TopPerCustomer {
        table: "consent_events",
        key_columns: &["customer_id"],
        filter: None,
        order_desc: &["id"],
        limit: first + 1,
    };
    let by_customer = top_per_customer::<consent_event::Entity>(&svc.db, caller.tenant(), &query, customer_ids).await?;
    Ok(by_customer
        .into_iter()
        .map(|(id, mut rows)| {
            let has_next_page = rows.len() > first;
            rows.truncate(first);
            let items = rows.into_iter().filter_map(from_row).collect();
            (id, Page { items, has_next_page, has_previous_page: false })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purpose_may_name_its_channel() {
        let split = |purpose: &str, channel: Option<&str>| {
            purpose_and_channel(purpose, channel).map(|(p, c)| (p.as_str().to_owned(), c)).map_err(|e| match e {
                ApiError::Validation { field, .. } => field,
                other => panic!("{other:?}"),
            })
        };
        assert_eq!(split("marketing", None), Ok(("marketing".into(), None)));
        assert_eq!(split("marketing", Some(" SMS ")), Ok(("marketing".into(), Some("sms".into()))));
        assert_eq!(split("marketing:email", None), Ok(("marketing".into(), Some("email".into()))));
        assert_eq!(split(" marketing:Email ", Some("email")), Ok(("marketing".into(), Some("email".into()))));
        assert_eq!(split("marketing:email", Some("sms")), Err("channel".into()));
        for bad in ["marketing:", ":email", "marketing:email:x", "Marketing", ""] {
            assert_eq!(split(bad, None), Err("purpose".into()), "{bad}");
        }
    }
}
