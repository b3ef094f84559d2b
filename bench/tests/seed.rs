//! `kontakt-bench seed`: a small dataset written by the binary is complete, readable through the API, and never
//! seeded twice.
use std::process::Command;

use std::sync::Arc;

use kontakt::{
    app::Application,
    auth::{KeyRing, TokenRequest},
    config::Config,
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kontakt-bench");

/// A Kontakt server on the seeded database, in this process; it stops when the test's runtime ends.
struct Server {
    base: String,
    keys: Arc<KeyRing>,
    client: reqwest::Client,
}

impl Server {
    async fn start(database_url: &str, schema: Option<&str>) -> Server {
        let mut config = Config::defaults();
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.database_url = database_url.into();
        config.database_schema = schema.map(str::to_owned);
        config.database_max_connections = 4;
        config.jwt_secret = Some(format!("seed-test-{}", uuid::Uuid::new_v4().simple()).into());
        let app = Application::build(config).await.expect("the server starts");
        let base = format!("http://{}", app.local_addr().expect("bound address"));
        let keys = app.state().keys.clone();
        tokio::spawn(app.run(std::future::pending::<()>()));
        Server { base, keys, client: reqwest::Client::new() }
    }

    fn token(&self, tenant: &str, scopes: &[&str], purpose: &str) -> String {
        let request = TokenRequest {
            tenant: tenant.to_owned(),
            subject: "seed-test".to_owned(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            purpose: purpose.to_owned(),
            ttl_secs: 600,
        };
        self.keys.mint(&request).expect("token")
    }

    /// Runs an operation, fails the test on any error and returns `data`.
    async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(token)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let body: Value = response.json().await.expect("JSON body");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }
}

fn kontakt(dir: &std::path::Path, database_url: &str, schema: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("KONTAKT_") || key == "DATABASE_URL" || key == "REDIS_URL" {
            cmd.env_remove(key);
        }
    }
    cmd.env("DATABASE_URL", database_url).env("KONTAKT_LOG_FORMAT", "json").env("RUST_LOG", "warn");
    if let Some(schema) = schema {
        cmd.env("KONTAKT_DATABASE_SCHEMA", schema);
    }
    cmd
}

fn seed(dir: &std::path::Path, database_url: &str, schema: Option<&str>) -> std::process::Output {
    kontakt(dir, database_url, schema)
        .args(["seed", "--tenant", "acme", "--customers", "40", "--touchpoints", "3000", "--heavy", "250,1200"])
        .args(["--seed", "7", "--sample", "10", "--manifest", "manifest.json"])
        .output()
        .expect("run kontakt-bench seed")
}

async fn seeded_data_reads_through_the_api(database_url: String, schema: Option<String>) {
    let dir = tempfile::tempdir().expect("dir");
    let output = seed(dir.path(), &database_url, schema.as_deref());
    assert!(output.status.success(), "seed failed: {}", String::from_utf8_lossy(&output.stderr));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    assert_eq!(manifest["tenant"], "acme");
    assert_eq!(manifest["counts"]["customers"], 42);
    assert_eq!(manifest["counts"]["touchpoints"], 3000 + 250 + 1200);
    assert!(manifest["counts"]["identities"].as_u64().unwrap_or(0) >= 42);
    assert!(manifest["counts"]["consent_events"].as_u64().unwrap_or(0) >= 2);
    assert_eq!(manifest["sample_customers"].as_array().map(Vec::len), Some(10));
    let heavy = manifest["heavy"]["1200"].as_str().expect("heavy customer of 1200").to_owned();

    // A second seed of the same tenant is refused instead of colliding on identities.
    let again = seed(dir.path(), &database_url, schema.as_deref());
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already has 42 customers"));

    let app = Server::start(&database_url, schema.as_deref()).await;
    let token = app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "personalization");
    let data = app
        .data(
            &token,
            "query($id: UUID!) { customer(id: $id) { identities { kind value } consents { purpose status }
               touchpoints(first: 50) { totalCount edges { node { type occurredAt value currency feedback { metric score } } } } } }",
            json!({ "id": heavy }),
        )
        .await;
    let customer = &data["customer"];
    assert_eq!(customer["touchpoints"]["totalCount"], 1200);
    assert_eq!(customer["touchpoints"]["edges"].as_array().map(Vec::len), Some(50));
    assert!(customer["identities"].as_array().is_some_and(|ids| ids.iter().any(|i| i["kind"] == "EMAIL")));
    assert!(customer["consents"].as_array().is_some_and(|c| c.iter().any(|c| c["purpose"] == "personalization")));

    // Every sample customer consented, so their timelines read without CONSENT_REQUIRED.
    for id in manifest["sample_customers"].as_array().expect("sample").iter().take(5) {
        let data = app
            .data(
                &token,
                "query($id: UUID!) { customer(id: $id) { touchpoints(first: 5) { totalCount } } }",
                json!({ "id": id }),
            )
            .await;
        assert!(data["customer"]["touchpoints"]["totalCount"].is_number(), "{data}");
    }

    let data = app
        .data(
            &token,
            "{ touchpoints(first: 100) { excludedCount edges { node { id type } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    let feed = &data["touchpoints"];
    let served = feed["edges"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(served + feed["excludedCount"].as_u64().unwrap_or(0), 100, "{feed}");
    assert_eq!(feed["pageInfo"]["hasNextPage"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_sqlite_data_reads_through_the_api() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("seeded.db").display());
    seeded_data_reads_through_the_api(url, None).await;
}

/// Exercises the COPY path; runs when TEST_DATABASE_URL names a PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_postgres_data_reads_through_the_api() {
    let Some(url) = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty()) else { return };
    let schema = format!("kt_seed_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(url.as_str()).await.expect("TEST_DATABASE_URL answers");
    sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE SCHEMA {schema}")).await.expect("schema");
    seeded_data_reads_through_the_api(url, Some(schema.clone())).await;
    let _ =
        sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}
