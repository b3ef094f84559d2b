//! Test harness: spawns the real server on 127.0.0.1:0 with a fresh database (SQLite file, or a fresh
//! PostgreSQL schema made by the migrations) and a fresh Redis key prefix per test.
#![allow(dead_code)]

use std::net::SocketAddr;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kontakt::{app::Application, config::Config};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ISSUER: &str = "https://issuer.kontakt.test";
pub const AUDIENCE: &str = "kontakt-api";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend: `on_every_backend!(name, …)` makes `sqlite::name` and
/// `postgres::name` from `async fn name(app: TestApp)`.
/// `name with tweak` starts that test's servers with `spawn_with(backend, tweak)`, `tweak` a `fn(&mut Config)` of
/// the calling module.
macro_rules! on_every_backend {
    (@tweak) => { |_: &mut kontakt::config::Config| {} };
    (@tweak $tweak:ident) => { super::$tweak };
    ($($name:ident $(with $tweak:ident)?),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let tweak = on_every_backend!(@tweak $($tweak)?);
                    let app = crate::common::spawn_with(crate::common::Backend::Sqlite, tweak)
                        .await
                        .expect("sqlite always runs");
                    super::$name(app).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let tweak = on_every_backend!(@tweak $($tweak)?);
                    if let Some(app) = crate::common::spawn_with(crate::common::Backend::Postgres, tweak).await {
                        super::$name(app).await;
                    }
                }
            )+
        }
    };
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The separate `/metrics` listener, when the test configured `metrics_listen`.
    pub metrics_addr: Option<SocketAddr>,
    pub base: String,
    pub client: reqwest::Client,
    pub secret: String,
    pub backend: Backend,
    pub uses_redis: bool,
    pub config: Config,
    _dir: tempfile::TempDir,
    pg_schema: Option<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn env_url(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if ci() => panic!("CI=true but {name} is not set: the PostgreSQL/Redis suite must run in CI"),
        _ => None,
    }
}

pub async fn spawn(backend: Backend) -> Option<TestApp> {
    spawn_with(backend, |_| {}).await
}

/// Spawns a server; `tweak` adjusts the configuration (limits, environment) before start.
pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.jwt_issuer = Some(ISSUER.into());
    config.jwt_audience = Some(AUDIENCE.into());
    let secret = format!("test-secret-{}-{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    config.jwt_secret = Some(secret.clone().into());
    config.default_phone_region = Some("DK".into());
    config.redis_prefix = format!("kontakt-test-{}", uuid::Uuid::new_v4().simple());
    let mut pg_schema = None;
    match backend {
        Backend::Sqlite => {
            config.database_url = format!("sqlite://{}?mode=rwc", dir.path().join("kontakt.db").display()).into();
        }
        Backend::Postgres => {
            let url = env_url("TEST_DATABASE_URL")?;
            let redis = env_url("TEST_REDIS_URL");
            let schema = format!("kt_{}", uuid::Uuid::new_v4().simple());
            let admin = sea_orm::Database::connect(url.as_str())
                .await
                .unwrap_or_else(|e| panic!("TEST_DATABASE_URL does not answer: {e}"));
            admin.execute_unprepared(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
            admin.close().await.ok();
            config.database_url = url.clone().into();
            config.database_schema = Some(schema.clone());
            config.database_max_connections = 8;
            config.redis_url = redis.map(Into::into);
            pg_schema = Some((url, schema));
        }
    }
    tweak(&mut config);
    let uses_redis = config.redis_url.is_some();
    let app = Application::build(config.clone()).await.expect("the server starts");
    let addr = app.local_addr().expect("bound address");
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    Some(TestApp {
        addr,
        metrics_addr,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        secret,
        backend,
        uses_redis,
        config,
        _dir: dir,
        pg_schema,
        shutdown: Some(tx),
    })
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some((url, schema)) = self.pg_schema.take() {
            // Drop is synchronous: clean the schema up on a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async {
                    if let Ok(db) = sea_orm::Database::connect(url.as_str()).await {
                        let _ = db.execute_unprepared(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
                        let _ = db.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl TestApp {
    /// Another instance of the same installation: its own process state (in-process caches, workers, listener) over
    /// this one's database schema, Redis key prefix and signing secret, as a second machine behind a load balancer
    /// would be. The first instance owns the schema.
    pub async fn second_instance(&self) -> TestApp {
        let mut config = self.config.clone();
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.metrics_listen = None;
        let app = Application::build(config.clone()).await.expect("the second instance starts");
        let addr = app.local_addr().expect("bound address");
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(app.run(async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            metrics_addr: None,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            secret: self.secret.clone(),
            backend: self.backend,
            uses_redis: self.uses_redis,
            config,
            _dir: tempfile::tempdir().expect("temp dir"),
            pg_schema: None,
            shutdown: Some(tx),
        }
    }

    /// A connection to this server's database (same schema), for tests that check what is stored.
    pub async fn db(&self) -> sea_orm::DatabaseConnection {
        let mut options = sea_orm::ConnectOptions::new(self.config.database_url.expose());
        options.max_connections(1).sqlx_logging(false);
        if let Some(schema) = &self.config.database_schema {
            options.set_schema_search_path(schema.clone());
        }
        sea_orm::Database::connect(options).await.expect("test database connection")
    }

    /// Claims of a valid token for this server.
    pub fn claims(&self, tenant: &str, scopes: &[&str], purpose: &str) -> Value {
        let now = now();
        json!({
            "sub": "test-user", "tenant": tenant, "scope": scopes.join(" "), "purpose": purpose,
            "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
        })
    }

    /// Signs claims with this server's HS256 secret.
    pub fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(self.secret.as_bytes()))
            .expect("sign")
    }

    pub fn token(&self, tenant: &str, scopes: &[&str], purpose: &str) -> String {
        self.sign(&self.claims(tenant, scopes, purpose))
    }

    /// A token for tenant `acme` with every profile scope and `pii:read`.
    pub fn admin(&self) -> String {
        self.token("acme", &["profiles:read", "profiles:write", "pii:read"], "support")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs an operation asking for application/graphql-response+json.
    pub async fn gql(&self, token: &str, query: &str, variables: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(token)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    /// Like `gql`, but fails the test on any error and returns `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql(token, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Creates (or updates) a customer with the given identities; returns its id.
    pub async fn upsert(&self, token: &str, identities: Value, given_name: Option<&str>) -> String {
        let data = self
            .data(
                token,
                "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { customer { id } } }",
                json!({ "input": { "identities": identities, "givenName": given_name } }),
            )
            .await;
        data["upsertCustomer"]["customer"]["id"].as_str().expect("id").to_owned()
    }

    /// Runs a job to its end: enqueues it with `mutation` (which selects `id`), polls `job(id)` a bounded number of
    /// times until it leaves QUEUED/RUNNING, asserts it SUCCEEDED and returns the job.
    pub async fn run_job(&self, token: &str, mutation: &str) -> Value {
        let data = self.data(token, mutation, json!({})).await;
        let id = data.as_object().and_then(|o| o.values().next()).and_then(|job| job["id"].as_str()).expect("job id");
        let job = self.wait_for_job(token, id).await;
        assert_eq!(job["state"], "SUCCEEDED", "{job}");
        job
    }

    /// Polls `job(id)` (at most 200 times, 50 ms apart) until the job is no longer QUEUED or RUNNING.
    pub async fn wait_for_job(&self, token: &str, id: &str) -> Value {
        for _ in 0..200 {
            let data = self.data(token, JOB, json!({ "id": id })).await;
            let job = data["job"].clone();
            if job["state"] != "QUEUED" && job["state"] != "RUNNING" {
                return job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("job {id} did not finish in 10 s");
    }

    /// Re-resolves the tenant's customers as a job and returns the job's result (what it changed).
    pub async fn reresolve(&self, token: &str) -> Value {
        self.run_job(token, "mutation { reresolveCustomers { id } }").await["result"].clone()
    }

    /// Statements this server has run so far (from /metrics, labelled with this instance).
    pub async fn statements(&self) -> u64 {
        let health: Value =
            self.client.get(self.url("/healthz")).send().await.expect("healthz").json().await.expect("json");
        let instance = health["instance"].as_str().expect("instance id").to_owned();
        let text = self.client.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
        let needle = format!("kontakt_db_statements{{instance=\"{instance}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .expect("kontakt_db_statements for this instance")
    }
}

/// Every field of a job.
pub const JOB: &str = "query($id: UUID!) { job(id: $id) { id kind state progress { done total } result error
    requestedBy createdAt startedAt finishedAt } }";

/// The `extensions.code` of the first error.
pub fn first_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("<none>")
}
