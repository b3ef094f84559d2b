//! View types: what the API shows of domain values. Each personal field passes through `privacy::Disclosure`.
use async_graphql::{Context, ErrorExtensions, Object, SimpleObject, dataloader::DataLoader};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::loaders::IdentityLoader;
use crate::{
    privacy::Disclosure,
    profiles::{Customer, CustomerIdentity, IdentityKind, customers::CustomerChange},
};

pub struct CustomerView {
    customer: Customer,
    disclosure: Disclosure,
}

impl CustomerView {
    pub fn new(customer: Customer, disclosure: Disclosure) -> Self {
        CustomerView { customer, disclosure }
    }
}

/// A unified customer profile.
#[Object(name = "Customer")]
impl CustomerView {
    async fn id(&self) -> Uuid {
        self.customer.id
    }

    /// Masked unless the token has `pii:read`.
    async fn given_name(&self) -> Option<String> {
        self.disclosure.name(self.customer.given_name.as_deref())
    }

    /// Masked unless the token has `pii:read`.
    async fn family_name(&self) -> Option<String> {
        self.disclosure.name(self.customer.family_name.as_deref())
    }

    /// Every identifier that points at this customer (values masked unless the token has `pii:read`).
    async fn identities(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<IdentityView>> {
        let loader = ctx.data_unchecked::<DataLoader<IdentityLoader>>();
        let identities = loader.load_one(self.customer.id).await.map_err(|e| e.as_ref().extend())?;
        Ok(identities
            .unwrap_or_default()
            .into_iter()
            .map(|identity| IdentityView { identity, disclosure: self.disclosure })
            .collect())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.customer.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.customer.updated_at
    }

    /// Set when this customer was merged into another; reads then answer with the survivor.
    async fn merged_into(&self) -> Option<Uuid> {
        self.customer.merged_into
    }
}

pub struct IdentityView {
    identity: CustomerIdentity,
    disclosure: Disclosure,
}

/// One identifier of a customer.
#[Object(name = "Identity")]
impl IdentityView {
    async fn kind(&self) -> IdentityKind {
        self.identity.identity.kind()
    }

    /// The source system, for `EXTERNAL_ID` identities.
    async fn source(&self) -> Option<&str> {
        self.identity.identity.source()
    }

    /// Normalised value; masked unless the token has `pii:read`.
    async fn value(&self) -> String {
        self.disclosure.identity(self.identity.identity.kind(), self.identity.identity.value())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.identity.created_at
    }
}

/// A customer was created or updated.
#[derive(SimpleObject)]
#[graphql(name = "CustomerChange")]
pub struct CustomerChangeView {
    pub customer_id: Uuid,
    pub created: bool,
    pub at: DateTime<Utc>,
}

impl From<CustomerChange> for CustomerChangeView {
    fn from(c: CustomerChange) -> Self {
        CustomerChangeView { customer_id: c.customer_id, created: c.created, at: c.at }
    }
}
