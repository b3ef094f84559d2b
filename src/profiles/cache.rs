//! The profile cache: what a single-customer read may take from the cache instead of the database, and the one
//! function every write calls to drop it.
//!
//! Cached: a customer's identities, and the latest page of its touchpoints. Never cached: the customer row, its
//! restriction and its consents — a read always takes those from the database (`policy::load_customer`) and decides
//! with them before anything gated is served, so a withdrawal or a restriction applies on the very next read
//! whatever the cache holds. The touchpoint page is personalization data: it is only looked up after the policy
//! has issued a `Permit`, and an entry carries the consent version it was filled under (DOMAIN.md rule 2, the
//! consent-safe key of ARCHITECTURE.md), so an entry from before any consent change is never served. Every write
//! hands what it changed to `changes::committed` after its commit, which calls `forget` for every customer it
//! touched; the TTL bounds what a read racing a write could leave.
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::TenantId,
    consent::Permit,
    services::Services,
    storage::entities::{identity, touchpoint},
};

fn identities_key(tenant: &TenantId, id: Uuid) -> String {
    format!("identities:{tenant}:{id}")
}

fn recent_key(tenant: &TenantId, id: Uuid) -> String {
    format!("recent:{tenant}:{id}")
}

/// Drops every cached part of these customers' profiles, in one round trip. Called after the commit of any write
/// that touches them, even where this instance's cache is off: another instance (or this one before a restart) may
/// have filled the shared cache, and an erasure must reach it.
pub(crate) async fn forget(svc: &Services, tenant: &TenantId, customers: impl IntoIterator<Item = Uuid>) {
    let keys: Vec<String> =
        customers.into_iter().flat_map(|id| [identities_key(tenant, id), recent_key(tenant, id)]).collect();
    svc.cache.delete(&keys).await;
}

/// A customer's identity rows, when cached.
pub(crate) async fn identities(svc: &Services, tenant: &TenantId, id: Uuid) -> Option<Vec<identity::Model>> {
    svc.settings.profile_cache_ttl?;
    let bytes = svc.cache.get(&identities_key(tenant, id)).await?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) async fn remember_identities(svc: &Services, tenant: &TenantId, id: Uuid, rows: &[identity::Model]) {
    let Some(ttl) = svc.settings.profile_cache_ttl else { return };
    if let Ok(bytes) = serde_json::to_vec(rows) {
        svc.cache.set(&identities_key(tenant, id), bytes, ttl).await;
    }
}

/// The latest touchpoints of a customer, newest first, as a page of `first` was read.
#[derive(Serialize, Deserialize)]
struct RecentEntry {
    consent_version: i64,
    /// The page size the entry was filled for; it also holds the row after the page (for `hasNextPage`).
    first: usize,
    rows: Vec<touchpoint::Model>,
}

/// The latest `first + 1` touchpoints of the permitted customer, when an entry filled under the same consent
/// version for a page at least as large is cached. Needs the `Permit`: gated data is looked up only after a decision.
pub(crate) async fn recent(
    svc: &Services,
    tenant: &TenantId,
    permit: &Permit,
    consent_version: i64,
    first: usize,
) -> Option<Vec<touchpoint::Model>> {
    svc.settings.profile_cache_ttl?;
    let bytes = svc.cache.get(&recent_key(tenant, permit.customer_id())).await?;
    let entry: RecentEntry = serde_json::from_slice(&bytes).ok()?;
    if entry.consent_version != consent_version || entry.first < first {
        return None;
    }
    let mut rows = entry.rows;
    rows.truncate(first + 1);
    Some(rows)
}

pub(crate) async fn remember_recent(
    svc: &Services,
    tenant: &TenantId,
    permit: &Permit,
    consent_version: i64,
    first: usize,
    rows: &[touchpoint::Model],
) {
    let Some(ttl) = svc.settings.profile_cache_ttl else { return };
    let entry = RecentEntry { consent_version, first, rows: rows.to_vec() };
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        svc.cache.set(&recent_key(tenant, permit.customer_id()), bytes, ttl).await;
    }
}
