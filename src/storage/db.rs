//! Database connection (PostgreSQL or SQLite), migrations and statement accounting.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait,
};

use crate::config::Config;

/// The database and a count of the statements it ran (read by `/metrics` and by tests that prove no N+1).
#[derive(Clone)]
pub struct Database {
    conn: DatabaseConnection,
    statements: Arc<AtomicU64>,
    /// Set while the probe (`watch`) finds the database refusing connections.
    down: Arc<AtomicBool>,
    /// Where the probe connects (PostgreSQL only).
    probe_url: Option<Arc<str>>,
}

impl Database {
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        Self::connect_with(config, true).await
    }

    /// The database for background work: on PostgreSQL a small pool of its own without the statement timeout
    /// (a job's batch is not a request); on SQLite, which has no statement timeout, the same pool as `main`
    /// (an in-memory database exists only in its one pool).
    pub async fn for_jobs(config: &Config, main: &Database) -> anyhow::Result<Self> {
        if config.is_sqlite() {
            return Ok(main.clone());
        }
        let mut config = config.clone();
        // The job runner (a batch's transaction and its heartbeat), the derived-state worker, the webhook
        // dispatcher and the CX sweeper: each holds at most one connection at a time.
        config.database_max_connections = 6;
        Self::connect_with(&config, false).await
    }

    async fn connect_with(config: &Config, statement_timeout: bool) -> anyhow::Result<Self> {
        let mut options = ConnectOptions::new(config.database_url.expose());
        options
            .max_connections(if config.is_sqlite() {
                1.max(config.database_max_connections.min(8))
            } else {
                config.database_max_connections
            })
            .min_connections(1)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        if let Some(schema) = &config.database_schema {
            options.set_schema_search_path(schema.clone());
        }
        if statement_timeout && !config.is_sqlite() {
            // The database stops work a request has given up on, instead of finishing it for nobody.
            options.statement_timeout(config.request_timeout());
        }
        if config.is_sqlite()
            && let Some(path) = config.sqlite_path()
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut conn = sea_orm::Database::connect(options)
            .await
            .with_context(|| format!("connecting to the database ({})", config.database_url.redacted()))?;
        let statements = Arc::new(AtomicU64::new(0));
        let counter = statements.clone();
        conn.set_metric_callback(move |info| {
            if counts_toward_requests(&info.statement.sql) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
            metrics::histogram!("kontakt_db_statement_duration_seconds").record(info.elapsed.as_secs_f64());
            if info.failed {
                metrics::counter!("kontakt_db_statement_failures_total").increment(1);
            }
        });
        if conn.get_database_backend() == DbBackend::Sqlite {
            // WAL lets readers run beside the writer; the busy timeout queues writers instead of failing them.
            for pragma in [
                "PRAGMA journal_mode = WAL",
                "PRAGMA busy_timeout = 5000",
                "PRAGMA foreign_keys = ON",
                "PRAGMA synchronous = NORMAL",
            ] {
                conn.execute_unprepared(pragma).await.with_context(|| pragma.to_owned())?;
            }
        }
        let probe_url = (conn.get_database_backend() == DbBackend::Postgres)
            .then(|| Arc::from(config.database_url.expose().to_owned()));
        Ok(Database { conn, statements, down: Arc::default(), probe_url })
    }

    /// The same pool, its statements left out of `kontakt_db_statements` (background work such as the CX sweeper,
    /// which on SQLite shares the request pool and would make per-request counts depend on timing).
    pub fn uncounted(&self) -> Self {
        let mut conn = self.conn.clone();
        conn.set_metric_callback(|info| {
            metrics::histogram!("kontakt_db_statement_duration_seconds").record(info.elapsed.as_secs_f64());
            if info.failed {
                metrics::counter!("kontakt_db_statement_failures_total").increment(1);
            }
        });
        Database {
            conn,
            statements: Arc::new(AtomicU64::new(0)),
            down: self.down.clone(),
            probe_url: self.probe_url.clone(),
        }
    }

    /// Whether the database is known to be down: the probe (`watch`) could not connect at its last look. Requests
    /// then answer `UNAVAILABLE` at once instead of each waiting out the pool's acquire timeout.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Probes the database every `every` on a connection of its own (the pool would wait its acquire timeout
    /// trying to connect): a refused or broken connection marks it down, an answer marks it up again. A slow answer
    /// changes nothing: load is not an outage. Nothing to watch on SQLite.
    pub fn watch(&self, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        use sea_orm::sqlx::{Connection, Executor, postgres::PgConnection};
        let url = self.probe_url.clone()?;
        let down = self.down.clone();
        Some(tokio::spawn(async move {
            let limit = Duration::from_secs(2);
            let mut probe: Option<PgConnection> = None;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Some(conn) = probe.as_mut() {
                    match tokio::time::timeout(limit, conn.execute("SELECT 1")).await {
                        Ok(Ok(_)) => {
                            mark(&down, false, None);
                            continue;
                        }
                        Ok(Err(_)) => probe = None,
                        Err(_) => continue,
                    }
                }
                match tokio::time::timeout(limit, PgConnection::connect(&url)).await {
                    Ok(Ok(conn)) => {
                        probe = Some(conn);
                        mark(&down, false, None);
                    }
                    Ok(Err(err)) => mark(&down, true, Some(&err.to_string())),
                    Err(_) => {}
                }
            }
        }))
    }

    pub fn conn(&self) -> &DatabaseConnection {
        &self.conn
    }

    pub fn backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    /// Statements run since start (every backend), not counting the background access-log writer.
    pub fn statement_count(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// A write transaction. On SQLite it takes the write lock at BEGIN, so concurrent writers queue on the busy
    /// timeout instead of failing when a reader tries to become a writer.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.conn
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        Migrator::up(&self.conn, None).await.context("running migrations")
    }

    pub async fn ping(&self) -> anyhow::Result<()> {
        self.conn.query_one_raw(Statement::from_string(self.backend(), "SELECT 1")).await.context("database ping")?;
        Ok(())
    }

    /// (connections in the pool, idle connections), for `/metrics`.
    pub fn pool_state(&self) -> Option<(u32, usize)> {
        match self.backend() {
            DbBackend::Postgres => {
                let pool = self.conn.get_postgres_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            DbBackend::Sqlite => {
                let pool = self.conn.get_sqlite_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            _ => None,
        }
    }
}

/// Holds a lock named `key` until the transaction `conn` ends: PostgreSQL's transaction-scoped advisory lock, for
/// writers that must not interleave across instances. SQLite serializes writers anyway: nothing to take.
pub async fn lock_until_commit(conn: &impl ConnectionTrait, key: &str) -> Result<(), DbErr> {
    if conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            [key.into()],
        ))
        .await?;
    }
    Ok(())
}

fn mark(down: &AtomicBool, now_down: bool, error: Option<&str>) {
    if down.swap(now_down, Ordering::AcqRel) != now_down {
        metrics::gauge!("kontakt_database_down").set(if now_down { 1.0 } else { 0.0 });
        match error {
            Some(error) => {
                tracing::error!(error, "the database refuses connections: requests answer UNAVAILABLE at once")
            }
            None => tracing::info!("the database answers again"),
        }
    }
}

/// Whether a statement counts in `kontakt_db_statements`, the per-request count tests use to prove there is no
/// N+1: not the access-log writer's batches nor the job runner's polling and bookkeeping, which run in the
/// background whenever they are due (on SQLite the runner shares the request pool).
fn counts_toward_requests(sql: &str) -> bool {
    !(sql.starts_with(r#"INSERT INTO "access_log""#)
        || sql.starts_with(r#"UPDATE "jobs""#)
        || sql.contains(r#"FROM "jobs""#))
}
