//! Results: one report per scenario, printed as a table and optionally written as JSON.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::{Args, Manifest, PhaseResult, scenarios::Prepared};

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    /// What `items` counts: profiles, edges or touchpoints.
    pub items_label: String,
    pub items: u64,
    pub items_per_sec: f64,
    /// Items the server answered but rejected (ingestion), not counted in `errors`.
    pub item_errors: u64,
    /// Latency of successful requests, in milliseconds.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub errors_by_kind: BTreeMap<String, u64>,
    pub note: Option<String>,
}

impl Report {
    pub fn from_phase(name: &str, prepared: &Prepared, r: PhaseResult) -> Self {
        let seconds = r.wall.as_secs_f64().max(1e-9);
        let ms = |micros: u64| (micros as f64 / 1000.0 * 100.0).round() / 100.0;
        let measured = !r.latency.is_empty();
        Report {
            scenario: name.to_owned(),
            requests: r.requests,
            errors: r.errors,
            seconds: (seconds * 100.0).round() / 100.0,
            requests_per_sec: r.requests as f64 / seconds,
            items_label: prepared.items_label().to_owned(),
            items: r.items,
            items_per_sec: r.items as f64 / seconds,
            item_errors: r.item_errors,
            p50_ms: measured.then(|| ms(r.latency.value_at_quantile(0.50))),
            p90_ms: measured.then(|| ms(r.latency.value_at_quantile(0.90))),
            p99_ms: measured.then(|| ms(r.latency.value_at_quantile(0.99))),
            max_ms: measured.then(|| ms(r.latency.max())),
            mean_ms: measured.then(|| (r.latency.mean() / 10.0).round() / 100.0),
            errors_by_kind: r.errors_by_kind,
            note: prepared.note(),
        }
    }

    /// A scenario that could not even be prepared.
    pub fn failed(name: &str, why: String) -> Self {
        Report {
            scenario: name.to_owned(),
            requests: 0,
            errors: 1,
            seconds: 0.0,
            requests_per_sec: 0.0,
            items_label: String::new(),
            items: 0,
            items_per_sec: 0.0,
            item_errors: 0,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
            max_ms: None,
            mean_ms: None,
            errors_by_kind: BTreeMap::from([(format!("prepare: {why}"), 1)]),
            note: None,
        }
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// A plain-text table (also valid Markdown), then notes and error breakdowns.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::from(
        "| scenario | requests | req/s | items/s | p50 ms | p90 ms | p99 ms | max ms | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let items =
            if r.items_label.is_empty() { "-".to_owned() } else { format!("{:.0} {}", r.items_per_sec, r.items_label) };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario,
            r.requests,
            r.requests_per_sec,
            items,
            cell(r.p50_ms),
            cell(r.p90_ms),
            cell(r.p99_ms),
            cell(r.max_ms),
            r.errors
        ));
    }
    for r in reports {
        if let Some(note) = &r.note {
            out.push_str(&format!("\n{}: {note}", r.scenario));
        }
        if r.item_errors > 0 {
            out.push_str(&format!("\n{}: {} items rejected by the server", r.scenario, r.item_errors));
        }
        for (kind, n) in &r.errors_by_kind {
            out.push_str(&format!("\n{}: {n} × {kind}", r.scenario));
        }
    }
    out
}

pub fn json(args: &Args, manifest: &Manifest, reports: &[Report]) -> Value {
    json!({
        "generated_at": chrono::Utc::now(),
        "url": args.url,
        "tenant": manifest.tenant,
        "dataset": manifest.counts,
        "concurrency": args.concurrency,
        "duration_secs": args.duration,
        "warmup_secs": args.warmup,
        "batch": args.batch,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "results": reports,
    })
}
