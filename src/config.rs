//! Configuration: one typed value built from flags and `KONTAKT_*` environment variables (flags win).
use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};

use crate::rate_limit::RateLimit;

/// Where the server runs: development is forgiving and talkative, production refuses unsafe defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Everything `kontakt serve`, `migrate` and `token` read. Every option also has an environment variable.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// `development` (default) or `production`.
    #[arg(long = "env", env = "KONTAKT_ENV", value_enum, default_value = "development", global = true)]
    pub env: Environment,

    /// Address the HTTP server listens on.
    #[arg(long, env = "KONTAKT_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// Database URL: `sqlite://kontakt.db?mode=rwc` (default, created on start) or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://kontakt.db?mode=rwc",
        hide_env_values = true,
        global = true
    )]
    pub database_url: ConnectionUrl,

    /// PostgreSQL schema to use instead of `public` (one database, several isolated installations).
    #[arg(long, env = "KONTAKT_DATABASE_SCHEMA", global = true)]
    pub database_schema: Option<String>,

    /// Largest number of pooled database connections.
    #[arg(long, env = "KONTAKT_DATABASE_MAX_CONNECTIONS", default_value_t = 32, global = true)]
    pub database_max_connections: u32,

    /// Run pending migrations when the server starts.
    #[arg(long, env = "KONTAKT_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub migrate_on_start: bool,

    /// Redis URL (`redis://…`). Without it cache and pub/sub are in-process.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, global = true)]
    pub redis_url: Option<ConnectionUrl>,

    /// Redis Cluster seed nodes instead of `REDIS_URL`, comma-separated (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`,
    /// a password in each URL): the cache and pub/sub (sharded, Redis 7) on the cluster; the other nodes are found
    /// from these.
    #[arg(long, env = "KONTAKT_REDIS_CLUSTER_URLS", hide_env_values = true, global = true)]
    pub redis_cluster_urls: Option<ConnectionUrl>,

    /// Prefix of every Redis key and channel this installation uses.
    #[arg(long, env = "KONTAKT_REDIS_PREFIX", default_value = "kontakt", global = true)]
    pub redis_prefix: String,

    /// Required `iss` of bearer tokens (development default: `kontakt-dev`).
    #[arg(long, env = "KONTAKT_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of bearer tokens (development default: `kontakt`).
    #[arg(long, env = "KONTAKT_JWT_AUDIENCE", global = true)]
    pub jwt_audience: Option<String>,

    /// HS256 shared secret for tokens. In development without it a key is made and kept beside the SQLite file.
    #[arg(long, env = "KONTAKT_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret<String>>,

    /// JWKS document of public keys (RS256/ES256/EdDSA), chosen by `kid`.
    #[arg(long, env = "KONTAKT_JWKS_FILE", global = true)]
    pub jwks_file: Option<PathBuf>,

    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[arg(long, env = "KONTAKT_JWT_LEEWAY_SECS", default_value_t = 5, global = true)]
    pub jwt_leeway_secs: u64,

    /// Where the development key is kept (default: beside the SQLite file, or `./kontakt.devkey`).
    #[arg(long, env = "KONTAKT_DEV_KEY_FILE", global = true)]
    pub dev_key_file: Option<PathBuf>,

    /// Default region for phone numbers written without a country code (ISO 3166 alpha-2, e.g. `DK`).
    #[arg(long, env = "KONTAKT_DEFAULT_PHONE_REGION", global = true)]
    pub default_phone_region: Option<String>,

    /// Deepest selection nesting a query may have.
    #[arg(long, env = "KONTAKT_MAX_DEPTH", default_value_t = 12, global = true)]
    pub max_depth: usize,

    /// Largest query complexity (a connection counts `first × child`).
    #[arg(long, env = "KONTAKT_MAX_COMPLEXITY", default_value_t = 5000, global = true)]
    pub max_complexity: usize,

    /// Seconds the profile cache keeps a customer's identities and latest touchpoints (Redis when configured,
    /// otherwise in process); 0 turns it off. Consents and restriction are never cached.
    #[arg(long, env = "KONTAKT_PROFILE_CACHE_TTL_SECS", default_value_t = 30, global = true)]
    pub profile_cache_ttl_secs: u64,

    /// Most aliases a query may use.
    #[arg(long, env = "KONTAKT_MAX_ALIASES", default_value_t = 30, global = true)]
    pub max_aliases: usize,

    /// Most directives on one field.
    #[arg(long, env = "KONTAKT_MAX_DIRECTIVES", default_value_t = 10, global = true)]
    pub max_directives: usize,

    /// Largest request body in bytes.
    #[arg(long, env = "KONTAKT_MAX_BODY_BYTES", default_value_t = 1024 * 1024, global = true)]
    pub max_body_bytes: usize,

    /// Longest a request may run, in milliseconds.
    #[arg(long, env = "KONTAKT_REQUEST_TIMEOUT_MS", default_value_t = 15_000, global = true)]
    pub request_timeout_ms: u64,

    /// How often the job runner looks for queued jobs (and for running ones a stopped instance left), in ms.
    #[arg(long, env = "KONTAKT_JOB_POLL_MS", default_value_t = 500, global = true)]
    pub job_poll_ms: u64,

    /// How often the CX sweeper marks breached feedback-case deadlines and recounts answers whose consent expired, in ms.
    #[arg(long, env = "KONTAKT_CX_SWEEP_MS", default_value_t = 5_000, global = true)]
    pub cx_sweep_ms: u64,

    /// Longest a Redis command may take before it counts as a failure (the cache answers a miss), in ms.
    #[arg(long, env = "KONTAKT_REDIS_TIMEOUT_MS", default_value_t = 250, global = true)]
    pub redis_timeout_ms: u64,

    /// After a Redis failure, calls fail at once (cache miss, publish skipped) for this long before one probes
    /// again; also how often a lost subscription subscribes again, in ms.
    #[arg(long, env = "KONTAKT_REDIS_PROBE_MS", default_value_t = 1_000, global = true)]
    pub redis_probe_ms: u64,

    /// How often a probe connects to PostgreSQL; while it finds the database refusing connections, requests answer
    /// `UNAVAILABLE` at once instead of each waiting for the pool (in ms).
    #[arg(long, env = "KONTAKT_DATABASE_PROBE_MS", default_value_t = 500, global = true)]
    pub database_probe_ms: u64,

    /// How often each tenant's score model (BG/NBD and Gamma-Gamma, for CLV and churn risk) is fitted again, in
    /// seconds, once the tenant has fitted it (`fitScoreModel`); 0: only on demand.
    #[arg(long, env = "KONTAKT_SCORE_REFIT_SECS", default_value_t = 86_400, global = true)]
    pub score_refit_secs: u64,

    /// How often the derived-state worker looks for customers queued by other instances and for window edges that
    /// passed, in ms (a write on this instance wakes it at once).
    #[arg(long, env = "KONTAKT_DERIVED_POLL_MS", default_value_t = 200, global = true)]
    pub derived_poll_ms: u64,

    /// How long derived-change events stay in the outbox (for replay and for webhooks behind), in days.
    #[arg(long, env = "KONTAKT_DERIVED_EVENTS_RETENTION_DAYS", default_value_t = 7, global = true)]
    pub derived_events_retention_days: u32,

    /// The first wait before a failed webhook delivery is tried again, in ms (doubled per failed attempt, at most
    /// 10 minutes).
    #[arg(long, env = "KONTAKT_WEBHOOK_RETRY_MS", default_value_t = 1_000, global = true)]
    pub webhook_retry_ms: u64,

    /// Let webhooks call loopback, private and link-local addresses and plain http. Default: on in development,
    /// off in production (a webhook URL must not reach the inside of the network).
    #[arg(long, env = "KONTAKT_WEBHOOK_ALLOW_INTERNAL", global = true)]
    pub webhook_allow_internal: Option<bool>,

    /// Most operations in one batched request; 0 turns batching off.
    #[arg(long, env = "KONTAKT_MAX_BATCH", default_value_t = 0, global = true)]
    pub max_batch: usize,

    /// Secret for the keyed hashes that keep erased identities suppressed. Development makes one beside the
    /// SQLite file; production requires it (and it must never change, or suppressed people come back).
    #[arg(long, env = "KONTAKT_SUPPRESSION_KEY", hide_env_values = true, global = true)]
    pub suppression_key: Option<Secret<String>>,

    /// Write keys of the tracking API (`/v1/*`): `KEY=TENANT/SOURCE`, comma-separated.
    #[arg(long, env = "KONTAKT_WRITE_KEYS", hide_env_values = true, global = true)]
    pub write_keys: Option<Secret<String>>,

    /// Browser origins allowed to call the API (CORS), comma-separated, e.g. `https://shop.example`. `*` allows
    /// any origin (development only). Default: none.
    #[arg(long, env = "KONTAKT_CORS_ORIGINS", global = true)]
    pub cors_origins: Option<String>,

    /// Serve introspection (default: on in development, off in production).
    #[arg(long, env = "KONTAKT_INTROSPECTION", action = clap::ArgAction::Set, global = true)]
    pub introspection: Option<bool>,

    /// Serve GraphiQL (from the binary, no CDN) at `/graphiql` and to browsers at `/graphql` (default: on in
    /// development, off in production).
    #[arg(long, env = "KONTAKT_GRAPHIQL", action = clap::ArgAction::Set, global = true)]
    pub graphiql: Option<bool>,

    /// Bearer token `/metrics` requires (`Authorization: Bearer <token>`); without it `/metrics` is open. Production
    /// needs this or `KONTAKT_METRICS_LISTEN`.
    #[arg(long, env = "KONTAKT_METRICS_TOKEN", hide_env_values = true, global = true)]
    pub metrics_token: Option<Secret<String>>,

    /// A separate address that serves only `/metrics` (e.g. on an internal interface); the main listener then does
    /// not serve it. The token, when set, is required there too.
    #[arg(long, env = "KONTAKT_METRICS_LISTEN", global = true)]
    pub metrics_listen: Option<SocketAddr>,

    /// GraphQL operations a subject (tenant + token `sub`) may run per second, on HTTP and WebSocket alike; 0 turns
    /// the limit off. Default: 50 in production, off in development. Per instance.
    #[arg(long, env = "KONTAKT_RATE_LIMIT_PER_SECOND", global = true)]
    pub rate_limit_per_second: Option<u32>,

    /// Operations a subject may run at once above its rate (default: twice the rate, so 100 in production).
    #[arg(long, env = "KONTAKT_RATE_LIMIT_BURST", global = true)]
    pub rate_limit_burst: Option<u32>,

    /// Tracking events (each event of a `/v1/batch` counts) a write key may send per second; 0 turns the limit
    /// off. Default: 5000 in production, off in development. Per instance.
    #[arg(long, env = "KONTAKT_TRACKING_RATE_LIMIT_PER_SECOND", global = true)]
    pub tracking_rate_limit_per_second: Option<u32>,

    /// Events a write key may send at once above its rate (default: twice the rate, so 10000 in production).
    #[arg(long, env = "KONTAKT_TRACKING_RATE_LIMIT_BURST", global = true)]
    pub tracking_rate_limit_burst: Option<u32>,

    /// `json` or `pretty` logs (default: pretty in development, json in production).
    #[arg(long, env = "KONTAKT_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
}

pub const DEV_ISSUER: &str = "kontakt-dev";
pub const DEV_AUDIENCE: &str = "kontakt";

impl Config {
    /// Defaults only, ignoring flags and environment: what tests start from.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        // Parsing no arguments cannot fail: every option has a default or is optional.
        let matches =
            <Only as clap::CommandFactory>::command().mut_args(|a| a.env(None::<&str>)).get_matches_from(["kontakt"]);
        <Only as clap::FromArgMatches>::from_arg_matches(&matches)
            .map(|o| o.config)
            .unwrap_or_else(|e| panic!("built-in defaults do not parse: {e}"))
    }

    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    pub fn introspection_enabled(&self) -> bool {
        self.introspection.unwrap_or(!self.is_production())
    }

    pub fn graphiql_enabled(&self) -> bool {
        self.graphiql.unwrap_or(!self.is_production())
    }

    pub fn log_format(&self) -> LogFormat {
        self.log_format.unwrap_or(if self.is_production() { LogFormat::Json } else { LogFormat::Pretty })
    }

    pub fn issuer(&self) -> Option<&str> {
        self.jwt_issuer.as_deref().or((!self.is_production()).then_some(DEV_ISSUER))
    }

    pub fn audience(&self) -> Option<&str> {
        self.jwt_audience.as_deref().or((!self.is_production()).then_some(DEV_AUDIENCE))
    }

    /// The GraphQL limit per tenant and subject, when on.
    pub fn graphql_rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit(self.rate_limit_per_second, self.rate_limit_burst, 50)
    }

    /// The tracking API's limit per write key (in events), when on.
    pub fn tracking_rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit(self.tracking_rate_limit_per_second, self.tracking_rate_limit_burst, 5_000)
    }

    /// On when the rate is set (and not 0), or in production by default; the burst defaults to twice the rate.
    fn rate_limit(&self, per_second: Option<u32>, burst: Option<u32>, production_default: u32) -> Option<RateLimit> {
        let per_second = match per_second {
            Some(rate) => rate,
            None if self.is_production() => production_default,
            None => return None,
        };
        let per_second = NonZeroU32::new(per_second)?;
        let twice = NonZeroU32::new(per_second.get().saturating_mul(2)).unwrap_or(per_second);
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(twice);
        Some(RateLimit { per_second, burst })
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn job_poll(&self) -> Duration {
        Duration::from_millis(self.job_poll_ms.max(10))
    }

    pub fn cx_sweep(&self) -> Duration {
        Duration::from_millis(self.cx_sweep_ms.max(10))
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.max(1))
    }

    /// The Redis Cluster seed node URLs (`KONTAKT_REDIS_CLUSTER_URLS`), empty without a cluster.
    pub fn redis_cluster_nodes(&self) -> Vec<String> {
        self.redis_cluster_urls
            .as_ref()
            .map(|urls| urls.expose().split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    pub fn redis_probe(&self) -> Duration {
        Duration::from_millis(self.redis_probe_ms.max(10))
    }

    pub fn database_probe(&self) -> Duration {
        Duration::from_millis(self.database_probe_ms.max(50))
    }

    pub fn score_refit(&self) -> Option<Duration> {
        (self.score_refit_secs > 0).then(|| Duration::from_secs(self.score_refit_secs))
    }

    pub fn derived_poll(&self) -> Duration {
        Duration::from_millis(self.derived_poll_ms.max(10))
    }

    pub fn derived_events_retention(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.derived_events_retention_days.max(1)))
    }

    pub fn webhook_retry(&self) -> Duration {
        Duration::from_millis(self.webhook_retry_ms.max(10))
    }

    pub fn webhook_allow_internal(&self) -> bool {
        self.webhook_allow_internal.unwrap_or(!self.is_production())
    }

    pub fn is_sqlite(&self) -> bool {
        self.database_url.expose().starts_with("sqlite:")
    }

    /// The SQLite file path from the URL, when the database is a SQLite file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.database_url.expose().strip_prefix("sqlite:")?;
        let rest = rest.trim_start_matches("//");
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    /// Where the development signing key lives: beside the SQLite file unless configured.
    pub fn dev_key_path(&self) -> PathBuf {
        if let Some(path) = &self.dev_key_file {
            return path.clone();
        }
        match self.sqlite_path() {
            Some(db) => {
                let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                name.push(".devkey");
                db.with_file_name(name)
            }
            None => PathBuf::from("kontakt.devkey"),
        }
    }

    /// The tracking API's write keys: key → (tenant, source).
    pub fn parsed_write_keys(&self) -> anyhow::Result<std::collections::HashMap<String, (String, String)>> {
        let mut keys = std::collections::HashMap::new();
        for entry in self
            .write_keys
            .as_ref()
            .map(|k| k.expose().as_str())
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let parsed = entry
                .split_once('=')
                .and_then(|(key, target)| {
                    target.split_once('/').map(|(tenant, source)| (key.trim(), tenant.trim(), source.trim()))
                })
                .filter(|(key, tenant, source)| !key.is_empty() && !tenant.is_empty() && !source.is_empty());
            let Some((key, tenant, source)) = parsed else {
                anyhow::bail!("KONTAKT_WRITE_KEYS entries look like KEY=TENANT/SOURCE");
            };
            if self.is_production() && key.len() < 16 {
                anyhow::bail!("write keys must be at least 16 characters in production");
            }
            keys.insert(key.to_owned(), (tenant.to_owned(), source.to_owned()));
        }
        Ok(keys)
    }

    /// Refuse to start with settings that are only safe on a developer's machine.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.is_production() {
            if self.jwt_issuer.is_none() || self.jwt_audience.is_none() {
                anyhow::bail!("production needs KONTAKT_JWT_ISSUER and KONTAKT_JWT_AUDIENCE");
            }
            if self.jwt_secret.is_none() && self.jwks_file.is_none() {
                anyhow::bail!("production needs KONTAKT_JWKS_FILE (public keys) or KONTAKT_JWT_SECRET");
            }
            if self.suppression_key.as_ref().is_none_or(|k| k.expose().len() < 32) {
                anyhow::bail!("production needs KONTAKT_SUPPRESSION_KEY (at least 32 bytes, never changed)");
            }
            if let Some(secret) = &self.jwt_secret
                && secret.expose().len() < 32
            {
                anyhow::bail!("KONTAKT_JWT_SECRET must be at least 32 bytes in production");
            }
            if self.metrics_token.is_none() && self.metrics_listen.is_none() {
                anyhow::bail!(
                    "production needs KONTAKT_METRICS_TOKEN (a bearer token for /metrics) or KONTAKT_METRICS_LISTEN \
                     (a separate, internal address for /metrics)"
                );
            }
            if let Some(token) = &self.metrics_token
                && token.expose().len() < 16
            {
                anyhow::bail!("KONTAKT_METRICS_TOKEN must be at least 16 characters in production");
            }
        }
        self.parsed_write_keys()?;
        if self.metrics_token.as_ref().is_some_and(|t| t.expose().trim().is_empty()) {
            anyhow::bail!("KONTAKT_METRICS_TOKEN must not be empty");
        }
        if self.metrics_listen.is_some_and(|m| m == self.listen && m.port() != 0) {
            anyhow::bail!("KONTAKT_METRICS_LISTEN must differ from KONTAKT_LISTEN");
        }
        if self.is_production() && self.cors_origins.as_deref().is_some_and(|o| o.split(',').any(|o| o.trim() == "*")) {
            anyhow::bail!("KONTAKT_CORS_ORIGINS=* is for development; list the origins in production");
        }
        for (name, burst) in [
            ("KONTAKT_RATE_LIMIT_BURST", self.rate_limit_burst),
            ("KONTAKT_TRACKING_RATE_LIMIT_BURST", self.tracking_rate_limit_burst),
        ] {
            if burst == Some(0) {
                anyhow::bail!("{name} must be at least 1 (turn the limit off with its _PER_SECOND set to 0)");
            }
        }
        if self.jwt_leeway_secs > 300 {
            anyhow::bail!("KONTAKT_JWT_LEEWAY_SECS must be at most 300");
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            anyhow::bail!("KONTAKT_REDIS_PREFIX must be a non-empty word");
        }
        // Braces would make the prefix the Redis Cluster hash tag of every key: all of them on one slot.
        if self.redis_prefix.contains(['{', '}']) {
            anyhow::bail!("KONTAKT_REDIS_PREFIX must not contain `{{` or `}}` (they mark Redis Cluster hash tags)");
        }
        if self.redis_cluster_urls.is_some() {
            if self.redis_url.is_some() {
                anyhow::bail!(
                    "set REDIS_URL (one Redis server) or KONTAKT_REDIS_CLUSTER_URLS (a Redis Cluster), not both"
                );
            }
            let nodes = self.redis_cluster_nodes();
            if nodes.is_empty() || nodes.iter().any(|n| !n.starts_with("redis://") && !n.starts_with("rediss://")) {
                anyhow::bail!(
                    "KONTAKT_REDIS_CLUSTER_URLS is a comma-separated list of redis:// or rediss:// URLs of cluster nodes"
                );
            }
        }
        if let Some(schema) = &self.database_schema
            && !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            anyhow::bail!("KONTAKT_DATABASE_SCHEMA may hold only letters, digits and `_`");
        }
        Ok(())
    }
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`; [`Secret::expose`] is the one way to
/// the value, so every use of it is visible in the code.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret itself, for the places that need it (signing keys, HMAC keys, comparisons).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

/// A database or Redis URL: `Debug` and `Display` show it with its password (in the userinfo or a `password=`
/// parameter) replaced by `[redacted]`; [`ConnectionUrl::expose`] gives the URL to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl(String);

impl ConnectionUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `[redacted]`, fit for logs and error messages. A comma-separated list
    /// of URLs (`KONTAKT_REDIS_CLUSTER_URLS`) has each one redacted; a comma inside a URL (a PostgreSQL host list, a
    /// password) stays part of it.
    pub fn redacted(&self) -> String {
        let mut urls: Vec<String> = Vec::new();
        for part in self.0.split(',') {
            match urls.last_mut() {
                Some(url) if !part.trim_start().contains("://") => {
                    url.push(',');
                    url.push_str(part);
                }
                _ => urls.push(part.to_owned()),
            }
        }
        urls.iter().map(|url| redact_url(url)).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl From<String> for ConnectionUrl {
    fn from(value: String) -> Self {
        ConnectionUrl(value)
    }
}

impl From<&str> for ConnectionUrl {
    fn from(value: &str) -> Self {
        ConnectionUrl(value.to_owned())
    }
}

/// Replaces the password of a URL (`scheme://user:password@host`, and `password=`/`sslpassword=` parameters) with
/// `[redacted]`; the rest (scheme, user, host, database, other parameters) stays readable.
pub fn redact_url(url: &str) -> String {
    const REDACTED: &str = "[redacted]";
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:{REDACTED}{}", &base[..scheme + 3], &base[at..]),
                // `redis://secret@host`: a lone userinfo is the password.
                None if base.starts_with("redis") => format!("{}{REDACTED}{}", &base[..scheme + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => format!("{name}={REDACTED}"),
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_secret() {
        let mut config = Config::defaults();
        config.jwt_secret = Some("jwt-secret-0123456789abcdef0123456789".into());
        config.suppression_key = Some("suppression-key-0123456789abcdef01234".into());
        config.write_keys = Some("write-key-0123456789=acme/web".into());
        config.metrics_token = Some("metrics-token-0123456789".into());
        config.database_url =
            "postgres://kontakt:db-pass-0123456789@db.internal:5432/kontakt?sslpassword=ssl-pass-42".into();
        config.redis_url = Some("redis://default:redis-pass-0123456789@cache.internal:6379/0".into());
        config.redis_cluster_urls =
            Some("redis://:cluster-pass-1@node-1.internal:6379, rediss://u:cluster-pass-2@node-2.internal:6380".into());
        let printed = format!("{config:?}");
        for secret in [
            "jwt-secret-0123456789",
            "suppression-key-0123456789",
            "write-key-0123456789",
            "metrics-token-0123456789",
            "db-pass-0123456789",
            "ssl-pass-42",
            "redis-pass-0123456789",
            "cluster-pass-1",
            "cluster-pass-2",
        ] {
            assert!(!printed.contains(secret), "`{secret}` is in the Debug output: {printed}");
        }
        // What is not secret stays readable.
        assert!(
            printed.contains("postgres://kontakt:[redacted]@db.internal:5432/kontakt?sslpassword=[redacted]"),
            "{printed}"
        );
        assert!(printed.contains("redis://default:[redacted]@cache.internal:6379/0"), "{printed}");
        assert!(
            printed.contains("redis://:[redacted]@node-1.internal:6379, rediss://u:[redacted]@node-2.internal:6380"),
            "{printed}"
        );
        // A comma inside one URL keeps it one URL.
        let hosts = ConnectionUrl::from("postgres://kontakt:p,w@db-1.internal,db-2.internal/kontakt");
        assert_eq!(hosts.redacted(), "postgres://kontakt:[redacted]@db-1.internal,db-2.internal/kontakt");
        assert_eq!(config.jwt_secret.as_ref().map(|s| s.to_string()).as_deref(), Some("[redacted]"));
        assert_eq!(
            config.jwt_secret.as_ref().map(|s| s.expose().as_str()),
            Some("jwt-secret-0123456789abcdef0123456789")
        );
    }

    #[test]
    fn urls_keep_everything_but_the_password() {
        assert_eq!(redact_url("sqlite://kontakt.db?mode=rwc"), "sqlite://kontakt.db?mode=rwc");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact_url("postgres://u:p@w@h/db"), "postgres://u:[redacted]@h/db");
        assert_eq!(redact_url("redis://only-password@h:6379"), "redis://[redacted]@h:6379");
        assert_eq!(redact_url("postgres://h/db?user=u&password=p"), "postgres://h/db?user=u&password=[redacted]");
    }

    #[test]
    fn a_redis_cluster_is_a_list_of_node_urls_and_excludes_one_server() {
        let mut config = Config::defaults();
        config.redis_cluster_urls = Some(" redis://127.0.0.1:7000 ,redis://127.0.0.1:7001,".into());
        config.check().expect("a cluster alone is fine");
        assert_eq!(config.redis_cluster_nodes(), ["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
        config.redis_url = Some("redis://127.0.0.1:6379".into());
        assert!(config.check().is_err(), "one server and a cluster at once");
        config.redis_url = None;
        for wrong in ["", " , ", "127.0.0.1:7000", "redis://127.0.0.1:7000,http://127.0.0.1:7001"] {
            config.redis_cluster_urls = Some(wrong.into());
            assert!(config.check().is_err(), "`{wrong}` is accepted");
        }
        config.redis_cluster_urls = None;
        config.redis_prefix = "kontakt{eu}".into();
        assert!(config.check().is_err(), "a prefix with a hash tag puts every key on one slot");
        assert!(Config::defaults().redis_cluster_nodes().is_empty());
    }

    #[test]
    fn production_needs_a_way_to_protect_metrics() {
        let mut config = Config::defaults();
        config.env = Environment::Production;
        config.jwt_issuer = Some("iss".into());
        config.jwt_audience = Some("aud".into());
        config.jwt_secret = Some("j".repeat(40).into());
        config.suppression_key = Some("s".repeat(40).into());
        let refused = config.check().expect_err("no metrics protection").to_string();
        assert!(refused.contains("KONTAKT_METRICS_TOKEN"), "{refused}");
        config.metrics_token = Some("short".into());
        assert!(config.check().is_err(), "a short token is refused in production");
        config.metrics_token = Some("m".repeat(32).into());
        config.check().expect("a token is enough");
        config.metrics_token = None;
        config.metrics_listen = Some("127.0.0.1:9100".parse().expect("address"));
        config.check().expect("a separate listener is enough");
    }

    #[test]
    fn rate_limits_are_on_in_production_and_off_in_development_unless_set() {
        let limit = |per_second: u32, burst: u32| {
            Some(RateLimit {
                per_second: NonZeroU32::new(per_second).expect("rate"),
                burst: NonZeroU32::new(burst).expect("burst"),
            })
        };
        let mut config = Config::defaults();
        assert_eq!(config.graphql_rate_limit(), None);
        assert_eq!(config.tracking_rate_limit(), None);
        config.rate_limit_per_second = Some(7);
        assert_eq!(config.graphql_rate_limit(), limit(7, 14));
        config.rate_limit_burst = Some(3);
        assert_eq!(config.graphql_rate_limit(), limit(7, 3));

        let mut config = Config::defaults();
        config.env = Environment::Production;
        assert_eq!(config.graphql_rate_limit(), limit(50, 100));
        assert_eq!(config.tracking_rate_limit(), limit(5_000, 10_000));
        config.rate_limit_per_second = Some(0);
        config.tracking_rate_limit_per_second = Some(0);
        assert_eq!(config.graphql_rate_limit(), None);
        assert_eq!(config.tracking_rate_limit(), None);

        let mut config = Config::defaults();
        config.tracking_rate_limit_burst = Some(0);
        assert!(config.check().is_err(), "a burst of 0 is refused");
    }
}
