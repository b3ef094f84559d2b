//! The access log (DOMAIN.md privacy rule 6): every read of personal data is recorded with who, for which purpose,
//! which customer, which categories and the request id. Written off the request path in batches; flushed on a
//! clean shutdown.
use std::time::Duration;

use chrono::Utc;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::{
    auth::{Caller, Scope},
    error::ApiResult,
    pagination::{Page, PageRequest},
    services::Services,
    storage::{Database, entities::access_log},
};

const QUEUE: usize = 50_000;
const BATCH: usize = 500;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// `access_log.categories` holds at most 256 characters.
const MAX_CATEGORIES_LEN: usize = 255;

/// What part of a customer's personal data a read served: a closed set, stored in `access_log.categories` (a
/// comma-separated list, in the order read) in the text `as_str` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessCategory {
    /// The profile: the customer row, identities, traits, consents.
    Profile,
    /// Touchpoints: a timeline, the feed, a subscription.
    Touchpoints,
    /// The journey derived from the touchpoints.
    Journey,
    /// One source record as received.
    SourceRecord,
    /// The whole export (DOMAIN rule 4).
    Export,
    /// The erasure (what was read to erase).
    Erasure,
    /// The customer's survey answers (scores, categories, verbatims).
    Feedback,
    /// The customer's scores (RFM, CLV, churn risk).
    Scores,
    /// A feedback case about the customer (the closed loop).
    FeedbackCase,
}

impl AccessCategory {
    pub const ALL: [AccessCategory; 9] = [
        AccessCategory::Profile,
        AccessCategory::Touchpoints,
        AccessCategory::Journey,
        AccessCategory::SourceRecord,
        AccessCategory::Export,
        AccessCategory::Erasure,
        AccessCategory::Feedback,
        AccessCategory::Scores,
        AccessCategory::FeedbackCase,
    ];

    /// The stored text.
    pub const fn as_str(self) -> &'static str {
        match self {
            AccessCategory::Profile => "profile",
            AccessCategory::Touchpoints => "touchpoints",
            AccessCategory::Journey => "journey",
            AccessCategory::SourceRecord => "source_record",
            AccessCategory::Export => "export",
            AccessCategory::Erasure => "erasure",
            AccessCategory::Feedback => "feedback",
            AccessCategory::Scores => "scores",
            AccessCategory::FeedbackCase => "feedback_case",
        }
    }
}

impl std::str::FromStr for AccessCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AccessCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown access category `{s}`"))
    }
}

impl std::fmt::Display for AccessCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One recorded read.
#[derive(Debug, Clone)]
pub struct AccessEntry {
    pub id: Uuid,
    pub customer_id: Uuid,
    pub subject: String,
    pub purpose: String,
    /// The categories read, in the order read (`AccessCategory::as_str` texts).
    pub categories: Vec<String>,
    pub request_id: Option<String>,
    pub at: chrono::DateTime<Utc>,
}

/// The writer's handle: cheap to clone, never blocks a request.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<access_log::Model>,
}

/// Stops the writer after draining what is queued.
pub struct AccessLogWriter {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AccessLogWriter {
    pub async fn flush_and_stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl AccessLog {
    pub fn start(db: Database) -> (AccessLog, AccessLogWriter) {
        let (tx, mut rx) = mpsc::channel::<access_log::Model>(QUEUE);
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(BATCH);
            // The stop signal is checked through `borrow()` after every wait: a `changed()` seen while gathering a
            // batch must still end the loop (the senders live as long as the services, so the queue never closes).
            while !*stopped.borrow() {
                tokio::select! {
                    n = rx.recv_many(&mut buffer, BATCH) => {
                        if n == 0 {
                            break;
                        }
                        if buffer.len() < BATCH {
                            // Gather a little more before writing, unless we are asked to stop.
                            tokio::select! {
                                () = tokio::time::sleep(FLUSH_EVERY) => {}
                                _ = stopped.changed() => {}
                            }
                            while buffer.len() < BATCH * 4 && let Ok(entry) = rx.try_recv() {
                                buffer.push(entry);
                            }
                        }
                        write(&db, &mut buffer).await;
                    }
                    _ = stopped.changed() => {}
                }
            }
            while let Ok(entry) = rx.try_recv() {
                buffer.push(entry);
            }
            write(&db, &mut buffer).await;
        });
        (AccessLog { tx }, AccessLogWriter { stop, task })
    }

    /// Records that `caller` read `category` of these customers.
    pub fn record(&self, caller: &Caller, customer_ids: impl IntoIterator<Item = Uuid>, category: AccessCategory) {
        let now = Utc::now();
        for customer_id in customer_ids {
            let entry = access_log::Model {
                id: Uuid::now_v7(),
                tenant: caller.tenant().as_str().to_owned(),
                customer_id,
                subject: caller.subject().chars().take(256).collect(),
                purpose: caller.purpose().as_str().to_owned(),
                categories: category.as_str().to_owned(),
                request_id: caller.request_id().map(str::to_owned),
                at: now,
            };
            if self.tx.try_send(entry).is_err() {
                metrics::counter!("kontakt_access_log_dropped_total").increment(1);
                tracing::error!("access log queue full: an entry was dropped");
            }
        }
    }
}

async fn write(db: &Database, buffer: &mut Vec<access_log::Model>) {
    if buffer.is_empty() {
        return;
    }
    let rows: Vec<access_log::ActiveModel> = coalesce(buffer.drain(..)).into_iter().map(Into::into).collect();
    let n = rows.len();
    // Chunks stay well under every backend's bind-parameter limit.
    for chunk in rows.chunks(BATCH) {
        if let Err(err) = access_log::Entity::insert_many(chunk.to_vec()).exec(db.conn()).await {
            metrics::counter!("kontakt_access_log_dropped_total").increment(chunk.len() as u64);
            tracing::error!(error = %err, entries = chunk.len(), "writing the access log failed");
        }
    }
    metrics::counter!("kontakt_access_log_written_total").increment(n as u64);
}

/// One entry per request and customer: the categories one request read of one customer (its profile, then its
/// touchpoints…) become one row listing them, in the order they were read. Entries without a request id stay apart.
fn coalesce(entries: impl IntoIterator<Item = access_log::Model>) -> Vec<access_log::Model> {
    let mut out: Vec<access_log::Model> = Vec::new();
    let mut index: std::collections::HashMap<(String, Uuid, String), usize> = std::collections::HashMap::new();
    for entry in entries {
        let Some(request_id) = entry.request_id.clone() else {
            out.push(entry);
            continue;
        };
        match index.get(&(entry.tenant.clone(), entry.customer_id, request_id.clone())) {
            Some(&at)
                if out[at].subject == entry.subject
                    && out[at].purpose == entry.purpose
                    && out[at].categories.len() + entry.categories.len() < MAX_CATEGORIES_LEN =>
            {
                let row = &mut out[at];
                for category in entry.categories.split(',') {
                    if !row.categories.split(',').any(|c| c == category) {
                        row.categories.push(',');
                        row.categories.push_str(category);
                    }
                }
            }
            _ => {
                index.insert((entry.tenant.clone(), entry.customer_id, request_id), out.len());
                out.push(entry);
            }
        }
    }
    out
}

/// A page of one customer's access log, newest first: the reads of the person, including those logged under ids
/// since merged into it. Needs `privacy:admin`.
pub async fn for_customer(
    caller: &Caller,
    svc: &Services,
    customer_id: Uuid,
    page: PageRequest,
) -> ApiResult<Page<AccessEntry>> {
    caller.require(Scope::PrivacyAdmin)?;
    let ids = crate::profiles::customers::person_ids(svc.db.conn(), caller.tenant(), customer_id).await?;
    let mut query = access_log::Entity::find()
        .filter(access_log::Column::Tenant.eq(caller.tenant().as_str()))
        .filter(access_log::Column::CustomerId.is_in(ids));
    if let Some(after) = page.after {
        query = query.filter(access_log::Column::Id.lt(after));
    }
    let mut rows = query.order_by_desc(access_log::Column::Id).limit(page.first as u64 + 1).all(svc.db.conn()).await?;
    let has_next_page = rows.len() > page.first;
    rows.truncate(page.first);
    Ok(Page {
        items: rows
            .into_iter()
            .map(|r| AccessEntry {
                id: r.id,
                customer_id: r.customer_id,
                subject: r.subject,
                purpose: r.purpose,
                categories: r.categories.split(',').map(str::to_owned).collect(),
                request_id: r.request_id,
                at: r.at,
            })
            .collect(),
        has_next_page,
        has_previous_page: page.after.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(customer: Uuid, request: Option<&str>, categories: &str) -> access_log::Model {
        access_log::Model {
            id: Uuid::now_v7(),
            tenant: "acme".into(),
            customer_id: customer,
            subject: "engine".into(),
            purpose: "personalization".into(),
            categories: categories.into(),
            request_id: request.map(str::to_owned),
            at: Utc::now(),
        }
    }

    #[test]
    fn one_row_per_request_and_customer() {
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let rows = coalesce([
            entry(a, Some("r1"), "profile"),
            entry(b, Some("r1"), "profile"),
            entry(a, Some("r1"), "touchpoints"),
            entry(a, Some("r1"), "touchpoints"),
            entry(a, Some("r2"), "profile"),
            entry(a, None, "export"),
            entry(a, None, "export"),
        ]);
        let got: Vec<(Uuid, Option<&str>, &str)> =
            rows.iter().map(|r| (r.customer_id, r.request_id.as_deref(), r.categories.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (a, Some("r1"), "profile,touchpoints"),
                (b, Some("r1"), "profile"),
                (a, Some("r2"), "profile"),
                (a, None, "export"),
                (a, None, "export"),
            ]
        );
    }
}
