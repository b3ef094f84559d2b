//! DataLoaders behind nested lists: one query per list edge per request, never one per row.
//!
//! A customer of a list asks with its key and the list it was served in ([`InList`]). A loader asked about one
//! customer of a list loads them all and keeps what it loaded for the request, so the list costs one query per
//! edge however the DataLoader's timer happens to split the batches (a statement count does not depend on load).
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::Arc,
};

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::{
    auth::{Caller, TenantId},
    consent::{ConsentEvent, Permit, Permitted, ledger},
    cx::cases::{self, CaseEvent, FeedbackCase},
    error::{ApiError, ApiResult},
    pagination::Page,
    profiles::{
        CustomerIdentity, customers,
        merge::{self, Merge},
        records::{self, SourceRecord},
        traits::{self, TraitValue},
    },
    services::Services,
    touchpoints::{Touchpoint, timeline},
};

/// A key of one customer and the customers of the list it was served in (compared by the key alone).
#[derive(Debug, Clone)]
pub struct InList<K> {
    pub key: K,
    pub list: Arc<[Uuid]>,
}

impl<K: PartialEq> PartialEq for InList<K> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<K: Eq> Eq for InList<K> {}

impl<K: Hash> Hash for InList<K> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state)
    }
}

/// A loader key about one customer, and the same key about another customer.
pub trait PerCustomer: Clone + Eq + Hash + Send + Sync + 'static {
    fn for_customer(&self, id: Uuid) -> Self;
}

impl PerCustomer for Uuid {
    fn for_customer(&self, id: Uuid) -> Self {
        id
    }
}

/// A customer and a trait name.
impl PerCustomer for (Uuid, String) {
    fn for_customer(&self, id: Uuid) -> Self {
        (id, self.1.clone())
    }
}

/// A customer and a page size.
impl PerCustomer for (Uuid, usize) {
    fn for_customer(&self, id: Uuid) -> Self {
        (id, self.1)
    }
}

/// What a loader loaded in this request.
struct Loaded<K, V> {
    known: tokio::sync::Mutex<HashMap<K, V>>,
}

impl<K, V> Default for Loaded<K, V> {
    fn default() -> Self {
        Loaded { known: tokio::sync::Mutex::new(HashMap::new()) }
    }
}

impl<K: PerCustomer, V: Clone> Loaded<K, V> {
    /// The values of `keys`, fetching (with `fetch`, once) every key of their lists not loaded yet.
    async fn get<F>(
        &self,
        keys: &[InList<K>],
        fetch: impl FnOnce(Vec<K>) -> F,
    ) -> Result<HashMap<InList<K>, V>, Arc<ApiError>>
    where
        F: Future<Output = ApiResult<HashMap<K, V>>>,
    {
        let mut known = self.known.lock().await;
        let mut wanted = HashSet::new();
        for key in keys {
            wanted.insert(key.key.clone());
            wanted.extend(key.list.iter().map(|id| key.key.for_customer(*id)));
        }
        let missing: Vec<K> = wanted.into_iter().filter(|k| !known.contains_key(k)).collect();
        if !missing.is_empty() {
            known.extend(fetch(missing).await.map_err(Arc::new)?);
        }
        Ok(keys.iter().filter_map(|k| known.get(&k.key).map(|v| (k.clone(), v.clone()))).collect())
    }
}

/// The customer ids of some keys.
fn ids<K>(keys: &[K], id: impl Fn(&K) -> Uuid) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = keys.iter().map(id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Loads identities of many customers at once. Built per request, for one tenant: never shared between callers.
pub struct IdentityLoader {
    tenant: TenantId,
    services: Services,
    loaded: Loaded<Uuid, Vec<CustomerIdentity>>,
}

impl IdentityLoader {
    pub fn new(tenant: TenantId, services: Services) -> Self {
        IdentityLoader { tenant, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<Uuid>> for IdentityLoader {
    type Value = Vec<CustomerIdentity>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[InList<Uuid>]) -> Result<HashMap<InList<Uuid>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |ids| async move {
                let mut found = customers::identities_of(&self.tenant, &self.services, &ids).await?;
                Ok(ids.into_iter().map(|id| (id, found.remove(&id).unwrap_or_default())).collect())
            })
            .await
    }
}

/// Loads the winning traits of many customers at once.
pub struct TraitsLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<Uuid, BTreeMap<String, TraitValue>>,
}

impl TraitsLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        TraitsLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<Uuid>> for TraitsLoader {
    type Value = BTreeMap<String, TraitValue>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[InList<Uuid>]) -> Result<HashMap<InList<Uuid>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |ids| async move { traits::traits_of_many(&self.caller, &self.services, &ids).await })
            .await
    }
}

/// Loads the history of one trait (by name) of many customers at once: one query per name asked for.
pub struct TraitHistoryLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<(Uuid, String), Vec<TraitValue>>,
}

impl TraitHistoryLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        TraitHistoryLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<(Uuid, String)>> for TraitHistoryLoader {
    type Value = Vec<TraitValue>;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[InList<(Uuid, String)>],
    ) -> Result<HashMap<InList<(Uuid, String)>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |missing| async move {
                let mut by_name: HashMap<String, Vec<(Uuid, String)>> = HashMap::new();
                for key in missing {
                    by_name.entry(key.1.clone()).or_default().push(key);
                }
                let mut out = HashMap::new();
                for (name, keys) in by_name {
                    let ids = ids(&keys, |k| k.0);
                    let found = traits::history_of_many(&self.caller, &self.services, &ids, &name).await?;
                    out.extend(found.into_iter().map(|(id, values)| ((id, name.clone()), values)));
                }
                Ok(out)
            })
            .await
    }
}

/// Loads the source records of many customers at once.
pub struct SourceRecordsLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<Uuid, Vec<SourceRecord>>,
}

impl SourceRecordsLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        SourceRecordsLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<Uuid>> for SourceRecordsLoader {
    type Value = Vec<SourceRecord>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[InList<Uuid>]) -> Result<HashMap<InList<Uuid>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |ids| async move { records::of_customers(&self.caller, &self.services, &ids).await })
            .await
    }
}

/// Loads the merges many customers took part in at once (`mergeHistory` and `identityGraph.merges`).
pub struct MergeHistoryLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<Uuid, Vec<Merge>>,
}

impl MergeHistoryLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        MergeHistoryLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<Uuid>> for MergeHistoryLoader {
    type Value = Vec<Merge>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[InList<Uuid>]) -> Result<HashMap<InList<Uuid>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |ids| async move { merge::history_of_many(&self.caller, &self.services, &ids).await })
            .await
    }
}

/// Loads the first page (no cursor) of many customers' consent ledgers, keyed by (customer, page size): one
/// window query per page size asked for.
pub struct ConsentHistoryLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<(Uuid, usize), Page<ConsentEvent>>,
}

impl ConsentHistoryLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        ConsentHistoryLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<(Uuid, usize)>> for ConsentHistoryLoader {
    type Value = Page<ConsentEvent>;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[InList<(Uuid, usize)>],
    ) -> Result<HashMap<InList<(Uuid, usize)>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |missing| async move {
                let mut by_size: HashMap<usize, Vec<(Uuid, usize)>> = HashMap::new();
                for key in missing {
                    by_size.entry(key.1).or_default().push(key);
                }
                let mut out = HashMap::new();
                for (first, keys) in by_size {
                    let ids = ids(&keys, |k| k.0);
                    let pages = ledger::first_pages_for(&self.caller, &self.services, &ids, first).await?;
                    out.extend(pages.into_iter().map(|(id, page)| ((id, first), page)));
                }
                Ok(out)
            })
            .await
    }
}

/// One customer's first page of cases, with the ids of every case loaded with it (the list's), so that the cases'
/// histories load together too.
#[derive(Clone)]
pub struct CasesPage {
    pub page: Page<FeedbackCase>,
    pub loaded_with: Arc<[Uuid]>,
}

/// Loads the first page (no cursor) of many customers' feedback cases, keyed by (customer, page size): one window
/// query per page size asked for.
pub struct CustomerCasesLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<(Uuid, usize), CasesPage>,
}

impl CustomerCasesLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        CustomerCasesLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<(Uuid, usize)>> for CustomerCasesLoader {
    type Value = CasesPage;
    type Error = Arc<ApiError>;

    async fn load(
        &self,
        keys: &[InList<(Uuid, usize)>],
    ) -> Result<HashMap<InList<(Uuid, usize)>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |missing| async move {
                let mut by_size: HashMap<usize, Vec<(Uuid, usize)>> = HashMap::new();
                for key in missing {
                    by_size.entry(key.1).or_default().push(key);
                }
                let mut out = HashMap::new();
                for (first, keys) in by_size {
                    let ids = ids(&keys, |k| k.0);
                    let pages = cases::first_pages_for(&self.caller, &self.services, &ids, first).await?;
                    let loaded_with: Arc<[Uuid]> = pages.values().flat_map(|p| p.items.iter().map(|c| c.id)).collect();
                    out.extend(
                        pages
                            .into_iter()
                            .map(|(id, page)| ((id, first), CasesPage { page, loaded_with: loaded_with.clone() })),
                    );
                }
                Ok(out)
            })
            .await
    }
}

/// Loads the histories of the feedback cases of one list (keyed by case id; the list is the page of cases it was
/// served in): one window query per list.
pub struct CaseHistoryLoader {
    caller: Caller,
    services: Services,
    loaded: Loaded<Uuid, Vec<CaseEvent>>,
}

impl CaseHistoryLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        CaseHistoryLoader { caller, services, loaded: Loaded::default() }
    }
}

impl Loader<InList<Uuid>> for CaseHistoryLoader {
    type Value = Vec<CaseEvent>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[InList<Uuid>]) -> Result<HashMap<InList<Uuid>, Self::Value>, Self::Error> {
        self.loaded
            .get(keys, |ids| async move { cases::history_of_many(&self.caller, &self.services, &ids).await })
            .await
    }
}

/// A customer's latest touchpoints page (no cursor, no filter), asked for with the permit the resolver got from
/// the operation's consent session, and the permits of the list's other customers (so one of them asking loads
/// them all): the loader fetches, it never decides.
#[derive(Debug, Clone)]
pub struct RecentKey {
    pub permit: Permit,
    pub first: usize,
    pub list: Arc<[Permit]>,
}

impl PartialEq for RecentKey {
    fn eq(&self, other: &Self) -> bool {
        (self.permit, self.first) == (other.permit, other.first)
    }
}

impl Eq for RecentKey {}

impl Hash for RecentKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.permit, self.first).hash(state)
    }
}

/// Loads the first page of many customers' timelines with one window query.
pub struct RecentTouchpointsLoader {
    caller: Caller,
    services: Services,
    loaded: tokio::sync::Mutex<HashMap<(Permit, usize), RecentPage>>,
}

type RecentPage = Permitted<Page<Touchpoint>>;

impl RecentTouchpointsLoader {
    pub fn new(caller: Caller, services: Services) -> Self {
        RecentTouchpointsLoader { caller, services, loaded: Default::default() }
    }
}

impl Loader<RecentKey> for RecentTouchpointsLoader {
    type Value = Permitted<Page<Touchpoint>>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[RecentKey]) -> Result<HashMap<RecentKey, Self::Value>, Self::Error> {
        let mut loaded = self.loaded.lock().await;
        let mut by_size: HashMap<usize, HashSet<Permit>> = HashMap::new();
        for key in keys {
            let permits = std::iter::once(key.permit).chain(key.list.iter().copied());
            let missing = permits.filter(|p| !loaded.contains_key(&(*p, key.first)));
            by_size.entry(key.first).or_default().extend(missing);
        }
        for (first, permits) in by_size {
            if permits.is_empty() {
                continue;
            }
            let permits: Vec<Permit> = permits.into_iter().collect();
            let pages =
                timeline::recent_for_many(&self.caller, &self.services, &permits, first).await.map_err(Arc::new)?;
            loaded.extend(pages.into_values().map(|page| ((page.permit(), first), page)));
        }
        Ok(keys.iter().filter_map(|k| loaded.get(&(k.permit, k.first)).map(|page| (k.clone(), page.clone()))).collect())
    }
}
