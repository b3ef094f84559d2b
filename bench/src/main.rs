//! `kontakt-bench`: drives a running Kontakt server over HTTP and reports throughput and latency per scenario;
//! `kontakt-bench seed` writes the dataset it reads (see `seed.rs`).
//!
//! It reads the manifest `kontakt-bench seed` wrote (who exists, who is heavy), runs each scenario with N concurrent
//! clients for a fixed time after a warm-up, and prints requests/s and p50/p90/p99/max latency.
mod derived;
mod report;
mod scenarios;
mod seed;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Parser;
use hdrhistogram::Histogram;
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    report::Report,
    scenarios::{ClientState, Outcome, Prepared},
};

#[derive(Parser, Debug)]
#[command(
    name = "kontakt-bench",
    version,
    about = "Load generator for a running Kontakt server; `kontakt-bench seed` writes the benchmark dataset",
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Base URL of the server (only loopback addresses are accepted).
    #[arg(long, env = "KONTAKT_BENCH_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token: `kontakt token --tenant bench --scopes profiles:read,touchpoints:read,touchpoints:write,pii:read`.
    #[arg(long, env = "KONTAKT_BENCH_TOKEN", hide_env_values = true, required = true)]
    pub token: Option<String>,
    /// The manifest `kontakt-bench seed` wrote.
    #[arg(long, default_value = "bench-manifest.json")]
    pub manifest: PathBuf,
    /// Scenarios to run (repeatable): profile, profile-id, timeline-1k, timeline-100k, timeline-1m, timeline-deep, feed,
    /// ingest-graphql, ingest-segment, or `all`.
    #[arg(long = "scenario", value_delimiter = ',', default_value = "all")]
    pub scenarios: Vec<String>,
    /// Concurrent clients per scenario.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds per scenario (not measured).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Touchpoints per ingestion request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Segment write key (HTTP Basic user name) for `ingest-segment`.
    #[arg(long, env = "KONTAKT_BENCH_WRITE_KEY", default_value = "bench-key")]
    pub write_key: String,
    /// Most requests one client sends in one phase: a bound on top of the time limit.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests_per_client: u64,
    /// Seed for the clients' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Fill a tenant with a realistic benchmark dataset and write the manifest the load generator reads. The
    /// database is the server's: `DATABASE_URL`, `KONTAKT_DATABASE_SCHEMA` and the other `KONTAKT_*` settings.
    Seed {
        #[command(flatten)]
        args: seed::SeedArgs,
        #[command(flatten)]
        config: Box<kontakt::config::Config>,
    },
}

/// The part of the seed manifest the benchmark needs.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub tenant: String,
    pub history_from: DateTime<Utc>,
    pub history_to: DateTime<Utc>,
    #[serde(default)]
    pub counts: serde_json::Value,
    pub sample_customers: Vec<Uuid>,
    #[serde(default)]
    pub sample_emails: Vec<String>,
    #[serde(default)]
    pub heavy: BTreeMap<String, Uuid>,
}

impl Manifest {
    /// Heavy customers by size, smallest first.
    pub fn heavy_by_size(&self) -> Vec<(u64, Uuid)> {
        let mut heavy: Vec<(u64, Uuid)> =
            self.heavy.iter().filter_map(|(size, id)| size.parse().ok().map(|s| (s, *id))).collect();
        heavy.sort();
        heavy
    }
}

/// What every client shares.
pub struct Shared {
    pub client: reqwest::Client,
    pub base: String,
    pub graphql: String,
    pub token: String,
    pub write_key: String,
    pub batch: usize,
    pub manifest: Manifest,
    /// Distinguishes this run's idempotency keys and identities from earlier runs.
    pub run_id: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Seed { args, config }) = args.command {
        kontakt::telemetry::init_logging(config.log_format());
        let db = kontakt::storage::Database::connect(&config).await?;
        return seed::run(&db, args).await.map(|_| ());
    }
    let base = loopback_base(&args.url)?;
    if args.concurrency == 0 || args.concurrency > 1024 {
        anyhow::bail!("--concurrency must be 1–1024");
    }
    if args.batch == 0 || args.batch > 5000 {
        anyhow::bail!("--batch must be 1–5000 (the server's limit)");
    }
    let text = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("reading the manifest {}", args.manifest.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).context("parsing the manifest")?;
    if manifest.sample_customers.is_empty() {
        anyhow::bail!("the manifest lists no sample customers");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?;
    let shared = Arc::new(Shared {
        client,
        graphql: format!("{base}/graphql"),
        base: base.clone(),
        token: args.token.clone().unwrap_or_default(),
        write_key: args.write_key.clone(),
        batch: args.batch,
        run_id: Uuid::new_v4().simple().to_string()[..12].to_owned(),
        manifest,
    });
    let health = shared.client.get(format!("{base}/healthz")).send().await;
    match health {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => anyhow::bail!("{base}/healthz answered {}", r.status()),
        Err(err) => anyhow::bail!("the server at {base} does not answer: {err}"),
    }

    let names = scenarios::expand(&args.scenarios, &shared.manifest)?;
    eprintln!(
        "kontakt-bench: {} scenario(s) against {base}, tenant `{}`, {} clients, {} s each after {} s warm-up",
        names.len(),
        shared.manifest.tenant,
        args.concurrency,
        args.duration,
        args.warmup
    );
    let mut reports = Vec::new();
    for name in names {
        eprint!("  {name}: preparing… ");
        let prepared = match scenarios::prepare(&shared, &name).await {
            Ok(p) => Arc::new(p),
            Err(err) => {
                eprintln!("failed: {err:#}");
                reports.push(Report::failed(&name, format!("{err:#}")));
                continue;
            }
        };
        eprint!("warm-up… ");
        let _ = phase(&shared, &prepared, &args, Duration::from_secs(args.warmup), 1_000).await;
        eprint!("measuring… ");
        let result = phase(&shared, &prepared, &args, Duration::from_secs(args.duration), 0).await;
        let report = Report::from_phase(&name, &prepared, result);
        eprintln!("{:.0} req/s, {} errors", report.requests_per_sec, report.errors);
        reports.push(report);
    }
    println!("{}", report::table(&reports));
    if let Some(path) = &args.json {
        let doc = report::json(&args, &shared.manifest, &reports);
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

/// Refuses anything but a loopback address: this tool generates load and must not point at other machines.
fn loopback_base(url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url}"))?;
    let host = parsed.host_str().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        anyhow::bail!("--url must point at 127.0.0.1 (got host `{host}`)");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// What one phase measured, all clients together.
pub struct PhaseResult {
    pub wall: Duration,
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub errors: u64,
    pub items: u64,
    pub item_errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
}

/// Runs every client until the deadline (or its request bound), then merges what they measured.
async fn phase(
    shared: &Arc<Shared>,
    prepared: &Arc<Prepared>,
    args: &Args,
    length: Duration,
    salt: u64,
) -> PhaseResult {
    let started = Instant::now();
    let deadline = started + length;
    let clients = prepared.max_clients().unwrap_or(args.concurrency);
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let shared = shared.clone();
        let prepared = prepared.clone();
        let max_requests = args.max_requests_per_client;
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(salt * 10_000 + client as u64);
        tasks.push(tokio::spawn(async move {
            let mut state = ClientState::new(seed, client);
            let mut result = PhaseResult::empty();
            while Instant::now() < deadline && result.requests < max_requests {
                let sent = Instant::now();
                let outcome = scenarios::request(&shared, &prepared, &mut state).await;
                let micros = sent.elapsed().as_micros().min(u64::MAX as u128) as u64;
                result.requests += 1;
                match outcome {
                    Outcome::Ok { items, item_errors } => {
                        result.latency.saturating_record(micros.max(1));
                        result.items += items;
                        result.item_errors += item_errors;
                    }
                    Outcome::Error(kind) => {
                        result.errors += 1;
                        *result.errors_by_kind.entry(kind).or_default() += 1;
                    }
                }
            }
            result
        }));
    }
    let mut total = PhaseResult::empty();
    for task in tasks {
        match task.await {
            Ok(result) => total.merge(result),
            Err(err) => {
                total.errors += 1;
                *total.errors_by_kind.entry(format!("client task failed: {err}")).or_default() += 1;
            }
        }
    }
    total.wall = started.elapsed();
    total
}

impl PhaseResult {
    fn empty() -> Self {
        PhaseResult {
            wall: Duration::ZERO,
            // 1 µs to 10 min at 3 significant digits: bounds that cannot fail.
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid"),
            requests: 0,
            errors: 0,
            items: 0,
            item_errors: 0,
            errors_by_kind: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: PhaseResult) {
        let _ = self.latency.add(&other.latency);
        self.requests += other.requests;
        self.errors += other.errors;
        self.items += other.items;
        self.item_errors += other.item_errors;
        for (kind, n) in other.errors_by_kind {
            *self.errors_by_kind.entry(kind).or_default() += n;
        }
    }
}
