//! Reading history: one customer's timeline (newest first, keyset on (occurred_at, id) in both directions), the
//! journey summary, and the cross-customer feed in commit order. Every read needs a policy `Permit`.
use crate::privacy::access_log::AccessCategory;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, FromQueryResult, Order, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Select,
    sea_query::{Expr, Func},
};
use uuid::Uuid;

use super::model::{Channel, JourneyStage, Touchpoint, TouchpointType};
use crate::{
    auth::{Caller, Scope, TenantId},
    consent::{ConsentSession, DataCategory, Permit, Permitted, policy},
    error::{ApiError, ApiResult},
    pagination::{FeedCursor, FeedPosition, Page, PageRequest, Window},
    profiles::cache as profile_cache,
    services::Services,
    storage::{
        entities::touchpoint,
        window::{TopPerCustomer, top_per_customer},
    },
};

/// Filters shared by timelines and the feed.
#[derive(Debug, Clone, Default)]
pub struct TouchpointFilter {
    pub channels: Vec<Channel>,
    pub types: Vec<TouchpointType>,
    pub stages: Vec<JourneyStage>,
    /// Occurred at or after.
    pub from: Option<DateTime<Utc>>,
    /// Occurred before.
    pub to: Option<DateTime<Utc>>,
    /// Received at or after (for engines that poll for what is new).
    pub received_since: Option<DateTime<Utc>>,
}

impl TouchpointFilter {
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
            && self.types.is_empty()
            && self.stages.is_empty()
            && self.from.is_none()
            && self.to.is_none()
            && self.received_since.is_none()
    }
}

fn apply(mut query: Select<touchpoint::Entity>, filter: &TouchpointFilter) -> Select<touchpoint::Entity> {
    if !filter.channels.is_empty() {
        query = query.filter(touchpoint::Column::Channel.is_in(filter.channels.iter().map(|c| c.as_str())));
    }
    if !filter.types.is_empty() {
        query = query.filter(touchpoint::Column::Kind.is_in(filter.types.iter().map(|t| t.as_str())));
    }
    if !filter.stages.is_empty() {
        query = query.filter(touchpoint::Column::Stage.is_in(filter.stages.iter().map(|s| s.as_str())));
    }
    if let Some(from) = filter.from {
        query = query.filter(touchpoint::Column::OccurredAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(touchpoint::Column::OccurredAt.lt(to));
    }
    if let Some(since) = filter.received_since {
        query = query.filter(touchpoint::Column::ReceivedAt.gte(since));
    }
    query
}

fn of_customer(tenant: &TenantId, permit: &Permit) -> Select<touchpoint::Entity> {
    touchpoint::of_tenant(tenant).filter(touchpoint::Column::CustomerId.eq(permit.customer_id()))
}

/// Strictly older (`older = true`) or newer than the cursor position in (occurred_at, id) order. The plain range
/// on `occurred_at` lets the index bound the scan; the tie-break on `id` only looks at rows of the same instant,
/// so a page deep in a long history costs what the first page costs.
fn beyond(cursor: (DateTime<Utc>, Uuid), older: bool) -> Condition {
    let (at, id) = cursor;
    let (bound, time, tie) = if older {
        (touchpoint::Column::OccurredAt.lte(at), touchpoint::Column::OccurredAt.lt(at), touchpoint::Column::Id.lt(id))
    } else {
        (touchpoint::Column::OccurredAt.gte(at), touchpoint::Column::OccurredAt.gt(at), touchpoint::Column::Id.gt(id))
    };
    Condition::all().add(bound).add(Condition::any().add(time).add(tie))
}

/// A page of one customer's timeline, newest first. The permit proves the policy allowed this read.
pub async fn timeline(
    tenant: &TenantId,
    svc: &Services,
    permit: &Permit,
    filter: &TouchpointFilter,
    window: Window<(DateTime<Utc>, Uuid)>,
) -> ApiResult<Page<Touchpoint>> {
    let base = apply(of_customer(tenant, permit), filter);
    let (query, size, backward) = match window {
        Window::Forward { first, after } => {
            let q = match after {
                Some(c) => base.filter(beyond(c, true)),
                None => base,
            };
            (
                q.order_by(touchpoint::Column::OccurredAt, Order::Desc).order_by(touchpoint::Column::Id, Order::Desc),
                first,
                false,
            )
        }
        Window::Backward { last, before } => {
            let q = match before {
                Some(c) => base.filter(beyond(c, false)),
                None => base,
            };
            (
                q.order_by(touchpoint::Column::OccurredAt, Order::Asc).order_by(touchpoint::Column::Id, Order::Asc),
                last,
                true,
            )
        }
    };
    let mut rows = query.limit(size as u64 + 1).all(svc.db.conn()).await?;
    let more = rows.len() > size;
    rows.truncate(size);
    if backward {
        rows.reverse();
    }
    let items = rows.into_iter().filter_map(Touchpoint::from_row).collect();
    Ok(match window {
        Window::Forward { after, .. } => Page { items, has_next_page: more, has_previous_page: after.is_some() },
        Window::Backward { before, .. } => Page { items, has_next_page: before.is_some(), has_previous_page: more },
    })
}

/// How many touchpoints of the customer match the filter (only computed when a client asks for it).
pub async fn count(tenant: &TenantId, svc: &Services, permit: &Permit, filter: &TouchpointFilter) -> ApiResult<u64> {
    Ok(apply(of_customer(tenant, permit), filter).count(svc.db.conn()).await?)
}

/// Per journey stage: when it was first and last reached and on which channels, plus the current stage.
#[derive(Debug, Clone)]
pub struct Journey {
    pub current_stage: Option<JourneyStage>,
    pub stages: Vec<StageSummary>,
}

#[derive(Debug, Clone)]
pub struct StageSummary {
    pub stage: JourneyStage,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    pub count: i64,
    pub channels: Vec<(Channel, i64)>,
}

/// (stage, channel, count, first occurred, last occurred).
type StageChannelRow = (String, String, i64, DateTime<Utc>, DateTime<Utc>);

/// The journey summary: one aggregate query and one for the latest touchpoint.
pub async fn journey(tenant: &TenantId, svc: &Services, permit: &Permit) -> ApiResult<Journey> {
    if permit.category() != DataCategory::DerivedInsights {
        return Err(ApiError::internal(anyhow::anyhow!("journey read with a permit for another category")));
    }
    let rows: Vec<StageChannelRow> = of_customer(tenant, permit)
        .select_only()
        .column(touchpoint::Column::Stage)
        .column(touchpoint::Column::Channel)
        .column_as(Expr::expr(Func::count(Expr::col(touchpoint::Column::Id))), "n")
        .column_as(Expr::expr(Func::min(Expr::col(touchpoint::Column::OccurredAt))), "first_at")
        .column_as(Expr::expr(Func::max(Expr::col(touchpoint::Column::OccurredAt))), "last_at")
        .group_by(touchpoint::Column::Stage)
        .group_by(touchpoint::Column::Channel)
        .into_tuple()
        .all(svc.db.conn())
        .await?;
    let mut by_stage: BTreeMap<usize, StageSummary> = BTreeMap::new();
    for (stage, channel, n, first_at, last_at) in rows {
        let (Some(stage), Some(channel)) = (JourneyStage::parse(&stage), Channel::parse(&channel)) else { continue };
        let order = JourneyStage::ALL.iter().position(|s| *s == stage).unwrap_or(usize::MAX);
        let summary =
            by_stage.entry(order).or_insert(StageSummary { stage, first_at, last_at, count: 0, channels: Vec::new() });
        summary.first_at = summary.first_at.min(first_at);
        summary.last_at = summary.last_at.max(last_at);
        summary.count += n;
        summary.channels.push((channel, n));
    }
    let latest = of_customer(tenant, permit)
        .select_only()
        .column(touchpoint::Column::Stage)
        .order_by(touchpoint::Column::OccurredAt, Order::Desc)
        .order_by(touchpoint::Column::Id, Order::Desc)
        .limit(1)
        .into_tuple::<String>()
        .one(svc.db.conn())
        .await?;
    Ok(Journey {
        current_stage: latest.as_deref().and_then(JourneyStage::parse),
        stages: by_stage.into_values().collect(),
    })
}

/// A page of the feed across customers, in commit order, with the customers the policy refused left out.
#[derive(Debug, Clone)]
pub struct FeedPage {
    /// The touchpoints served, each with its place in the feed (what its cursor names).
    pub page: Page<Permitted<(FeedPosition, Touchpoint)>>,
    /// Touchpoints on this page withheld because their customer's consent or restriction forbids the read.
    pub excluded: usize,
    /// The place to resume after, even when every touchpoint of the page was withheld.
    pub resume_after: Option<FeedPosition>,
}

/// PostgreSQL's high-water mark: the oldest transaction still in flight, read with the statement's own snapshot.
/// Every transaction below it has ended, so no touchpoint can ever appear below it after this read.
const HIGH_WATER_MARK: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// How long a feed read waits, at most, for the transactions in flight that hold committed touchpoints back, so a
/// touchpoint acknowledged before the read is served by it (unless an older transaction runs longer than this).
const HELD_BACK_WAIT: Duration = Duration::from_secs(1);

fn position(row: &touchpoint::Model) -> FeedPosition {
    FeedPosition { commit: row.commit_position, id: row.id }
}

/// The cross-customer feed for personalization engines. Needs `touchpoints:read`; the caller's purpose decides,
/// customer by customer, what is served.
///
/// The feed pages on (commit position, id), never on id alone: ids are taken before commit and transactions commit
/// in another order, so a reader resuming after an id would skip a touchpoint committed later with a smaller id.
/// On PostgreSQL only positions below the high-water mark are served; on SQLite writes are serialized and the
/// position is drawn inside the write, so whatever is committed is already in order.
#[tracing::instrument(skip_all, fields(tenant = %caller.tenant()))]
pub async fn feed(
    caller: &Caller,
    svc: &Services,
    filter: &TouchpointFilter,
    page: PageRequest<FeedCursor>,
) -> ApiResult<FeedPage> {
    caller.require(Scope::TouchpointsRead)?;
    let after = match page.after {
        None => None,
        Some(FeedCursor::Position(position)) => Some(position),
        Some(FeedCursor::Id(id)) => Some(position_of(caller.tenant(), svc, id).await?),
    };
    let mut rows = committed_after(caller.tenant(), svc, filter, after, page.first + 1).await?;
    let has_next_page = rows.len() > page.first;
    rows.truncate(page.first);
    let resume_after = rows.last().map(position);
    let customers: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect::<HashSet<_>>().into_iter().collect();
    let decisions = policy::decide_many(caller, svc, &customers, DataCategory::BehaviouralHistory).await?;
    let total = rows.len();
    let items: Vec<Permitted<(FeedPosition, Touchpoint)>> = rows
        .into_iter()
        .filter_map(|r| {
            let permit = *decisions.get(&r.customer_id)?.as_ref().ok()?;
            let at = position(&r);
            Touchpoint::from_row(r).map(|tp| permit.serve((at, tp)))
        })
        .collect();
    let excluded = total - items.len();
    let served: HashSet<Uuid> = items.iter().map(|p| p.permit().customer_id()).collect();
    svc.access_log.record(caller, served, AccessCategory::Touchpoints);
    Ok(FeedPage { page: Page { items, has_next_page, has_previous_page: after.is_some() }, excluded, resume_after })
}

/// The position of the touchpoint a cursor from before positions names.
async fn position_of(tenant: &TenantId, svc: &Services, id: Uuid) -> ApiResult<FeedPosition> {
    let commit = touchpoint::of_tenant(tenant)
        .filter(touchpoint::Column::Id.eq(id))
        .select_only()
        .column(touchpoint::Column::CommitPosition)
        .into_tuple::<i64>()
        .one(svc.db.conn())
        .await?;
    commit.map(|commit| FeedPosition { commit, id }).ok_or_else(|| {
        ApiError::validation("after", "the cursor names a touchpoint that no longer exists; start from the beginning")
    })
}

/// Up to `limit` touchpoints after the position, in (commit position, id) order, that can be served: none can ever
/// be committed before them later.
async fn committed_after(
    tenant: &TenantId,
    svc: &Services,
    filter: &TouchpointFilter,
    after: Option<FeedPosition>,
    limit: usize,
) -> ApiResult<Vec<touchpoint::Model>> {
    let mut query = apply(touchpoint::of_tenant(tenant), filter);
    if let Some(after) = after {
        // The plain range lets the (tenant, commit_position, id) index bound the scan.
        query = query.filter(
            Condition::all().add(touchpoint::Column::CommitPosition.gte(after.commit)).add(
                Condition::any()
                    .add(touchpoint::Column::CommitPosition.gt(after.commit))
                    .add(touchpoint::Column::Id.gt(after.id)),
            ),
        );
    }
    let query = query
        .order_by(touchpoint::Column::CommitPosition, Order::Asc)
        .order_by(touchpoint::Column::Id, Order::Asc)
        .limit(limit as u64);
    if svc.db.backend() != DbBackend::Postgres {
        return Ok(query.all(svc.db.conn()).await?);
    }
    let statement = query.column_as(Expr::cust(HIGH_WATER_MARK), "high_water_mark").build(DbBackend::Postgres);
    let deadline = Instant::now() + HELD_BACK_WAIT;
    // The mark that serves every row the first read found held back.
    let mut wanted: Option<i64> = None;
    loop {
        let results = svc.db.conn().query_all_raw(statement.clone()).await?;
        let mut rows = Vec::with_capacity(results.len());
        let mut mark = i64::MAX;
        for result in &results {
            mark = result.try_get("", "high_water_mark")?;
            rows.push(touchpoint::Model::from_query_result(result, "")?);
        }
        let held_back = rows.iter().map(|r| r.commit_position).filter(|p| *p >= mark).max();
        let Some(held_back) = held_back else { return Ok(rows) };
        let wanted = *wanted.get_or_insert(held_back + 1);
        if mark >= wanted || Instant::now() >= deadline {
            // Rows are in position order: the servable ones are a prefix.
            rows.retain(|r| r.commit_position < mark);
            return Ok(rows);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One customer's timeline for the caller: scope, tenant, the policy's decision with the operation's consent
/// session, then the page. The latest page (what a profile shows) comes from the profile cache when it holds it
/// under the customer's current consent version.
pub async fn read_timeline(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    customer_id: Uuid,
    filter: &TouchpointFilter,
    window: Window<(DateTime<Utc>, Uuid)>,
) -> ApiResult<Permitted<Page<Touchpoint>>> {
    caller.require(Scope::TouchpointsRead)?;
    let state = session.state(caller, svc, customer_id).await?;
    let permit = policy::decide(caller, customer_id, &state, DataCategory::BehaviouralHistory, Utc::now())?;
    let page = match window {
        Window::Forward { first, after: None } if filter.is_empty() => {
            let tenant = caller.tenant();
            let rows = match profile_cache::recent(svc, tenant, &permit, state.consent_version, first).await {
                Some(rows) => rows,
                None => {
                    let ticket = profile_cache::ticket(svc, customer_id);
                    let rows = of_customer(tenant, &permit)
                        .order_by(touchpoint::Column::OccurredAt, Order::Desc)
                        .order_by(touchpoint::Column::Id, Order::Desc)
                        .limit(first as u64 + 1)
                        .all(svc.db.conn())
                        .await?;
                    profile_cache::remember_recent(svc, ticket, tenant, &permit, state.consent_version, first, &rows)
                        .await;
                    rows
                }
            };
            let has_next_page = rows.len() > first;
            let items = rows.into_iter().take(first).filter_map(Touchpoint::from_row).collect();
            Page { items, has_next_page, has_previous_page: false }
        }
        window => timeline(caller.tenant(), svc, &permit, filter, window).await?,
    };
    svc.access_log.record(caller, [customer_id], AccessCategory::Touchpoints);
    Ok(permit.serve(page))
}

/// One customer's journey summary for the caller (derived data: always gated by consent).
pub async fn read_journey(
    caller: &Caller,
    svc: &Services,
    session: &ConsentSession,
    customer_id: Uuid,
) -> ApiResult<Permitted<Journey>> {
    caller.require(Scope::TouchpointsRead)?;
    let permit = session.decide(caller, svc, customer_id, DataCategory::DerivedInsights).await?;
    let journey = journey(caller.tenant(), svc, &permit).await?;
    svc.access_log.record(caller, [customer_id], AccessCategory::Journey);
    Ok(permit.serve(journey))
}

/// The latest `first` touchpoints of many customers at once, one window query for all of them (the DataLoader
/// behind `customers { touchpoints }`). Each customer comes with the permit its page was decided by.
pub async fn recent_for_many(
    caller: &Caller,
    svc: &Services,
    permits: &[Permit],
    first: usize,
) -> ApiResult<HashMap<Uuid, Permitted<Page<Touchpoint>>>> {
    caller.require(Scope::TouchpointsRead)?;
    let permits: Vec<Permit> =
        permits.iter().copied().filter(|p| p.category() == DataCategory::BehaviouralHistory).collect();
    let permitted: Vec<Uuid> = permits.iter().map(Permit::customer_id).collect();
    // One index-bounded LIMIT per customer, however long their histories are (one more row: `hasNextPage`).
    let query = TopPerCustomer {
        table: "touchpoints",
        key_columns: &["customer_id"],
        filter: None,
        order_desc: &["occurred_at", "id"],
        limit: if first == 0 { 0 } else { first + 1 },
    };
    let mut rows_by_customer =
        top_per_customer::<touchpoint::Entity>(&svc.db, caller.tenant(), &query, &permitted).await?;
    let result = permits
        .into_iter()
        .map(|permit| {
            let mut rows = rows_by_customer.remove(&permit.customer_id()).unwrap_or_default();
            let has_next_page = rows.len() > first;
            rows.truncate(first);
            let items = rows.into_iter().filter_map(Touchpoint::from_row).collect();
            (permit.customer_id(), permit.serve(Page { items, has_next_page, has_previous_page: false }))
        })
        .collect();
    svc.access_log.record(caller, permitted, AccessCategory::Touchpoints);
    Ok(result)
}

/// New touchpoints of the caller's tenant as they are recorded, each passed through the policy decision point:
/// customers who have not consented to the caller's purpose are not streamed. Needs `touchpoints:read`.
pub async fn watch(
    caller: &Caller,
    svc: &Services,
) -> ApiResult<futures_util::stream::BoxStream<'static, Permitted<Touchpoint>>> {
    use futures_util::StreamExt;
    caller.require(Scope::TouchpointsRead)?;
    let stream = svc.pubsub.subscribe(&crate::changes::touchpoints_topic(caller.tenant())).await.map_err(|err| {
        tracing::error!(error = %err, "subscribing to touchpoints failed");
        ApiError::Unavailable("touchpoint notifications are unavailable, try again".into())
    })?;
    let caller = caller.clone();
    let svc = svc.clone();
    Ok(stream
        .filter_map(move |payload| {
            let caller = caller.clone();
            let svc = svc.clone();
            async move {
                let event: crate::changes::TouchpointRecorded = serde_json::from_str(&payload).ok()?;
                let permit =
                    policy::authorize(&caller, &svc, event.customer_id, DataCategory::BehaviouralHistory).await.ok()?;
                let row = of_customer(caller.tenant(), &permit)
                    .filter(touchpoint::Column::Id.eq(event.id))
                    .one(svc.db.conn())
                    .await
                    .ok()??;
                svc.access_log.record(&caller, [event.customer_id], AccessCategory::Touchpoints);
                Touchpoint::from_row(row).map(|tp| permit.serve(tp))
            }
        })
        .boxed())
}
