//! The scenarios: what each client sends, and how an answer is judged (non-2xx or GraphQL `errors` is an error).
use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Manifest, Shared};

const PROFILE: &str = "query($id: UUID!) { customer(id: $id) { id givenName familyName identities { kind value } \
     consents { purpose status } touchpoints(first: 20) { edges { node { id channel type stage occurredAt } } } } }";
const PROFILE_ID: &str = "query($id: UUID!) { customer(id: $id) { id } }";
const TIMELINE: &str = "query($id: UUID!, $after: String) { customer(id: $id) { touchpoints(first: 50, after: $after) \
     { edges { cursor node { id channel type stage occurredAt } } pageInfo { hasNextPage endCursor } } } }";
const FEED: &str = "query($cursor: String) { touchpoints(first: 100, after: $cursor) { excludedCount resumeCursor \
     edges { node { id customerId type } } pageInfo { hasNextPage endCursor } } }";
const RECORD: &str = "mutation($tps: [TouchpointInput!]!) { recordTouchpoints(touchpoints: $tps) \
     { created duplicates rejected } }";
const DEEP_CURSOR: &str = "query($id: UUID!, $to: DateTime!) { customer(id: $id) { \
     touchpoints(first: 1, filter: { to: $to }) { edges { cursor node { occurredAt } } } } }";
const COUNT_FROM: &str = "query($id: UUID!, $from: DateTime) { customer(id: $id) { \
     touchpoints(first: 0, filter: { from: $from }) { totalCount } } }";

/// The share of the largest history that is newer than the `timeline-deep` page.
const DEEP_FRACTION: f64 = 0.9;
/// New anonymous visitors per run: repeats resolve to the customer the first one created.
const ANONYMOUS_POOL: u64 = 5_000;

/// A scenario ready to run: the ids and cursors it needs.
pub enum Prepared {
    Profile,
    /// `customer(id) { id }`: the consent-checked, access-logged read without the profile's fields.
    ProfileId,
    Timeline {
        customer: Uuid,
    },
    Deep {
        customer: Uuid,
        cursor: String,
        note: String,
    },
    Feed,
    IngestGraphql,
    IngestSegment,
    /// A year of NPS in weekly buckets per channel (the rollups), with intervals and changes.
    CxMetrics,
    /// `profile` plus the customer's segments, computed traits and scores, with 100 definitions defined.
    ProfileDerived,
    /// `ingest-graphql` with 100 definitions kept up to date as touchpoints arrive.
    IngestDerived,
    /// One touchpoint for a new customer, then wait for its change event on a `derivedChanges` subscription.
    DerivedEvents(std::sync::Arc<crate::derived::Arrivals>),
    /// A new version of one of 100 definitions, backfilled over every customer (one client).
    Backfill,
}

impl Prepared {
    /// What the items column counts.
    pub fn items_label(&self) -> &'static str {
        match self {
            Prepared::Profile | Prepared::ProfileId => "profiles",
            Prepared::Timeline { .. } | Prepared::Deep { .. } | Prepared::Feed => "edges",
            Prepared::IngestGraphql | Prepared::IngestSegment => "touchpoints",
            Prepared::CxMetrics => "cells",
            Prepared::ProfileDerived => "profiles",
            Prepared::IngestDerived => "touchpoints",
            Prepared::DerivedEvents(_) => "events",
            Prepared::Backfill => "customers",
        }
    }

    /// Clients the scenario runs with, when it cannot take the configured number.
    pub fn max_clients(&self) -> Option<usize> {
        match self {
            Prepared::Backfill => Some(1),
            _ => None,
        }
    }

    pub fn note(&self) -> Option<String> {
        match self {
            Prepared::Deep { note, .. } => Some(note.clone()),
            _ => None,
        }
    }
}

/// One client's own state: its random generator, its place in the feed, its key counter.
pub struct ClientState {
    rng: StdRng,
    pub(crate) client: usize,
    pub(crate) sent: u64,
    feed_cursor: Option<String>,
}

impl ClientState {
    pub fn new(seed: u64, client: usize) -> Self {
        ClientState { rng: StdRng::seed_from_u64(seed), client, sent: 0, feed_cursor: None }
    }
}

pub enum Outcome {
    Ok {
        items: u64,
        item_errors: u64,
    },
    /// A short, groupable description (`HTTP 404`, `GraphQL CONSENT_REQUIRED`, `transport: …`).
    Error(String),
}

fn size_label(size: u64) -> String {
    match size {
        s if s >= 1_000_000 && s % 1_000_000 == 0 => format!("{}m", s / 1_000_000),
        s if s >= 1_000 && s % 1_000 == 0 => format!("{}k", s / 1_000),
        s => s.to_string(),
    }
}

/// `all` becomes every scenario the manifest can feed; other names are checked against it.
pub fn expand(requested: &[String], manifest: &Manifest) -> anyhow::Result<Vec<String>> {
    let timelines: Vec<String> =
        manifest.heavy_by_size().into_iter().map(|(size, _)| format!("timeline-{}", size_label(size))).collect();
    let mut names = Vec::new();
    for name in requested {
        let name = name.trim();
        if name == "all" {
            names.push("profile".to_owned());
            names.extend(timelines.iter().cloned());
            if !timelines.is_empty() {
                names.push("timeline-deep".to_owned());
            }
            names.extend(
                [
                    "feed",
                    "ingest-graphql",
                    "ingest-segment",
                    "cx-metrics",
                    "profile-derived",
                    "ingest-derived",
                    "derived-events",
                    "backfill",
                ]
                .map(str::to_owned),
            );
        } else if matches!(
            name,
            "profile"
                | "profile-id"
                | "feed"
                | "ingest-graphql"
                | "ingest-segment"
                | "timeline-deep"
                | "cx-metrics"
                | "profile-derived"
                | "ingest-derived"
                | "derived-events"
                | "backfill"
        ) || timelines.iter().any(|t| t == name)
        {
            names.push(name.to_owned());
        } else if name.starts_with("timeline-") {
            anyhow::bail!(
                "`{name}`: the manifest has no heavy customer of that size (it has: {})",
                timelines.join(", ")
            );
        } else {
            anyhow::bail!("unknown scenario `{name}`");
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

pub async fn prepare(shared: &Shared, name: &str) -> anyhow::Result<Prepared> {
    let heavy = shared.manifest.heavy_by_size();
    Ok(match name {
        "profile" => Prepared::Profile,
        "profile-id" => Prepared::ProfileId,
        "feed" => Prepared::Feed,
        "ingest-graphql" => Prepared::IngestGraphql,
        "ingest-segment" => Prepared::IngestSegment,
        "cx-metrics" => Prepared::CxMetrics,
        "profile-derived" => {
            crate::derived::ensure_hundred(shared).await?;
            Prepared::ProfileDerived
        }
        "ingest-derived" => {
            crate::derived::ensure_hundred(shared).await?;
            Prepared::IngestDerived
        }
        "derived-events" => {
            crate::derived::ensure_hundred(shared).await?;
            Prepared::DerivedEvents(crate::derived::subscribe(shared).await?)
        }
        "backfill" => {
            crate::derived::ensure_hundred(shared).await?;
            Prepared::Backfill
        }
        "timeline-deep" => {
            let (size, customer) = *heavy.last().context("the manifest has no heavy customer")?;
            deep_cursor(shared, size, customer).await?
        }
        other => {
            let label = other.trim_start_matches("timeline-");
            let customer = heavy
                .iter()
                .find(|(size, _)| size_label(*size) == label)
                .map(|(_, id)| *id)
                .with_context(|| format!("no heavy customer for `{other}`"))?;
            Prepared::Timeline { customer }
        }
    })
}

/// Finds a cursor with ~90% of the largest history newer than it. History is spread evenly in time, so a `to`
/// filter jumps there in one request instead of walking 9,000 pages; the depth reached is then counted.
async fn deep_cursor(shared: &Shared, size: u64, customer: Uuid) -> anyhow::Result<Prepared> {
    let (from, to) = (shared.manifest.history_from, shared.manifest.history_to);
    let span = (to - from).num_milliseconds() as f64;
    let target = to - chrono::Duration::milliseconds((span * DEEP_FRACTION) as i64);
    let body = graphql(shared, DEEP_CURSOR, json!({ "id": customer, "to": rfc3339(target) }))
        .await
        .map_err(|e| anyhow::anyhow!("finding the deep cursor: {e}"))?;
    let edge = &body["data"]["customer"]["touchpoints"]["edges"][0];
    let cursor = edge["cursor"].as_str().context("no touchpoint that deep")?.to_owned();
    let at = edge["node"]["occurredAt"].as_str().unwrap_or_default().to_owned();
    let newer = graphql(shared, COUNT_FROM, json!({ "id": customer, "from": at }))
        .await
        .ok()
        .and_then(|b| b["data"]["customer"]["touchpoints"]["totalCount"].as_u64());
    let note = match newer {
        Some(n) => format!(
            "customer with {size} touchpoints; the page starts after {n} newer ones ({:.0}% deep)",
            100.0 * n as f64 / size.max(1) as f64
        ),
        None => format!("customer with {size} touchpoints; cursor at {at}"),
    };
    Ok(Prepared::Deep { customer, cursor, note })
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// POSTs a GraphQL request; `Err` with a short kind for non-2xx, transport failures and GraphQL errors.
pub(crate) async fn graphql(shared: &Shared, query: &str, variables: Value) -> Result<Value, String> {
    let response = shared
        .client
        .post(&shared.graphql)
        .bearer_auth(&shared.token)
        .header("accept", "application/graphql-response+json, application/json")
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if let Some(first) = body["errors"].as_array().and_then(|e| e.first()) {
        let code = first["extensions"]["code"].as_str().map(str::to_owned);
        let message = first["message"].as_str().unwrap_or("?");
        return Err(format!("GraphQL {}", code.unwrap_or_else(|| truncate(message, 80))));
    }
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    Ok(body)
}

fn transport(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "transport: timeout".to_owned()
    } else if err.is_connect() {
        "transport: connect".to_owned()
    } else {
        format!("transport: {}", truncate(&err.to_string(), 60))
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

fn edges(page: &Value) -> u64 {
    page["edges"].as_array().map_or(0, |e| e.len() as u64)
}

/// One request of the scenario, judged.
pub async fn request(shared: &Shared, prepared: &Prepared, state: &mut ClientState) -> Outcome {
    state.sent += 1;
    let result = match prepared {
        Prepared::Profile => profile(shared, state, PROFILE).await,
        Prepared::ProfileId => profile(shared, state, PROFILE_ID).await,
        Prepared::Timeline { customer } => timeline(shared, *customer, None).await,
        Prepared::Deep { customer, cursor, .. } => timeline(shared, *customer, Some(cursor)).await,
        Prepared::Feed => feed(shared, state).await,
        Prepared::IngestGraphql => ingest_graphql(shared, state).await,
        Prepared::IngestSegment => ingest_segment(shared, state).await,
        Prepared::CxMetrics => cx_metrics(shared).await,
        Prepared::ProfileDerived => profile_derived(shared, state).await,
        Prepared::IngestDerived => ingest_graphql(shared, state).await,
        Prepared::DerivedEvents(arrivals) => crate::derived::one_event(shared, state, arrivals).await,
        Prepared::Backfill => crate::derived::backfill(shared, state).await,
    };
    match result {
        Ok((items, item_errors)) => Outcome::Ok { items, item_errors },
        Err(kind) => Outcome::Error(kind),
    }
}

pub(crate) type Judged = Result<(u64, u64), String>;

const PROFILE_DERIVED: &str = "query($id: UUID!) { customer(id: $id) { id givenName familyName \
    identities { kind value } consents { purpose status } \
    touchpoints(first: 20) { edges { node { id channel type stage occurredAt } } } \
    segments { key changesAt } computedTraits { key value } scores { rfm { code segment } clv { value refusal { code } } } } }";

const DEFINE_SEGMENT: &str = "mutation($i: DefineSegmentInput!) { defineSegment(input: $i) { version } }";
const DEFINE_TRAIT: &str = "mutation($i: DefineComputedTraitInput!) { defineComputedTrait(input: $i) { version } }";

/// 50 segments and 50 computed traits for the personalization purpose, over windows from 7 days to a year.
pub(crate) async fn define_hundred(shared: &Shared) -> anyhow::Result<()> {
    let kinds = ["PURCHASE", "PAGE_VIEW", "EMAIL_OPEN", "SUPPORT_TICKET", "STORE_VISIT"];
    for i in 0..50 {
        let kind = kinds[i % kinds.len()];
        let days = [7, 30, 90, 180, 365][i % 5];
        let condition = json!({ "all": [
            { "aggregate": { "aggregate": "COUNT", "filter": { "types": [kind] }, "window": { "lastDays": days } },
              "op": "GTE", "value": 1 + (i % 3) },
            { "hasIdentity": "EMAIL" },
        ] });
        let input =
            json!({ "key": format!("bench_segment_{i}"), "purpose": "personalization", "condition": condition });
        graphql(shared, DEFINE_SEGMENT, json!({ "i": input }))
            .await
            .map_err(|e| anyhow::anyhow!("defineSegment: {e}"))?;
        let aggregate = ["COUNT", "SUM", "MAX", "LAST_AT", "TOP"][i % 5];
        let mut aggregation =
            json!({ "aggregate": aggregate, "filter": { "types": [kind] }, "window": { "lastDays": days } });
        if aggregate == "SUM" || aggregate == "MAX" {
            aggregation["of"] = json!("value");
        }
        if aggregate == "TOP" {
            aggregation["of"] = json!("campaign");
            aggregation["k"] = json!(3);
        }
        let input =
            json!({ "key": format!("bench_trait_{i}"), "purpose": "personalization", "aggregation": aggregation });
        graphql(shared, DEFINE_TRAIT, json!({ "i": input }))
            .await
            .map_err(|e| anyhow::anyhow!("defineComputedTrait: {e}"))?;
    }
    Ok(())
}

async fn profile_derived(shared: &Shared, state: &mut ClientState) -> Judged {
    let id = shared.manifest.sample_customers.choose(&mut state.rng).copied().unwrap_or_default();
    let body = graphql(shared, PROFILE_DERIVED, json!({ "id": id })).await?;
    if body["data"]["customer"]["segments"].is_null() {
        return Err("segments missing".to_owned());
    }
    Ok((1, 0))
}

const CX_METRICS: &str = "query($from: Date!, $to: Date!) { cxMetrics(metric: NPS, window: { from: $from, to: $to }, \
    groupBy: [CHANNEL], bucket: WEEK) { cells { bucketStart channel answers value interval { low high } \
    marginOfError suppressed change { delta pValue } } total { answers value } } }";

async fn cx_metrics(shared: &Shared) -> Judged {
    let to = Utc::now().date_naive();
    let from = to - chrono::Duration::days(364);
    let body = graphql(shared, CX_METRICS, json!({ "from": from.to_string(), "to": to.to_string() })).await?;
    let cells = body["data"]["cxMetrics"]["cells"].as_array().map_or(0, Vec::len) as u64;
    if body["data"]["cxMetrics"]["total"]["answers"].as_u64().unwrap_or(0) == 0 {
        return Err("no counted answers".to_owned());
    }
    Ok((cells, 0))
}

async fn profile(shared: &Shared, state: &mut ClientState, query: &str) -> Judged {
    let id = shared.manifest.sample_customers.choose(&mut state.rng).copied().unwrap_or_default();
    let body = graphql(shared, query, json!({ "id": id })).await?;
    if body["data"]["customer"].is_null() {
        return Err("customer missing".to_owned());
    }
    Ok((1, 0))
}

async fn timeline(shared: &Shared, customer: Uuid, after: Option<&String>) -> Judged {
    let body = graphql(shared, TIMELINE, json!({ "id": customer, "after": after })).await?;
    let page = &body["data"]["customer"]["touchpoints"];
    let n = edges(page);
    if n == 0 {
        return Err("empty timeline page".to_owned());
    }
    Ok((n, 0))
}

/// A feed cursor at a random moment of the seeded history (feed cursors name a UUIDv7; its time is what counts).
fn random_feed_cursor(manifest: &Manifest, rng: &mut StdRng) -> String {
    let (from, to) = (manifest.history_from.timestamp_millis(), manifest.history_to.timestamp_millis());
    let at = if to > from { rng.random_range(from..to) } else { from };
    let id = uuid::Builder::from_unix_timestamp_millis(at.max(0) as u64, &[0; 10]).into_uuid();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("k1:{id}"))
}

async fn feed(shared: &Shared, state: &mut ClientState) -> Judged {
    let cursor = match state.feed_cursor.take() {
        Some(cursor) => cursor,
        None => random_feed_cursor(&shared.manifest, &mut state.rng),
    };
    let body = graphql(shared, FEED, json!({ "cursor": cursor })).await?;
    let page = &body["data"]["touchpoints"];
    // Walk on; at the end of the feed start again somewhere random.
    if page["pageInfo"]["hasNextPage"].as_bool() == Some(true) {
        state.feed_cursor = page["resumeCursor"].as_str().or(page["pageInfo"]["endCursor"].as_str()).map(str::to_owned);
    }
    Ok((edges(page), 0))
}

const EVENTS: &[(&str, &str, &str)] = &[
    ("Product Viewed", "PAGE_VIEW", "WEB"),
    ("Product Viewed", "PAGE_VIEW", "WEB"),
    ("Product Viewed", "SCREEN_VIEW", "MOBILE_APP"),
    ("Product Added", "CUSTOM", "WEB"),
    ("Email Opened", "EMAIL_OPEN", "EMAIL"),
    ("Order Completed", "PURCHASE", "WEB"),
];

/// A new key per touchpoint: run id, client, request, position.
fn key(shared: &Shared, state: &ClientState, i: usize) -> String {
    format!("bench-{}-{}-{}-{i}", shared.run_id, state.client, state.sent)
}

fn recent(rng: &mut StdRng) -> String {
    let at = Utc::now() - chrono::Duration::seconds(rng.random_range(0..86_400));
    rfc3339(Utc.timestamp_millis_opt(at.timestamp_millis()).single().unwrap_or(at))
}

async fn ingest_graphql(shared: &Shared, state: &mut ClientState) -> Judged {
    let mut items = Vec::with_capacity(shared.batch);
    for i in 0..shared.batch {
        let existing =
            if state.rng.random_bool(0.5) { shared.manifest.sample_emails.choose(&mut state.rng) } else { None };
        let identity = match existing {
            Some(email) => json!({ "kind": "EMAIL", "value": email }),
            None => json!({
                "kind": "ANONYMOUS_ID",
                "value": format!("bench-{}-anon-{}", shared.run_id, state.rng.random_range(0..ANONYMOUS_POOL)),
            }),
        };
        let (_, kind, channel) = *EVENTS.choose(&mut state.rng).unwrap_or(&EVENTS[0]);
        let mut item = json!({
            "identities": [identity],
            "channel": channel,
            "type": kind,
            "occurredAt": recent(&mut state.rng),
            "source": "kontakt-bench",
            "idempotencyKey": key(shared, state, i),
            "properties": { "sku": format!("SKU-{}", state.rng.random_range(10_000..99_999)) },
        });
        if kind == "PURCHASE" {
            item["value"] = json!((state.rng.random_range(5_000..200_000) as f64) / 100.0);
            item["currency"] = json!("DKK");
        }
        items.push(item);
    }
    let body = graphql(shared, RECORD, json!({ "tps": items })).await?;
    let result = &body["data"]["recordTouchpoints"];
    let accepted = result["created"].as_u64().unwrap_or(0) + result["duplicates"].as_u64().unwrap_or(0);
    Ok((accepted, result["rejected"].as_u64().unwrap_or(0)))
}

async fn ingest_segment(shared: &Shared, state: &mut ClientState) -> Judged {
    let mut batch = Vec::with_capacity(shared.batch);
    for i in 0..shared.batch {
        let (event, _, channel) = *EVENTS.choose(&mut state.rng).unwrap_or(&EVENTS[0]);
        let anonymous = format!("bench-{}-anon-{}", shared.run_id, state.rng.random_range(0..ANONYMOUS_POOL));
        let mut message = json!({
            "type": "track",
            "event": event,
            "messageId": key(shared, state, i),
            "anonymousId": anonymous,
            "timestamp": recent(&mut state.rng),
            "properties": { "product_id": format!("SKU-{}", state.rng.random_range(10_000..99_999)) },
            "context": { "channel": channel.to_lowercase() },
        });
        if state.rng.random_bool(0.3)
            && let Some(email) = shared.manifest.sample_emails.choose(&mut state.rng)
        {
            message["userId"] = json!(format!("user-{}", &email[..email.find('@').unwrap_or(email.len())]));
            message["context"]["traits"] = json!({ "email": email });
        }
        if event == "Order Completed" {
            message["properties"]["revenue"] = json!((state.rng.random_range(5_000..200_000) as f64) / 100.0);
            message["properties"]["currency"] = json!("DKK");
        }
        batch.push(message);
    }
    let response = shared
        .client
        .post(format!("{}/v1/batch", shared.base))
        .basic_auth(&shared.write_key, Some(""))
        .timeout(Duration::from_secs(30))
        .json(&json!({ "batch": batch, "sentAt": rfc3339(Utc::now()) }))
        .send()
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {}", status.as_u16()));
    }
    Ok((shared.batch as u64, 0))
}
