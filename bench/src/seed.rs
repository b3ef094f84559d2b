//! `kontakt-bench seed`: a realistic, reproducible dataset for one tenant, written fast enough to benchmark against.
//!
//! Customers, identities and consent decisions go in with multi-row inserts; touchpoints (the bulk) stream from a
//! generator thread into PostgreSQL's `COPY … FROM STDIN`, or into multi-row inserts on SQLite.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, IntoActiveModel, NotSet,
    PaginatorTrait,
};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use kontakt::{
    auth::TenantId,
    consent::{ConsentPurpose, ConsentStatus},
    storage::{
        Database,
        entities::{consent_event, customer, identity, touchpoint},
    },
    touchpoints::{Channel, FeedbackMetric, JourneyStage, TouchpointType},
};

/// What `kontakt-bench seed` writes.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedArgs {
    /// Tenant to fill. It must hold no customers yet (seed a fresh tenant or database).
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Ordinary customers.
    #[arg(long, default_value_t = 20_000)]
    pub customers: u64,
    /// Touchpoints spread unevenly over the ordinary customers (a few heavy, many light).
    #[arg(long, default_value_t = 1_000_000)]
    pub touchpoints: u64,
    /// Extra customers with exactly this many touchpoints each, e.g. `1000,100000,1000000`.
    #[arg(long, value_delimiter = ',')]
    pub heavy: Vec<u64>,
    /// Seed of the random generator: the same seed gives the same data (ids and times move with the clock).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write the JSON manifest the benchmark reads.
    #[arg(long, default_value = "bench-manifest.json")]
    pub manifest: PathBuf,
    /// How many ordinary customers (with personalization consent) the manifest lists.
    #[arg(long, default_value_t = 1000)]
    pub sample: usize,
}

/// What was written, for the manifest and the summary.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub customers: u64,
    pub identities: u64,
    pub consent_events: u64,
    pub touchpoints: u64,
}

/// The file `kontakt-bench` reads: who to ask for.
#[derive(Debug, Serialize)]
pub struct Manifest {
    pub tenant: String,
    pub seed: u64,
    pub backend: String,
    pub generated_at: DateTime<Utc>,
    /// The touchpoints lie between these two instants.
    pub history_from: DateTime<Utc>,
    pub history_to: DateTime<Utc>,
    pub seconds: f64,
    pub counts: Counts,
    /// Ordinary customers whose personalization consent is in force (their timelines can be read).
    pub sample_customers: Vec<Uuid>,
    /// Emails of sample customers, for ingestion that names existing customers.
    pub sample_emails: Vec<String>,
    /// Heavy customers by their number of touchpoints.
    pub heavy: BTreeMap<String, Uuid>,
}

const HISTORY_DAYS: i64 = 730;
/// Touchpoints per batch the generator hands to the writer.
const TOUCHPOINT_BATCH: usize = 20_000;

pub async fn run(db: &Database, args: SeedArgs) -> anyhow::Result<Manifest> {
    let started = Instant::now();
    let tenant = TenantId::parse(&args.tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
    if args.heavy.contains(&0) {
        anyhow::bail!("--heavy sizes must be positive");
    }
    db.migrate().await?;
    let existing = customer::of_tenant(&tenant).count(db.conn()).await.context("counting existing customers")?;
    if existing > 0 {
        anyhow::bail!(
            "tenant `{tenant}` already has {existing} customers; seed another --tenant or a fresh database \
             (identities and idempotency keys must stay unique)"
        );
    }
    let backend = db.backend();
    let mut generator = Generator::new(tenant.as_str(), args.seed);
    let ordinary = args.customers;
    let total_customers = ordinary + args.heavy.len() as u64;

    // Customers, identities, consents.
    let bar = progress(total_customers, "customers");
    let mut people = Vec::with_capacity(total_customers as usize);
    let mut sample = Reservoir::new(args.sample);
    let mut counts = Counts::default();
    let mut batch = PeopleBatch::default();
    let mut txn = db.begin_write().await?;
    for index in 0..total_customers {
        let heavy = index.checked_sub(ordinary).map(|i| args.heavy[i as usize]);
        let person = generator.person(index, heavy, &mut batch);
        if heavy.is_none() && person.personalization {
            sample.offer(&mut generator.rng, (person.id, person.email.clone()));
        }
        people.push(person);
        if batch.customers.len() >= 5_000 {
            counts.add(&batch.flush(&txn, backend).await?);
            bar.set_position(index + 1);
        }
        if (index + 1) % 50_000 == 0 {
            // Bounded transactions: a huge seed does not hold one open for minutes.
            txn.commit().await?;
            txn = db.begin_write().await?;
        }
    }
    counts.add(&batch.flush(&txn, backend).await?);
    txn.commit().await?;
    bar.finish_and_clear();
    let people_secs = started.elapsed().as_secs_f64();

    // Touchpoints: how many each customer gets, then a generator thread feeding the database.
    let weights: Vec<f64> = people.iter().map(|p| p.heavy.map_or_else(|| generator.weight(), |_| 0.0)).collect();
    let plan = allocate(&mut generator.rng, &people, &weights, args.touchpoints);
    let total_touchpoints: u64 = plan.iter().map(|p| p.count).sum();
    let bar = progress(total_touchpoints, "touchpoints");
    let touchpoints_started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(4);
    let copy = backend == DbBackend::Postgres;
    let producer = tokio::task::spawn_blocking(move || generator.touchpoints(&plan, copy, &tx).map(|()| generator));
    let written = match backend {
        DbBackend::Postgres => copy_touchpoints(db, &mut rx, &bar).await,
        _ => insert_touchpoints(db, &mut rx, &bar).await,
    };
    // Dropping the receiver ends the producer if the writer failed half-way.
    drop(rx);
    let generator = producer.await.context("touchpoint generator")??;
    counts.touchpoints = written?;
    bar.finish_and_clear();
    let touchpoint_secs = touchpoints_started.elapsed().as_secs_f64();

    // The survey answers went in by COPY, around the API: record and count them as the server would.
    kontakt::cx::answers::backfill(db.conn()).await.context("recording the survey answers for CX metrics")?;

    let analyze_started = Instant::now();
    analyze(db).await?;
    let analyze_secs = analyze_started.elapsed().as_secs_f64();

    let seconds = started.elapsed().as_secs_f64();
    let (sample_customers, sample_emails) = sample.into_sorted();
    let heavy =
        people.iter().filter_map(|p| p.heavy.map(|size| (size.to_string(), p.id))).collect::<BTreeMap<String, Uuid>>();
    eprintln!(
        "seeded tenant `{tenant}` ({}) in {seconds:.1} s: {} customers, {} identities, {} consent events in \
         {people_secs:.1} s; {} touchpoints in {touchpoint_secs:.1} s ({:.0}/s); analyze {analyze_secs:.1} s",
        backend_name(backend),
        counts.customers,
        counts.identities,
        counts.consent_events,
        counts.touchpoints,
        counts.touchpoints as f64 / touchpoint_secs.max(1e-9),
    );
    let manifest = Manifest {
        tenant: tenant.as_str().to_owned(),
        seed: args.seed,
        backend: backend_name(backend).to_owned(),
        generated_at: Utc::now(),
        history_from: generator.start,
        history_to: generator.now,
        seconds,
        counts,
        sample_customers,
        sample_emails,
        heavy,
    };
    write_manifest(&args.manifest, &manifest)?;
    eprintln!("manifest written to {}", args.manifest.display());
    Ok(manifest)
}

fn backend_name(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}

fn write_manifest(path: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(manifest)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

fn progress(len: u64, what: &'static str) -> ProgressBar {
    // Hidden by indicatif when stderr is not a terminal, so scripted runs stay quiet.
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(what);
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Fresh statistics and visibility maps, so the first benchmark queries neither plan blind nor set hint bits.
async fn analyze(db: &Database) -> anyhow::Result<()> {
    let sql = match db.backend() {
        DbBackend::Postgres => "VACUUM (ANALYZE) customers, identities, consent_events, touchpoints",
        _ => "ANALYZE",
    };
    db.conn().execute_unprepared(sql).await.with_context(|| sql.to_owned())?;
    Ok(())
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.customers += other.customers;
        self.identities += other.identities;
        self.consent_events += other.consent_events;
        self.touchpoints += other.touchpoints;
    }
}

/// Rows per multi-row INSERT: under PostgreSQL's 65,535 and SQLite's 32,766 bind parameters.
fn rows_per_statement(backend: DbBackend, columns: usize) -> usize {
    let params = if backend == DbBackend::Postgres { 60_000 } else { 30_000 };
    (params / columns).max(1)
}

async fn insert_chunked<A>(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    rows: Vec<A>,
    columns: usize,
) -> anyhow::Result<u64>
where
    A: ActiveModelTrait + Send,
{
    let mut written = 0;
    let mut rows = rows.into_iter().peekable();
    let per = rows_per_statement(backend, columns);
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(per).collect();
        written += <A::Entity as EntityTrait>::insert_many(chunk).exec_without_returning(txn).await?;
    }
    Ok(written)
}

#[derive(Default)]
struct PeopleBatch {
    customers: Vec<customer::ActiveModel>,
    identities: Vec<identity::ActiveModel>,
    consents: Vec<consent_event::ActiveModel>,
}

impl PeopleBatch {
    async fn flush(&mut self, txn: &DatabaseTransaction, backend: DbBackend) -> anyhow::Result<Counts> {
        // Customers first: identities and consents refer to them.
        let customers = insert_chunked(txn, backend, std::mem::take(&mut self.customers), 9).await?;
        let identities = insert_chunked(txn, backend, std::mem::take(&mut self.identities), 7).await?;
        let consent_events = insert_chunked(txn, backend, std::mem::take(&mut self.consents), 14).await?;
        Ok(Counts { customers, identities, consent_events, touchpoints: 0 })
    }
}

/// Touchpoints on their way to the database: rows for inserts, or ready COPY text.
enum Batch {
    Rows(Vec<touchpoint::Model>),
    Copy { text: Vec<u8>, rows: u64 },
}

const COPY_TOUCHPOINTS: &str = "COPY touchpoints (id, tenant, customer_id, channel, kind, stage, occurred_at, \
     received_at, source, idempotency_key, properties, value, currency, feedback_metric, feedback_score, \
     feedback_verbatim, consent) FROM STDIN";

/// One COPY for all touchpoints, in one transaction: atomic, and far cheaper per row than INSERT on PostgreSQL.
async fn copy_touchpoints(
    db: &Database,
    rx: &mut tokio::sync::mpsc::Receiver<Batch>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    use sea_orm::sqlx;

    let mut tx = db.conn().get_postgres_connection_pool().begin().await.context("starting a transaction")?;
    // Into an empty table, building the secondary indexes once at the end is several times faster than keeping
    // them up to date row by row. DDL is transactional: if anything fails, the rollback brings them back.
    let empty: bool = sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM touchpoints)").fetch_one(&mut *tx).await?;
    let indexes: Vec<(String, String)> = if empty {
        sqlx::query_as(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = 'touchpoints'::regclass \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        )
        .fetch_all(&mut *tx)
        .await
        .context("reading the touchpoint indexes")?
    } else {
        Vec::new()
    };
    // Names and definitions come from the catalog (`regclass`, `pg_get_indexdef`), never from input.
    for (name, _) in &indexes {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX {name}")))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("DROP INDEX {name}"))?;
    }
    sqlx::query("SET LOCAL maintenance_work_mem = '256MB'").execute(&mut *tx).await?;
    // The server's per-statement timeout (KONTAKT_REQUEST_TIMEOUT) is for requests, not for a bulk load.
    sqlx::query("SET LOCAL statement_timeout = 0").execute(&mut *tx).await?;
    let mut copy = tx.copy_in_raw(COPY_TOUCHPOINTS).await.context("starting COPY")?;
    while let Some(batch) = rx.recv().await {
        let Batch::Copy { text, rows } = batch else {
            copy.abort("unexpected batch").await.ok();
            anyhow::bail!("the generator sent rows where COPY text was expected");
        };
        if let Err(err) = copy.send(text).await {
            copy.abort("send failed").await.ok();
            return Err(err).context("COPY touchpoints");
        }
        bar.inc(rows);
    }
    let rows = copy.finish().await.context("finishing COPY touchpoints")?;
    for (name, definition) in &indexes {
        bar.set_message(format!("building {name}"));
        sqlx::query(sqlx::AssertSqlSafe(definition.as_str()))
            .execute(&mut *tx)
            .await
            .with_context(|| definition.clone())?;
    }
    tx.commit().await.context("committing the touchpoints")?;
    Ok(rows)
}

async fn insert_touchpoints(
    db: &Database,
    rx: &mut tokio::sync::mpsc::Receiver<Batch>,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let backend = db.backend();
    let mut written = 0;
    while let Some(batch) = rx.recv().await {
        let Batch::Rows(rows) = batch else {
            anyhow::bail!("the generator sent COPY text where rows were expected");
        };
        let count = rows.len() as u64;
        let models: Vec<touchpoint::ActiveModel> = rows
            .into_iter()
            .map(|m| touchpoint::ActiveModel { commit_position: NotSet, ..m.into_active_model().reset_all() })
            .collect();
        let txn = db.begin_write().await?;
        written += insert_chunked(&txn, backend, models, 18).await?;
        txn.commit().await?;
        bar.inc(count);
    }
    Ok(written)
}

/// Keeps a uniform random sample of a stream of unknown length (Algorithm R).
struct Reservoir {
    capacity: usize,
    seen: u64,
    items: Vec<(Uuid, Option<String>)>,
}

impl Reservoir {
    fn new(capacity: usize) -> Self {
        Reservoir { capacity, seen: 0, items: Vec::with_capacity(capacity.min(100_000)) }
    }

    fn offer(&mut self, rng: &mut StdRng, item: (Uuid, Option<String>)) {
        self.seen += 1;
        if self.items.len() < self.capacity {
            self.items.push(item);
        } else {
            let slot = rng.random_range(0..self.seen);
            if let Some(place) = self.items.get_mut(slot as usize) {
                *place = item;
            }
        }
    }

    fn into_sorted(mut self) -> (Vec<Uuid>, Vec<String>) {
        self.items.sort_by_key(|(id, _)| *id);
        let emails = self.items.iter().filter_map(|(_, e)| e.clone()).collect();
        (self.items.into_iter().map(|(id, _)| id).collect(), emails)
    }
}

/// A customer as the touchpoint generator needs it.
struct Person {
    id: Uuid,
    created_at: DateTime<Utc>,
    email: Option<String>,
    personalization: bool,
    heavy: Option<u64>,
}

struct Allotment {
    customer: Uuid,
    from: DateTime<Utc>,
    count: u64,
}

/// Splits `total` over ordinary customers in proportion to their weights (exactly `total` in all); heavy customers
/// get exactly their size.
fn allocate(rng: &mut StdRng, people: &[Person], weights: &[f64], total: u64) -> Vec<Allotment> {
    let sum: f64 = weights.iter().sum();
    let mut counts: Vec<u64> =
        weights.iter().map(|w| if sum > 0.0 { (total as f64 * w / sum).floor() as u64 } else { 0 }).collect();
    let ordinary: Vec<usize> = (0..people.len()).filter(|&i| people[i].heavy.is_none()).collect();
    let mut left = total.saturating_sub(counts.iter().sum());
    while left > 0 && !ordinary.is_empty() {
        if let Some(&i) = ordinary.choose(rng) {
            counts[i] += 1;
            left -= 1;
        }
    }
    people
        .iter()
        .zip(counts)
        .map(|(p, count)| Allotment { customer: p.id, from: p.created_at, count: p.heavy.unwrap_or(count) })
        .collect()
}

/// Weighted choice: `table` pairs items with integer weights.
fn pick<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for &(item, weight) in table {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

const GIVEN_NAMES: &[&str] = &[
    "Anne",
    "Mette",
    "Kirsten",
    "Hanne",
    "Helle",
    "Susanne",
    "Lene",
    "Maria",
    "Camilla",
    "Ida",
    "Emma",
    "Sofie",
    "Freja",
    "Laura",
    "Mathilde",
    "Julie",
    "Karen",
    "Signe",
    "Astrid",
    "Nanna",
    "Peter",
    "Michael",
    "Lars",
    "Jens",
    "Thomas",
    "Henrik",
    "Søren",
    "Christian",
    "Martin",
    "Jan",
    "Morten",
    "Rasmus",
    "Mads",
    "Frederik",
    "Oliver",
    "William",
    "Noah",
    "Emil",
    "Magnus",
    "Jakob",
    "Ahmed",
    "Ali",
    "Fatima",
    "Olga",
    "Anders",
    "Bjørn",
    "Åse",
];
const FAMILY_NAMES: &[&str] = &[
    "Nielsen",
    "Jensen",
    "Hansen",
    "Pedersen",
    "Andersen",
    "Christensen",
    "Larsen",
    "Sørensen",
    "Rasmussen",
    "Jørgensen",
    "Petersen",
    "Madsen",
    "Kristensen",
    "Olsen",
    "Thomsen",
    "Christiansen",
    "Poulsen",
    "Johansen",
    "Møller",
    "Mortensen",
    "Karlsson",
    "Lindqvist",
    "Berg",
    "Holm",
    "Dahl",
    "Schmidt",
    "Müller",
    "Kowalski",
    "Yilmaz",
    "Khan",
    "Svendsen",
    "Frederiksen",
    "Lund",
    "Bak",
    "Kjær",
    "Ravn",
    "Mikkelsen",
    "Bech",
    "Vestergaard",
];
const MAIL_DOMAINS: &[(&str, u32)] = &[
    ("gmail.com", 40),
    ("hotmail.com", 15),
    ("outlook.dk", 8),
    ("yahoo.com", 6),
    ("mail.dk", 6),
    ("live.dk", 5),
    ("icloud.com", 10),
    ("jubii.dk", 2),
    ("firma.dk", 8),
];
const PAGES: &[&str] = &[
    "/",
    "/products/running-shoes",
    "/products/rain-jacket",
    "/products/wool-sweater",
    "/cart",
    "/checkout",
    "/account",
    "/stores",
    "/sale",
    "/blog/how-to-layer",
    "/help/returns",
    "/products/backpack-25l",
];
const SCREENS: &[&str] = &["home", "product", "cart", "checkout", "orders", "profile", "search", "wishlist"];
const CAMPAIGNS: &[&str] =
    &["spring-sale", "summer-outdoor", "black-friday", "christmas", "new-arrivals", "loyalty-points", "win-back"];
const REFERRERS: &[&str] = &["google", "direct", "newsletter", "facebook"];
const CARRIERS: &[&str] = &["postnord", "gls", "dao", "bring"];
const SURVEYS: &[&str] = &["post-purchase", "relationship", "support"];
const CUSTOM_EVENTS: &[&str] = &["app_installed", "wishlist_add", "event_checkin", "coupon_redeemed"];
const TOPICS: &[&str] = &["delivery", "return", "payment", "size", "account", "warranty"];
const VERBATIMS: &[&str] = &[
    "Fast delivery, great quality.",
    "The jacket was smaller than expected.",
    "Friendly staff in the store.",
    "Checkout was confusing.",
    "Took too long to get an answer.",
    "Love the loyalty programme!",
    "Return was easy.",
];

const KINDS: &[(TouchpointType, u32)] = &[
    (TouchpointType::PageView, 300),
    (TouchpointType::ScreenView, 120),
    (TouchpointType::AdImpression, 110),
    (TouchpointType::AdClick, 30),
    (TouchpointType::EmailSent, 130),
    (TouchpointType::EmailOpen, 60),
    (TouchpointType::EmailClick, 25),
    (TouchpointType::StoreVisit, 30),
    (TouchpointType::Purchase, 45),
    (TouchpointType::Return, 5),
    (TouchpointType::Delivery, 30),
    (TouchpointType::SupportTicket, 8),
    (TouchpointType::SupportCall, 6),
    (TouchpointType::SupportChat, 7),
    (TouchpointType::Review, 5),
    (TouchpointType::SurveyResponse, 15),
    (TouchpointType::Custom, 10),
];

fn channels_of(kind: TouchpointType) -> &'static [(Channel, u32)] {
    use TouchpointType as T;
    match kind {
        T::PageView => &[(Channel::Web, 100)],
        T::ScreenView => &[(Channel::MobileApp, 100)],
        T::AdImpression | T::AdClick => &[(Channel::Ads, 65), (Channel::Social, 35)],
        T::EmailSent | T::EmailOpen | T::EmailClick => &[(Channel::Email, 100)],
        T::StoreVisit => &[(Channel::Store, 100)],
        T::Purchase => &[(Channel::Web, 55), (Channel::Store, 30), (Channel::MobileApp, 15)],
        T::Return => &[(Channel::Store, 60), (Channel::Web, 40)],
        T::Delivery => &[(Channel::Partner, 70), (Channel::Sms, 30)],
        T::SupportTicket => &[(Channel::Web, 60), (Channel::Email, 40)],
        T::SupportCall => &[(Channel::CallCenter, 100)],
        T::SupportChat => &[(Channel::Chat, 100)],
        T::Review => &[(Channel::Web, 70), (Channel::Social, 30)],
        T::SurveyResponse => &[(Channel::Email, 60), (Channel::Sms, 20), (Channel::Web, 20)],
        T::Custom => &[(Channel::Push, 40), (Channel::Event, 30), (Channel::Other, 30)],
    }
}

fn source_of(channel: Channel) -> &'static str {
    match channel {
        Channel::Web => "web-sdk",
        Channel::MobileApp => "app-sdk",
        Channel::Store => "pos",
        Channel::CallCenter => "contact-center",
        Channel::Email => "esp",
        Channel::Sms => "sms-gateway",
        Channel::Push => "push-service",
        Channel::Social => "social-ads",
        Channel::Ads => "ad-server",
        Channel::Chat => "chat-widget",
        Channel::Event => "events",
        Channel::Partner => "carrier",
        Channel::Other => "import",
    }
}

/// Answer distributions: satisfied customers dominate, as in real surveys.
const NPS: &[(i16, u32)] =
    &[(0, 2), (1, 1), (2, 1), (3, 2), (4, 2), (5, 5), (6, 6), (7, 12), (8, 20), (9, 22), (10, 27)];
const CSAT: &[(i16, u32)] = &[(1, 5), (2, 7), (3, 15), (4, 38), (5, 35)];
const CES: &[(i16, u32)] = &[(1, 20), (2, 28), (3, 22), (4, 13), (5, 8), (6, 5), (7, 4)];

/// ASCII for e-mail local parts.
fn fold(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.to_lowercase().chars() {
        match c {
            'æ' => out.push_str("ae"),
            'ø' => out.push('o'),
            'å' => out.push_str("aa"),
            'ü' => out.push_str("ue"),
            c if c.is_ascii_alphanumeric() => out.push(c),
            _ => {}
        }
    }
    out
}

/// Everything random comes from one seeded generator, consumed in a fixed order.
struct Generator {
    rng: StdRng,
    tenant: String,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
}

impl Generator {
    fn new(tenant: &str, seed: u64) -> Self {
        let now_ms = Utc::now().timestamp_millis();
        let now = Utc.timestamp_millis_opt(now_ms).single().unwrap_or_else(Utc::now);
        Generator {
            rng: StdRng::seed_from_u64(seed),
            tenant: tenant.to_owned(),
            now,
            start: now - chrono::Duration::days(HISTORY_DAYS),
        }
    }

    /// A UUIDv7 carrying `at`, so id order follows time (the feed pages in id order).
    fn v7(&mut self, at: DateTime<Utc>) -> Uuid {
        let mut random = [0u8; 10];
        self.rng.fill(&mut random);
        uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis().max(0) as u64, &random).into_uuid()
    }

    fn between(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
        let (a, b) = (from.timestamp_millis(), to.timestamp_millis());
        let ms = if b > a { self.rng.random_range(a..b) } else { a };
        Utc.timestamp_millis_opt(ms).single().unwrap_or(from)
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller: rand 0.9 has no normal distribution without rand_distr.
        let u1: f64 = self.rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal activity: most customers are light, a few are very active.
    fn weight(&mut self) -> f64 {
        (1.4 * self.normal()).exp()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    fn identity(
        &mut self,
        customer: Uuid,
        at: DateTime<Utc>,
        kind: &str,
        source: &str,
        value: String,
    ) -> identity::ActiveModel {
        let created_at = self.between(at, (at + chrono::Duration::days(30)).min(self.now));
        identity::Model {
            id: self.v7(created_at),
            tenant: self.tenant.clone(),
            customer_id: customer,
            kind: kind.to_owned(),
            source: source.to_owned(),
            value,
            created_at,
        }
        .into_active_model()
        .reset_all()
    }

    fn consent(
        &mut self,
        customer: Uuid,
        purpose: ConsentPurpose,
        channel: &str,
        status: ConsentStatus,
        captured_at: DateTime<Utc>,
    ) -> consent_event::ActiveModel {
        let source = *["web", "store", "mobile_app", "email"].choose(&mut self.rng).unwrap_or(&"web");
        consent_event::Model {
            id: self.v7(captured_at),
            tenant: self.tenant.clone(),
            customer_id: customer,
            purpose: purpose.as_str().to_owned(),
            channel: channel.to_owned(),
            status: status.as_str().to_owned(),
            captured_at,
            recorded_at: captured_at + chrono::Duration::milliseconds(self.rng.random_range(5..2_000)),
            source: source.to_owned(),
            policy_version: Some(if captured_at.timestamp() % 2 == 0 { "2024-03" } else { "2025-01" }.to_owned()),
            legal_basis: Some("consent".to_owned()),
            expires_at: None,
            evidence: Some(json!({ "form": format!("{source}-consent"), "checkbox": purpose.as_str() })),
            recorded_by: "kontakt-seed".to_owned(),
        }
        .into_active_model()
        .reset_all()
    }

    /// One customer with identities and consent decisions, appended to `batch`.
    fn person(&mut self, index: u64, heavy: Option<u64>, batch: &mut PeopleBatch) -> Person {
        let created_at = match heavy {
            Some(_) => self.start,
            None => {
                let (start, now) = (self.start, self.now);
                self.between(start, now)
            }
        };
        let id = self.v7(created_at);
        let named = heavy.is_some() || self.chance(0.92);
        let given = GIVEN_NAMES.choose(&mut self.rng).copied().unwrap_or("Anne");
        let family = FAMILY_NAMES.choose(&mut self.rng).copied().unwrap_or("Nielsen");
        let mut last_change = created_at;

        let email = match heavy {
            Some(size) => Some(format!("heavy-{size}@bench.kontakt.test")),
            None if self.chance(0.9) => {
                let domain = pick(&mut self.rng, MAIL_DOMAINS);
                Some(if named {
                    format!("{}.{}{index}@{domain}", fold(given), fold(family))
                } else {
                    format!("user{index}@{domain}")
                })
            }
            None => None,
        };
        if let Some(email) = &email {
            let row = self.identity(id, created_at, "email", "", email.clone());
            batch.identities.push(row);
        }
        if self.chance(0.6) {
            // Danish mobile numbers, unique per index: +45 2x xx xx xx (10 million numbers).
            let number = 20_000_000 + (index * 7_919) % 10_000_000;
            let row = self.identity(id, created_at, "phone", "", format!("+45{number}"));
            batch.identities.push(row);
        }
        for _ in 0..pick(&mut self.rng, &[(0u8, 20), (1, 55), (2, 18), (3, 7)]) {
            let value = Uuid::from_bytes(self.rng.random()).to_string();
            let row = self.identity(id, created_at, "anonymous_id", "", value);
            batch.identities.push(row);
        }
        for _ in 0..pick(&mut self.rng, &[(0u8, 60), (1, 32), (2, 8)]) {
            let value = format!("dev-{:016x}", self.rng.random::<u64>());
            let row = self.identity(id, created_at, "device_id", "", value);
            batch.identities.push(row);
        }
        if self.chance(0.3) {
            let row = self.identity(id, created_at, "loyalty_id", "", format!("L{:09}", 100_000_000 + index));
            batch.identities.push(row);
        }
        if self.chance(0.25) {
            let row = self.identity(id, created_at, "external_id", "shopify", format!("gid-{}", 7_000_000 + index));
            batch.identities.push(row);
        }

        // Consent: personalization mostly granted, marketing by e-mail for about half, analytics often.
        let mut personalization = false;
        let roll: f64 = if heavy.is_some() { 0.0 } else { self.rng.random() };
        let first = self.between(created_at, (created_at + chrono::Duration::days(3)).min(self.now));
        if roll < 0.70 {
            batch.consents.push(self.consent(id, ConsentPurpose::Personalization, "", ConsentStatus::Granted, first));
            personalization = true;
        } else if roll < 0.85 {
            batch.consents.push(self.consent(id, ConsentPurpose::Personalization, "", ConsentStatus::Denied, first));
        } else if roll < 0.95 {
            batch.consents.push(self.consent(id, ConsentPurpose::Personalization, "", ConsentStatus::Granted, first));
            let now = self.now;
            let withdrawn = self.between(first, now);
            batch.consents.push(self.consent(
                id,
                ConsentPurpose::Personalization,
                "",
                ConsentStatus::Withdrawn,
                withdrawn,
            ));
            last_change = last_change.max(withdrawn);
        }
        let roll: f64 = self.rng.random();
        if roll < 0.5 {
            batch.consents.push(self.consent(id, ConsentPurpose::Marketing, "email", ConsentStatus::Granted, first));
        } else if roll < 0.7 {
            batch.consents.push(self.consent(id, ConsentPurpose::Marketing, "email", ConsentStatus::Denied, first));
        }
        if self.chance(0.6) {
            batch.consents.push(self.consent(id, ConsentPurpose::Analytics, "", ConsentStatus::Granted, first));
        }
        last_change = last_change.max(first);

        batch.customers.push(
            customer::Model {
                id,
                tenant: self.tenant.clone(),
                given_name: named.then(|| given.to_owned()),
                family_name: named.then(|| family.to_owned()),
                created_at,
                updated_at: last_change,
                merged_into: None,
                restricted: false,
                consent_version: 0,
            }
            .into_active_model()
            .reset_all(),
        );
        Person { id, created_at, email, personalization, heavy }
    }

    fn touchpoint(&mut self, customer: Uuid, from: DateTime<Utc>) -> touchpoint::Model {
        let now = self.now;
        let occurred_at = self.between(from, now);
        let id = self.v7(occurred_at);
        let received_at = (occurred_at + chrono::Duration::milliseconds(self.rng.random_range(50..90_000))).min(now);
        let kind = pick(&mut self.rng, KINDS);
        let channel = pick(&mut self.rng, channels_of(kind));
        let mut stage = JourneyStage::default_for(kind, channel);
        if kind == TouchpointType::PageView && self.chance(0.15) {
            stage = JourneyStage::Awareness;
        } else if kind == TouchpointType::ScreenView && self.chance(0.3) {
            stage = JourneyStage::Usage;
        } else if kind == TouchpointType::Purchase && self.chance(0.2) {
            stage = JourneyStage::Renewal;
        }
        let (mut value, mut currency, mut feedback) = (None, None, None);
        let properties = match kind {
            TouchpointType::PageView => Some(json!({
                "path": PAGES.choose(&mut self.rng).copied().unwrap_or("/"),
                "referrer": REFERRERS.choose(&mut self.rng).copied(),
            })),
            TouchpointType::ScreenView => {
                Some(json!({ "screen": SCREENS.choose(&mut self.rng).copied().unwrap_or("home") }))
            }
            TouchpointType::AdImpression
            | TouchpointType::AdClick
            | TouchpointType::EmailSent
            | TouchpointType::EmailOpen
            | TouchpointType::EmailClick => {
                Some(json!({ "campaign": CAMPAIGNS.choose(&mut self.rng).copied().unwrap_or("spring-sale") }))
            }
            TouchpointType::Purchase | TouchpointType::Return => {
                let amount = (5.9 + 0.8 * self.normal()).exp();
                let amount = if kind == TouchpointType::Return { amount * 0.6 } else { amount };
                value = Some((amount * 100.0).round() / 100.0);
                currency = Some(pick(&mut self.rng, &[("DKK", 90), ("EUR", 6), ("SEK", 4)]).to_owned());
                Some(json!({
                    "orderId": format!("O-{}", self.rng.random_range(1_000_000..9_999_999)),
                    "items": self.rng.random_range(1..6),
                }))
            }
            TouchpointType::Delivery => Some(json!({
                "orderId": format!("O-{}", self.rng.random_range(1_000_000..9_999_999)),
                "carrier": CARRIERS.choose(&mut self.rng).copied(),
            })),
            TouchpointType::SupportTicket | TouchpointType::SupportCall | TouchpointType::SupportChat => {
                Some(json!({ "topic": TOPICS.choose(&mut self.rng).copied().unwrap_or("delivery") }))
            }
            TouchpointType::Review => Some(json!({
                "rating": self.rng.random_range(1..=5),
                "sku": format!("SKU-{}", self.rng.random_range(10_000..99_999)),
            })),
            TouchpointType::SurveyResponse => {
                let metric = pick(
                    &mut self.rng,
                    &[(FeedbackMetric::Nps, 50), (FeedbackMetric::Csat, 30), (FeedbackMetric::Ces, 20)],
                );
                let score = match metric {
                    FeedbackMetric::Nps => pick(&mut self.rng, NPS),
                    FeedbackMetric::Csat => pick(&mut self.rng, CSAT),
                    FeedbackMetric::Ces => pick(&mut self.rng, CES),
                };
                let verbatim =
                    if self.chance(0.25) { VERBATIMS.choose(&mut self.rng).map(|v| (*v).to_owned()) } else { None };
                feedback = Some((metric, score, verbatim));
                Some(json!({ "survey": SURVEYS.choose(&mut self.rng).copied() }))
            }
            TouchpointType::StoreVisit => Some(json!({ "store": format!("S{:03}", self.rng.random_range(1..60)) })),
            TouchpointType::Custom => Some(json!({
                "name": CUSTOM_EVENTS.choose(&mut self.rng).copied(),
            })),
        };
        touchpoint::Model {
            id,
            tenant: self.tenant.clone(),
            customer_id: customer,
            channel: channel.as_str().to_owned(),
            kind: kind.as_str().to_owned(),
            stage: stage.as_str().to_owned(),
            occurred_at,
            received_at,
            source: source_of(channel).to_owned(),
            idempotency_key: format!("seed-{}", id.simple()),
            properties,
            value,
            currency,
            feedback_metric: feedback.as_ref().map(|(m, _, _)| m.as_str().to_owned()),
            feedback_score: feedback.as_ref().map(|(_, s, _)| *s),
            feedback_verbatim: feedback.and_then(|(_, _, v)| v),
            consent: None,
            identity_id: None,
            commit_position: 0,
            stage_explicit: Some(false),
        }
    }

    /// Runs on a blocking thread: generates every allotted touchpoint and hands them over in batches.
    fn touchpoints(
        &mut self,
        plan: &[Allotment],
        copy: bool,
        tx: &tokio::sync::mpsc::Sender<Batch>,
    ) -> anyhow::Result<()> {
        let mut rows = Vec::with_capacity(TOUCHPOINT_BATCH);
        let mut text = Vec::with_capacity(TOUCHPOINT_BATCH * 400);
        let mut in_text = 0u64;
        let mut line = String::with_capacity(512);
        for allotment in plan {
            for _ in 0..allotment.count {
                let row = self.touchpoint(allotment.customer, allotment.from);
                if copy {
                    copy_line(&row, &mut line);
                    text.extend_from_slice(line.as_bytes());
                    in_text += 1;
                    if in_text as usize >= TOUCHPOINT_BATCH {
                        let batch = Batch::Copy { text: std::mem::take(&mut text), rows: in_text };
                        tx.blocking_send(batch).map_err(|_| anyhow::anyhow!("the touchpoint writer stopped"))?;
                        text.reserve(TOUCHPOINT_BATCH * 400);
                        in_text = 0;
                    }
                } else {
                    rows.push(row);
                    if rows.len() >= TOUCHPOINT_BATCH {
                        let batch = Batch::Rows(std::mem::take(&mut rows));
                        tx.blocking_send(batch).map_err(|_| anyhow::anyhow!("the touchpoint writer stopped"))?;
                    }
                }
            }
        }
        let last = if copy { Batch::Copy { text, rows: in_text } } else { Batch::Rows(rows) };
        tx.blocking_send(last).map_err(|_| anyhow::anyhow!("the touchpoint writer stopped"))?;
        Ok(())
    }
}

/// One row in PostgreSQL's COPY text format (tab-separated, `\N` for NULL, backslash escapes).
fn copy_line(row: &touchpoint::Model, line: &mut String) {
    fn text(line: &mut String, value: &str) {
        for c in value.chars() {
            match c {
                '\\' => line.push_str("\\\\"),
                '\t' => line.push_str("\\t"),
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                c => line.push(c),
            }
        }
    }
    fn opt(line: &mut String, value: Option<&str>) {
        match value {
            Some(v) => text(line, v),
            None => line.push_str("\\N"),
        }
    }
    fn time(line: &mut String, at: DateTime<Utc>) {
        line.push_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
    line.clear();
    let _ = write!(line, "{}\t", row.id);
    text(line, &row.tenant);
    let _ = write!(line, "\t{}\t", row.customer_id);
    text(line, &row.channel);
    line.push('\t');
    text(line, &row.kind);
    line.push('\t');
    text(line, &row.stage);
    line.push('\t');
    time(line, row.occurred_at);
    line.push('\t');
    time(line, row.received_at);
    line.push('\t');
    text(line, &row.source);
    line.push('\t');
    text(line, &row.idempotency_key);
    line.push('\t');
    opt(line, row.properties.as_ref().map(|p| p.to_string()).as_deref());
    line.push('\t');
    opt(line, row.value.map(|v| v.to_string()).as_deref());
    line.push('\t');
    opt(line, row.currency.as_deref());
    line.push('\t');
    opt(line, row.feedback_metric.as_deref());
    line.push('\t');
    opt(line, row.feedback_score.map(|s| s.to_string()).as_deref());
    line.push('\t');
    opt(line, row.feedback_verbatim.as_deref());
    line.push('\t');
    opt(line, row.consent.as_ref().map(|c| c.to_string()).as_deref());
    line.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_is_exact_and_uneven() {
        let mut generator = Generator::new("t", 7);
        let people: Vec<Person> = (0..1000)
            .map(|i| Person {
                id: Uuid::now_v7(),
                created_at: generator.start,
                email: None,
                personalization: true,
                heavy: (i == 999).then_some(5000),
            })
            .collect();
        let weights: Vec<f64> = people.iter().map(|p| p.heavy.map_or_else(|| generator.weight(), |_| 0.0)).collect();
        let plan = allocate(&mut generator.rng, &people, &weights, 50_000);
        assert_eq!(plan.iter().map(|a| a.count).sum::<u64>(), 55_000);
        assert_eq!(plan[999].count, 5000);
        let max = plan[..999].iter().map(|a| a.count).max().unwrap_or(0);
        assert!(max > 500, "some ordinary customers are heavy: {max}");
    }

    #[test]
    fn copy_lines_escape_and_mark_nulls() {
        let mut generator = Generator::new("t", 1);
        let mut row = generator.touchpoint(Uuid::now_v7(), generator.start);
        row.feedback_verbatim = Some("tab\there\\".into());
        row.value = None;
        let mut line = String::new();
        copy_line(&row, &mut line);
        assert_eq!(line.matches('\t').count(), 16);
        assert!(line.contains("tab\\there\\\\"));
        assert!(line.contains("\\N"));
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn survey_scores_stay_in_range() {
        let mut generator = Generator::new("t", 3);
        for _ in 0..5000 {
            let row = generator.touchpoint(Uuid::now_v7(), generator.start);
            if let (Some(metric), Some(score)) = (row.feedback_metric.as_deref(), row.feedback_score) {
                let (lo, hi) = FeedbackMetric::parse(metric).map(|m| m.range()).unwrap_or((0, 0));
                assert!((lo..=hi).contains(&i32::from(score)), "{metric} {score}");
            }
            assert!(row.occurred_at <= generator.now && row.occurred_at >= generator.start);
        }
    }
}
