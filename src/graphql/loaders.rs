//! DataLoaders behind nested lists: one query per list edge per request, never one per row.
use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;
use uuid::Uuid;

use crate::{
    auth::TenantId,
    error::ApiError,
    profiles::{CustomerIdentity, customers},
    services::Services,
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

/// Loads the consents in force for many customers at once (for `Customer.consents`).
pub struct ConsentLoader {
    caller: crate::auth::Caller,
    services: Services,
}

impl ConsentLoader {
    pub fn new(caller: crate::auth::Caller, services: Services) -> Self {
        ConsentLoader { caller, services }
    }
}

impl Loader<Uuid> for ConsentLoader {
    type Value = Vec<crate::consent::ConsentState>;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        crate::consent::ledger::current_for(&self.caller, &self.services, keys, None).await.map_err(Arc::new)
    }
}

/// A customer's latest touchpoints page (no cursor, no filter): what a list of customers asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecentKey {
    pub customer: Uuid,
    pub first: usize,
}

/// A policy refusal, kept cloneable for the loader's cache.
#[derive(Debug, Clone)]
pub struct Refusal {
    purpose: String,
    reason: &'static str,
    message: String,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError::ConsentRequired { purpose: r.purpose, reason: r.reason, message: r.message }
    }
}

pub type RecentPage =
    Result<(crate::consent::Permit, crate::pagination::Page<crate::touchpoints::Touchpoint>), Refusal>;

/// Loads the first page of many customers' timelines with one window query (after two for the decisions).
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
    type Value = RecentPage;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[RecentKey]) -> Result<HashMap<RecentKey, Self::Value>, Self::Error> {
        let mut by_size: HashMap<usize, Vec<Uuid>> = HashMap::new();
        for key in keys {
            by_size.entry(key.first).or_default().push(key.customer);
        }
        let mut out = HashMap::with_capacity(keys.len());
        for (first, customers) in by_size {
            let pages = crate::touchpoints::timeline::recent_for_many(&self.caller, &self.services, &customers, first)
                .await
                .map_err(Arc::new)?;
            for (customer, page) in pages {
                let value = page.map_err(|err| match err {
                    ApiError::ConsentRequired { purpose, reason, message } => Refusal { purpose, reason, message },
                    other => Refusal { purpose: String::new(), reason: "ERROR", message: other.to_string() },
                });
                out.insert(RecentKey { customer, first }, value);
            }
        }
        Ok(out)
    }
}
