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
