//! The one after-commit step. Every write path, once its transaction has committed, hands what it changed to
//! [`committed`], which drops the cached profiles of every customer it touched (`profiles::cache`) and publishes
//! the changes to subscribers (`customerChanges`, `touchpointRecorded`, `feedbackCaseChanged`). A write path that
//! calls it cannot forget either; a write path that does not call it shows in review as the one that doesn't. The
//! CX sweeper, which has no `Services`, publishes its case changes with [`publish_case_changes`].
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{auth::TenantId, services::Services, storage::pubsub::PubSub};

/// What happened to a customer, as subscribers of `customerChanges` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
pub enum CustomerChangeKind {
    /// A new customer (upsert, record ingest, tracking, or resolution of a touchpoint).
    Created,
    /// Identities, traits or source records changed.
    Updated,
    /// Another customer was merged into this one.
    Merged,
    /// This customer was merged into another (`mergedInto`); reads through its id serve the survivor.
    MergedAway,
    /// A merge involving this customer was undone.
    Unmerged,
    /// A consent decision was recorded, or processing was restricted or the restriction lifted.
    ConsentChanged,
    /// The customer was erased; nothing more about them will be served.
    Erased,
}

/// What subscribers of a tenant's `customers` topic receive: ids and kinds, never personal data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomerChange {
    pub customer_id: Uuid,
    pub kind: CustomerChangeKind,
    /// The survivor, for `MergedAway`.
    #[serde(default)]
    pub merged_into: Option<Uuid>,
    pub at: DateTime<Utc>,
}

/// What subscribers of a tenant's `touchpoints` topic receive (the stream reads the touchpoint and decides).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TouchpointRecorded {
    pub id: Uuid,
    pub customer_id: Uuid,
}

/// What subscribers of a tenant's `feedback_cases` topic receive: a case changed (the kind is that of the history
/// entry the change appended: `CREATED`, `ASSIGNED`, `STATUS_CHANGED`, …), with the state and team it has now, so
/// that a subscription filters without reading the case. Ids, never personal data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CaseChange {
    pub case_id: Uuid,
    pub customer_id: Uuid,
    /// `cx::cases::EventKind`, as text.
    pub kind: String,
    /// `cx::cases::CaseState`, as text.
    pub state: String,
    pub team: String,
    pub at: DateTime<Utc>,
}

/// Everything one committed write changed.
#[derive(Debug, Default)]
pub struct Changed {
    customers: Vec<CustomerChange>,
    /// Customers whose cached profile must go but who are not announced (e.g. a touchpoint appended).
    quiet: Vec<Uuid>,
    touchpoints: Vec<TouchpointRecorded>,
    cases: Vec<CaseChange>,
}

impl Changed {
    pub fn new() -> Self {
        Changed::default()
    }

    /// One customer changed in one way.
    pub fn customer(mut self, customer_id: Uuid, kind: CustomerChangeKind) -> Self {
        self.customers.push(CustomerChange { customer_id, kind, merged_into: None, at: Utc::now() });
        self
    }

    pub fn customers(mut self, ids: impl IntoIterator<Item = Uuid>, kind: CustomerChangeKind) -> Self {
        for id in ids {
            self = self.customer(id, kind);
        }
        self
    }

    /// `merged` now lives on as `survivor`.
    pub fn merge(mut self, survivor: Uuid, merged: Uuid) -> Self {
        self = self.customer(survivor, CustomerChangeKind::Merged);
        self.customers.push(CustomerChange {
            customer_id: merged,
            kind: CustomerChangeKind::MergedAway,
            merged_into: Some(survivor),
            at: Utc::now(),
        });
        self
    }

    /// A touchpoint was recorded for a customer: their cached latest page goes, the touchpoint is streamed.
    pub fn touchpoint(mut self, id: Uuid, customer_id: Uuid) -> Self {
        self.quiet.push(customer_id);
        self.touchpoints.push(TouchpointRecorded { id, customer_id });
        self
    }

    /// Drops these customers' cached profiles without announcing a change.
    pub fn uncache(mut self, ids: impl IntoIterator<Item = Uuid>) -> Self {
        self.quiet.extend(ids);
        self
    }

    /// Feedback cases changed (announced on `feedbackCaseChanged`; no cached profile holds a case).
    pub fn cases(mut self, changes: impl IntoIterator<Item = CaseChange>) -> Self {
        self.cases.extend(changes);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty() && self.quiet.is_empty() && self.touchpoints.is_empty() && self.cases.is_empty()
    }
}

pub fn customers_topic(tenant: &TenantId) -> String {
    format!("customers:{tenant}")
}

pub fn touchpoints_topic(tenant: &TenantId) -> String {
    format!("touchpoints:{tenant}")
}

pub fn cases_topic(tenant: &TenantId) -> String {
    format!("feedback_cases:{tenant}")
}

/// Call after the commit of every write: drops the cached profiles of every customer the write touched (one round
/// trip), then publishes the changes. Publishing is best effort (a subscriber is a live view, not a log): a failure
/// is logged and counted, and never turns a committed write into an error.
pub async fn committed(svc: &Services, tenant: &TenantId, changed: Changed) {
    if changed.is_empty() {
        return;
    }
    // The write may have queued customers for their derived state (`derived::maintain::mark`).
    svc.derived_wake.wake();
    let mut touched: Vec<Uuid> = changed.customers.iter().map(|c| c.customer_id).chain(changed.quiet).collect();
    touched.sort_unstable();
    touched.dedup();
    if !touched.is_empty() {
        crate::profiles::cache::forget(svc, tenant, touched).await;
    }
    let pubsub = svc.pubsub.as_ref();
    publish_all(pubsub, &customers_topic(tenant), &changed.customers).await;
    publish_all(pubsub, &touchpoints_topic(tenant), &changed.touchpoints).await;
    publish_all(pubsub, &cases_topic(tenant), &changed.cases).await;
}

/// Publishes case changes committed outside a request (the CX sweeper), best effort like [`committed`].
pub async fn publish_case_changes(pubsub: &dyn PubSub, tenant: &TenantId, changes: &[CaseChange]) {
    publish_all(pubsub, &cases_topic(tenant), changes).await;
}

async fn publish_all<T: Serialize>(pubsub: &dyn PubSub, topic: &str, events: &[T]) {
    for event in events {
        let Ok(payload) = serde_json::to_string(event) else { continue };
        if let Err(err) = pubsub.publish(topic, payload).await {
            metrics::counter!("kontakt_publish_failures_total").increment(1);
            tracing::warn!(error = %err, topic, "publishing a change failed");
            // The pub/sub is down: the rest would fail the same way, each after its own timeout.
            break;
        }
    }
}
