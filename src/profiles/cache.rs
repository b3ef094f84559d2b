//! The profile cache: what a single-customer read may take from the cache instead of the database, and the one
//! function every write calls to drop it.
//!
//! Two forms, chosen at start:
//!
//! - **Shared** (Redis configured: several instances may serve the same tenant). A customer's identities and the
//!   latest page of its touchpoints, as bytes in Redis. The customer row, its restriction and its consents are never
//!   taken from it: a read takes those from the database (`policy::load_customer`) and decides with them before
//!   anything gated is served, so a withdrawal or a restriction applies on the very next read on every instance. The
//!   touchpoint page is only looked up after the policy has issued a `Permit`, and an entry carries the consent
//!   version it was filled under (DOMAIN.md rule 2, the consent-safe key of ARCHITECTURE.md), so an entry from before
//!   any consent change is never served.
//! - **In-process** ([`LocalProfiles`]: no Redis, so this process is the only one serving its database). The same
//!   parts as typed values, and also the customer row with its privacy state (restriction, consents in force,
//!   consent version), so a warm profile read needs no statement. Exact, not merely bounded by the TTL: every write
//!   that changes a customer's row, identities, touchpoints, consents or restriction runs in this process and calls
//!   [`forget`] after its commit and before it answers (through `changes::committed`), so a read that starts after a
//!   withdrawal has been acknowledged never sees the old state. A read racing the write cannot leave the old state
//!   behind either: each fill takes a [`Ticket`] (the generation of the customer's shard) before it reads the
//!   database and does not keep what it read if a `forget` of that shard happened in between (see
//!   [`LocalProfiles::fill`]). Decisions are still made on every read, with the current time, so a grant that
//!   expires is refused the moment it expires.
//!
//! Every write hands what it changed to `changes::committed` after its commit, which calls `forget` for every
//! customer it touched; the TTL bounds what a read racing a write could leave in the shared form.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    auth::TenantId,
    consent::{Permit, policy::PrivacyState},
    services::Services,
    storage::entities::{customer, identity, touchpoint},
};

type Key = (TenantId, Uuid);

/// Generations per shard of customers; a `forget` moves its shard's generation.
const SHARDS: usize = 4096;

/// The in-process profile cache (one instance, no Redis): typed entries, exact under writes (module docs).
pub struct LocalProfiles {
    states: moka::sync::Cache<Key, Arc<(customer::Model, PrivacyState)>>,
    identities: moka::sync::Cache<Key, Arc<Vec<identity::Model>>>,
    recent: moka::sync::Cache<Key, Arc<RecentEntry>>,
    generations: Box<[AtomicU64]>,
}

/// Taken before a fill reads the database: the generation of the customer's shard at that moment.
#[derive(Clone, Copy)]
pub(crate) struct Ticket {
    shard: usize,
    generation: u64,
}

impl LocalProfiles {
    pub fn new(max_entries: u64, ttl: std::time::Duration) -> Self {
        fn build<V: Clone + Send + Sync + 'static>(max: u64, ttl: std::time::Duration) -> moka::sync::Cache<Key, V> {
            moka::sync::Cache::builder().max_capacity(max).time_to_live(ttl).build()
        }
        LocalProfiles {
            states: build(max_entries, ttl),
            identities: build(max_entries, ttl),
            recent: build(max_entries, ttl),
            generations: (0..SHARDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn shard(id: Uuid) -> usize {
        (id.as_u128() as usize) % SHARDS
    }

    pub(crate) fn ticket(&self, id: Uuid) -> Ticket {
        let shard = Self::shard(id);
        Ticket { shard, generation: self.generations[shard].load(Ordering::SeqCst) }
    }

    /// Keeps what a read found, unless a `forget` of the customer's shard happened since the ticket was taken.
    /// Inserted first, then checked: a `forget` either moved the generation before the check (the entry is dropped
    /// here) or invalidates after the insert (the entry is dropped there), so a stale entry never survives.
    fn fill<V: Clone + Send + Sync + 'static>(
        &self,
        map: &moka::sync::Cache<Key, V>,
        ticket: Ticket,
        key: Key,
        value: V,
    ) {
        if self.generations[ticket.shard].load(Ordering::SeqCst) != ticket.generation {
            return;
        }
        map.insert(key.clone(), value);
        if self.generations[ticket.shard].load(Ordering::SeqCst) != ticket.generation {
            map.invalidate(&key);
        }
    }

    /// Drops every entry of a tenant (a tenant-wide change, such as its trait rules re-deriving names).
    fn forget_tenant(&self, tenant: &TenantId) {
        for generation in self.generations.iter() {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        let of_tenant = |key: &Key| key.0 == *tenant;
        for key in self.states.iter().map(|(k, _)| k).filter(|k| of_tenant(k)) {
            self.states.invalidate(&*key);
        }
        for key in self.identities.iter().map(|(k, _)| k).filter(|k| of_tenant(k)) {
            self.identities.invalidate(&*key);
        }
        for key in self.recent.iter().map(|(k, _)| k).filter(|k| of_tenant(k)) {
            self.recent.invalidate(&*key);
        }
    }

    fn forget(&self, tenant: &TenantId, ids: &[Uuid]) {
        for id in ids {
            self.generations[Self::shard(*id)].fetch_add(1, Ordering::SeqCst);
        }
        for id in ids {
            let key = (tenant.clone(), *id);
            self.states.invalidate(&key);
            self.identities.invalidate(&key);
            self.recent.invalidate(&key);
        }
    }
}

/// A customer's keys share the hash tag `{tenant:customer}` (`storage::keys`): on a Redis Cluster they live on one
/// slot, so the delete of a customer's keys never spans slots.
fn identities_key(tenant: &TenantId, id: Uuid) -> String {
    format!("{{{tenant}:{id}}}:identities")
}

fn recent_key(tenant: &TenantId, id: Uuid) -> String {
    format!("{{{tenant}:{id}}}:recent")
}

/// Drops every cached part of these customers' profiles, in one round trip. Called after the commit of any write
/// that touches them, even where this instance's cache is off: another instance (or this one before a restart) may
/// have filled the shared cache, and an erasure must reach it.
pub(crate) async fn forget(svc: &Services, tenant: &TenantId, customers: impl IntoIterator<Item = Uuid>) {
    let ids: Vec<Uuid> = customers.into_iter().collect();
    if let Some(local) = &svc.local_profiles {
        local.forget(tenant, &ids);
    }
    let keys: Vec<String> = ids.iter().flat_map(|id| [identities_key(tenant, *id), recent_key(tenant, *id)]).collect();
    svc.cache.delete(&keys).await;
}

/// Drops what this process keeps of a tenant's customers, after the commit of a change that can touch any of them
/// (the trait rules re-deriving names). The shared form keeps no customer rows, so it has nothing to drop.
pub(crate) fn forget_tenant(svc: &Services, tenant: &TenantId) {
    if let Some(local) = &svc.local_profiles {
        local.forget_tenant(tenant);
    }
}

/// A customer row with its privacy state, from the in-process cache (never from a shared one): `None` when this
/// process does not keep them or does not hold this customer. Only a customer that is not merged away is kept.
pub(crate) fn state(svc: &Services, tenant: &TenantId, id: Uuid) -> Option<Arc<(customer::Model, PrivacyState)>> {
    svc.local_profiles.as_ref()?.states.get(&(tenant.clone(), id))
}

/// A ticket for a fill of this customer's entries (in-process cache only).
pub(crate) fn ticket(svc: &Services, id: Uuid) -> Option<Ticket> {
    svc.local_profiles.as_ref().map(|local| local.ticket(id))
}

pub(crate) fn remember_state(
    svc: &Services,
    ticket: Option<Ticket>,
    tenant: &TenantId,
    row: &customer::Model,
    state: &PrivacyState,
) {
    let (Some(local), Some(ticket)) = (&svc.local_profiles, ticket) else { return };
    if row.merged_into.is_none() {
        local.fill(&local.states, ticket, (tenant.clone(), row.id), Arc::new((row.clone(), state.clone())));
    }
}

/// A customer's identity rows, when cached.
pub(crate) async fn identities(svc: &Services, tenant: &TenantId, id: Uuid) -> Option<Vec<identity::Model>> {
    svc.settings.profile_cache_ttl?;
    if let Some(local) = &svc.local_profiles {
        return local.identities.get(&(tenant.clone(), id)).map(|rows| rows.as_ref().clone());
    }
    let bytes = svc.cache.get(&identities_key(tenant, id)).await?;
    serde_json::from_slice(&bytes).ok()
}

pub(crate) async fn remember_identities(
    svc: &Services,
    ticket: Option<Ticket>,
    tenant: &TenantId,
    id: Uuid,
    rows: &[identity::Model],
) {
    let Some(ttl) = svc.settings.profile_cache_ttl else { return };
    if let Some(local) = &svc.local_profiles {
        if let Some(ticket) = ticket {
            local.fill(&local.identities, ticket, (tenant.clone(), id), Arc::new(rows.to_vec()));
        }
        return;
    }
    if let Ok(bytes) = serde_json::to_vec(rows) {
        svc.cache.set(&identities_key(tenant, id), bytes, ttl).await;
    }
}

/// The latest touchpoints of a customer, newest first, as a page of `first` was read.
#[derive(Serialize, Deserialize)]
pub(crate) struct RecentEntry {
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
    if let Some(local) = &svc.local_profiles {
        let entry = local.recent.get(&(tenant.clone(), permit.customer_id()))?;
        if entry.consent_version != consent_version || entry.first < first {
            return None;
        }
        return Some(entry.rows.iter().take(first + 1).cloned().collect());
    }
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
    ticket: Option<Ticket>,
    tenant: &TenantId,
    permit: &Permit,
    consent_version: i64,
    first: usize,
    rows: &[touchpoint::Model],
) {
    let Some(ttl) = svc.settings.profile_cache_ttl else { return };
    let entry = RecentEntry { consent_version, first, rows: rows.to_vec() };
    if let Some(local) = &svc.local_profiles {
        if let Some(ticket) = ticket {
            local.fill(&local.recent, ticket, (tenant.clone(), permit.customer_id()), Arc::new(entry));
        }
        return;
    }
    if let Ok(bytes) = serde_json::to_vec(&entry) {
        svc.cache.set(&recent_key(tenant, permit.customer_id()), bytes, ttl).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: Uuid) -> customer::Model {
        let now = chrono::Utc::now();
        customer::Model {
            id,
            tenant: "t".into(),
            given_name: None,
            family_name: None,
            created_at: now,
            updated_at: now,
            merged_into: None,
            restricted: false,
            consent_version: 0,
        }
    }

    #[test]
    fn a_fill_that_raced_a_forget_is_not_kept() {
        let local = LocalProfiles::new(100, std::time::Duration::from_secs(30));
        let tenant = TenantId::parse("t").expect("tenant");
        let id = Uuid::now_v7();
        let key = (tenant.clone(), id);
        let value = || Arc::new((row(id), PrivacyState::default()));

        // Read, then a write commits and forgets, then the read tries to keep what it read before the write.
        let ticket = local.ticket(id);
        local.forget(&tenant, &[id]);
        local.fill(&local.states, ticket, key.clone(), value());
        assert!(local.states.get(&key).is_none(), "the stale read is not kept");

        // A read that started after the forget is kept, and the next forget drops it.
        let ticket = local.ticket(id);
        local.fill(&local.states, ticket, key.clone(), value());
        assert!(local.states.get(&key).is_some());
        local.forget(&tenant, &[id]);
        assert!(local.states.get(&key).is_none(), "a forget drops the entry");

        // A tenant-wide forget drops the entry, and a fill that raced it is not kept.
        let ticket = local.ticket(id);
        local.fill(&local.states, ticket, key.clone(), value());
        local.forget_tenant(&tenant);
        assert!(local.states.get(&key).is_none(), "a tenant-wide forget drops the entry");
        local.fill(&local.states, ticket, key.clone(), value());
        assert!(local.states.get(&key).is_none(), "a fill from before the tenant-wide forget is not kept");

        // Another customer's forget in another shard does not cost this one its entry.
        let ticket = local.ticket(id);
        let other =
            (1..).map(|_| Uuid::now_v7()).find(|o| LocalProfiles::shard(*o) != LocalProfiles::shard(id)).unwrap();
        local.forget(&tenant, &[other]);
        local.fill(&local.states, ticket, key.clone(), value());
        assert!(local.states.get(&key).is_some());
    }
}
