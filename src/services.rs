//! The shared handles every domain function takes: database, cache, pub/sub and domain settings.
use std::sync::Arc;

use crate::{
    privacy::access_log::AccessLog,
    storage::{Cache, Database, PubSub},
};

/// Settings the domain reads (from configuration; per-tenant rules come later from the database).
#[derive(Debug, Clone, Default)]
pub struct DomainSettings {
    /// Region for phone numbers given without a country code.
    pub default_phone_region: Option<phonenumber::country::Id>,
    /// Key of the HMAC that suppresses erased identities.
    pub suppression_key: Vec<u8>,
    /// How long the profile cache keeps identities and latest touchpoint pages; `None`: no profile cache.
    pub profile_cache_ttl: Option<std::time::Duration>,
    /// Whether webhooks may call loopback, private and link-local addresses and plain http (development).
    pub webhook_allow_internal: bool,
}

/// Passed to every domain function beside the `Caller`.
#[derive(Clone)]
pub struct Services {
    pub db: Database,
    pub cache: Arc<dyn Cache>,
    pub pubsub: Arc<dyn PubSub>,
    pub settings: Arc<DomainSettings>,
    pub access_log: AccessLog,
    /// Compiled identity-resolution rules per tenant.
    pub rules: crate::profiles::rules::RulesCache,
    /// RFM breakpoints per tenant.
    pub scores: crate::derived::scores::ScoresCache,
    /// Parsed computed-trait and segment definitions per tenant.
    pub definitions: crate::derived::catalog::CatalogCache,
    /// Wakes this instance's derived-state worker after a commit.
    pub derived_wake: crate::derived::maintain::Wake,
    /// Wakes this instance's webhook dispatcher.
    pub webhook_wake: crate::derived::webhooks::WebhookWake,
    /// The in-process profile cache: only without Redis (one instance) and with the profile cache on.
    pub local_profiles: Option<Arc<crate::profiles::cache::LocalProfiles>>,
}
