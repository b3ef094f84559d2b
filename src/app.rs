//! Start-up: builds every component from `Config`, binds the listener and serves until shut down.
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{
    auth::KeyRing,
    config::Config,
    graphql::build_schema,
    http::{self, AppState},
    jobs::JobRunner,
    privacy::access_log::{AccessLog, AccessLogWriter},
    rate_limit::TrackingLimiter,
    services::{DomainSettings, Services},
    storage::{
        Cache, Database, PubSub,
        cache::{MemoryCache, RedisCache},
        pubsub::{ClusterPubSub, LocalPubSub, RedisPubSub},
    },
};

pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
    /// The separate `/metrics` listener (`KONTAKT_METRICS_LISTEN`) and what it serves.
    metrics: Option<(tokio::net::TcpListener, Router)>,
    state: AppState,
    access_log_writer: AccessLogWriter,
    job_runner: JobRunner,
    cx_sweeper: crate::cx::cases::sweep::CxSweeper,
    derived_worker: crate::derived::maintain::DerivedWorker,
    webhooks: crate::derived::webhooks::WebhookDispatcher,
    /// The database probe (PostgreSQL), stopped with the server.
    db_probe: Option<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Connects, migrates (when configured), and binds. The listener is bound here so callers learn the real port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.check()?;
        let keys = KeyRing::load(&config)?;
        let db = Database::connect(&config).await?;
        if config.migrate_on_start {
            db.migrate().await?;
        }
        let job_db = Database::for_jobs(&config, &db).await?;
        let db_probe = db.watch(config.database_probe());
        let (services, access_log_writer) = build_services(&config, db).await?;
        // Survey answers stored before CX metrics existed join the rollups in the background.
        let backfill_db = job_db.uncounted().conn().clone();
        tokio::spawn(async move {
            match crate::cx::answers::backfill(&backfill_db).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(answers = n, "CX: recorded survey answers stored before CX metrics"),
                Err(err) => {
                    tracing::warn!(error = %err, "CX: backfill of survey answers failed; it runs again at the next start")
                }
            }
        });
        // The CX sweeper is background work too: on the jobs' pool, its statements not counted with requests.
        let cx_sweeper =
            crate::cx::cases::sweep::CxSweeper::start(job_db.uncounted(), services.pubsub.clone(), config.cx_sweep());
        // Derived state and webhooks: background work on the jobs' pool, woken by this instance's commits.
        let derived_worker = crate::derived::maintain::DerivedWorker::start(
            Services { db: job_db.uncounted(), ..services.clone() },
            config.derived_poll(),
            config.derived_events_retention(),
        );
        let webhooks = crate::derived::webhooks::WebhookDispatcher::start(
            Services { db: job_db.uncounted(), ..services.clone() },
            config.derived_poll(),
            config.webhook_retry(),
        );
        // Jobs run outside any request: no request timeout, and on PostgreSQL a pool without the statement timeout.
        let job_runner =
            JobRunner::start(Services { db: job_db, ..services.clone() }, config.job_poll(), config.score_refit());
        let mut write_keys = http::tracking::WriteKeys::new();
        for (key, (tenant, source)) in config.parsed_write_keys()? {
            let tenant = crate::auth::TenantId::parse(&tenant)
                .map_err(|_| anyhow::anyhow!("KONTAKT_WRITE_KEYS: `{tenant}` is not a valid tenant"))?;
            write_keys.insert(key, (tenant, source));
        }
        let tracking_limit = config.tracking_rate_limit();
        let state = AppState {
            schema: build_schema(&config),
            keys: Arc::new(keys),
            services,
            metrics: crate::telemetry::metrics_handle()?,
            config: Arc::new(config),
            instance: uuid::Uuid::new_v4().simple().to_string().into(),
            write_keys: Arc::new(write_keys),
            tracking_limiter: tracking_limit.map(|limit| Arc::new(TrackingLimiter::new("tracking", limit))),
            documents: http::Documents::new(),
        };
        let router = http::router(state.clone());
        let listener = tokio::net::TcpListener::bind(state.config.listen)
            .await
            .with_context(|| format!("binding {} (set KONTAKT_LISTEN or --listen)", state.config.listen))?;
        let metrics = match state.config.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} (set KONTAKT_METRICS_LISTEN or --metrics-listen)"))?;
                Some((listener, http::metrics_router(state.clone())))
            }
            None => None,
        };
        Ok(Application {
            listener,
            router,
            metrics,
            state,
            access_log_writer,
            job_runner,
            cx_sweeper,
            derived_worker,
            webhooks,
            db_probe,
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Where the separate `/metrics` listener is bound, when `KONTAKT_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|(listener, _)| listener.local_addr().ok())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, finishes the requests in flight, stops the job runner after its current
    /// batch (the job resumes from its checkpoint on the next start), then writes the queued access log.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let shutdown = futures_util::FutureExt::shared(futures_util::FutureExt::boxed(shutdown));
        let metrics = self.metrics.map(|(listener, router)| {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if let Err(err) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %err, "serving /metrics failed");
                }
            })
        });
        let served = axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP");
        if let Some(metrics) = metrics {
            let _ = metrics.await;
        }
        self.job_runner.stop().await;
        self.cx_sweeper.stop().await;
        self.derived_worker.stop().await;
        self.webhooks.stop().await;
        self.access_log_writer.flush_and_stop().await;
        if let Some(probe) = self.db_probe {
            probe.abort();
        }
        served
    }
}

async fn build_services(config: &Config, db: Database) -> anyhow::Result<(Services, AccessLogWriter)> {
    let default_phone_region = config
        .default_phone_region
        .as_deref()
        .map(|r| {
            r.to_ascii_uppercase()
                .parse::<phonenumber::country::Id>()
                .map_err(|_| anyhow::anyhow!("KONTAKT_DEFAULT_PHONE_REGION `{r}` is not an ISO 3166 alpha-2 code"))
        })
        .transpose()?;
    let suppression_key = match &config.suppression_key {
        Some(key) => key.expose().clone(),
        None => {
            let mut path = config.dev_key_path().into_os_string();
            path.push(".suppression");
            crate::auth::keys::load_or_create_dev_key(std::path::Path::new(&path))?
        }
    };
    let profile_cache_ttl =
        (config.profile_cache_ttl_secs > 0).then(|| Duration::from_secs(config.profile_cache_ttl_secs));
    let settings = Arc::new(DomainSettings {
        default_phone_region,
        suppression_key: suppression_key.into_bytes(),
        profile_cache_ttl,
        webhook_allow_internal: config.webhook_allow_internal(),
    });
    let (access_log, access_log_writer) = AccessLog::start(db.clone());
    let breaker =
        || Arc::new(crate::storage::breaker::Breaker::new("redis", config.redis_timeout(), config.redis_probe()));
    let (cache, pubsub, local_profiles): (Arc<dyn Cache>, Arc<dyn PubSub>, _) = match &config.redis_url {
        Some(url) => {
            let client = redis::Client::open(url.expose()).context("REDIS_URL is not a Redis URL")?;
            // Fail fast while Redis is down (about 0.15 s, not 9 s) so readiness and fallbacks react quickly.
            let manager_config = ConnectionManagerConfig::new()
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200))
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(1)));
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)
                .context("setting up the Redis connection")?;
            let breaker = breaker();
            (
                Arc::new(RedisCache::new(manager.clone(), &config.redis_prefix, breaker.clone())),
                Arc::new(RedisPubSub::new(client, manager, &config.redis_prefix, breaker, config.redis_probe())),
                None,
            )
        }
        None if config.redis_cluster_urls.is_some() => {
            let (cache, pubsub) = redis_cluster(config, breaker())?;
            (cache, pubsub, None)
        }
        None => (
            Arc::new(MemoryCache::new(100_000)),
            Arc::new(LocalPubSub::default()),
            profile_cache_ttl.map(|ttl| Arc::new(crate::profiles::cache::LocalProfiles::new(100_000, ttl))),
        ),
    };
    let services = Services {
        db,
        cache,
        pubsub,
        settings,
        access_log,
        rules: Default::default(),
        scores: Default::default(),
        definitions: Default::default(),
        derived_wake: Default::default(),
        webhook_wake: Default::default(),
        local_profiles,
    };
    Ok((services, access_log_writer))
}

/// The cache and pub/sub on a Redis Cluster (`KONTAKT_REDIS_CLUSTER_URLS`): two cluster connections made lazily
/// (the server starts while the cluster is away, like with one Redis server), one for commands (cache and
/// `SPUBLISH`) and one, in RESP3, whose pushes carry the sharded subscriptions' messages.
fn redis_cluster(
    config: &Config,
    breaker: Arc<crate::storage::breaker::Breaker>,
) -> anyhow::Result<(Arc<dyn Cache>, Arc<dyn PubSub>)> {
    use redis::cluster::{ClusterClientBuilder, ClusterConfig};
    let nodes = config.redis_cluster_nodes();
    // Fail fast while a node is down, as with one server; the breaker bounds every call anyway.
    let timeouts = || {
        ClusterConfig::new().set_connection_timeout(Duration::from_secs(1)).set_response_timeout(Duration::from_secs(1))
    };
    let builder = || {
        ClusterClientBuilder::new(nodes.clone())
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(1))
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(200)
    };
    let commands = builder().build().context("KONTAKT_REDIS_CLUSTER_URLS: not Redis URLs")?;
    let commands = commands.get_pending_async_connection_with_config(timeouts());
    let (channels, ended) = crate::storage::pubsub::Channels::new();
    let on_push = channels.clone();
    let subscriptions = builder()
        .use_protocol(redis::ProtocolVersion::RESP3)
        .build()
        .context("KONTAKT_REDIS_CLUSTER_URLS: not Redis URLs")?
        .get_pending_async_connection_with_config(timeouts().set_push_sender(move |push: redis::PushInfo| {
            on_push.on_push(push);
            Ok::<(), std::convert::Infallible>(())
        }));
    Ok((
        Arc::new(RedisCache::cluster(commands.clone(), &config.redis_prefix, breaker.clone())),
        Arc::new(ClusterPubSub::new(
            commands,
            subscriptions,
            (channels, ended),
            &config.redis_prefix,
            breaker,
            Duration::from_secs(1),
            config.redis_probe(),
        )),
    ))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
