//! DataLoaders behind nested lists: one query per list edge per request, never one per row.
use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::{
    auth::TenantId,
    consent::{Permit, Permitted},
    error::ApiError,
    pagination::Page,
    profiles::{CustomerIdentity, customers},
    services::Services,
    touchpoints::{Touchpoint, timeline},
};

/// Loads identities of many customers at once. Built per request, for one tenant: never shared between callers.
pub struct IdentityLoader {
    tenant: TenantId,
    services: Services,
}

impl IdentityLoader {
    pub fn new(tenant: TenantId, services: Services) -> Self {
        IdentityLoader { tenant, services }
    }
}

impl Loader<Uuid> for IdentityLoader {
    type Value = Vec<CustomerIdentity>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        customers::identities_of(&self.tenant, &self.services, keys).await.map_err(Arc::new)
    }
}

/// A customer's latest touchpoints page (no cursor, no filter), asked for with the permit the resolver got from
/// the operation's consent session: the loader fetches, it never decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecentKey {
    pub permit: Permit,
    pub first: usize,
}

/// Loads the first page of many customers' timelines with one window query.
pub struct RecentTouchpointsLoader {
    caller: crate::auth::Caller,
    services: Services,
}

impl RecentTouchpointsLoader {
    pub fn new(caller: crate::auth::Caller, services: Services) -> Self {
        RecentTouchpointsLoader { caller, services }
    }
}

impl Loader<RecentKey> for RecentTouchpointsLoader {
    type Value = Permitted<Page<Touchpoint>>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[RecentKey]) -> Result<HashMap<RecentKey, Self::Value>, Self::Error> {
        let mut by_size: HashMap<usize, Vec<Permit>> = HashMap::new();
        for key in keys {
            by_size.entry(key.first).or_default().push(key.permit);
        }
        let mut out = HashMap::with_capacity(keys.len());
        for (first, permits) in by_size {
            let pages =
                timeline::recent_for_many(&self.caller, &self.services, &permits, first).await.map_err(Arc::new)?;
            out.extend(pages.into_values().map(|page| (RecentKey { permit: page.permit(), first }, page)));
        }
        Ok(out)
    }
}
