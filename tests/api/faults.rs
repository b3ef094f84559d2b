//! Faults (issue 13, items 5 and 6).
//!
//! Redis, a throwaway `redis-server` the test starts, kills, freezes and starts again: with Redis dead or hung, reads
//! stay fast (the circuit breaker fails at once instead of each request waiting) and exact (a withdrawal is refused
//! at once, never served from a cache); a live subscription comes back when Redis does.
//!
//! PostgreSQL, behind a proxy the test cuts and restores: requests answer `UNAVAILABLE` at once while it is gone and
//! are served again by themselves when it is back; four writers through a 2.7 s outage see only retryable errors,
//! and every write acknowledged is stored exactly once.
use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    common::{Backend, TestApp, first_code, spawn_with},
    subscriptions::{next_json, ready_socket, send},
    touchpoints::{grant, record, touchpoint},
};

/// A `redis-server` of the test's own on a free port; killed when dropped.
struct RedisProcess {
    port: u16,
    child: Option<Child>,
}

impl RedisProcess {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("address").port();
        let mut redis = RedisProcess { port, child: None };
        redis.restart();
        redis
    }

    /// Starts the server (again) on the same port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package) starts");
        self.child = Some(child);
        for _ in 0..100 {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut conn) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// SIGSTOP / SIGCONT: a Redis that accepts connections and never answers.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().expect("kill").success());
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

async fn app_on(redis: &RedisProcess) -> TestApp {
    let url = redis.url();
    spawn_with(Backend::Sqlite, |c| {
        c.redis_url = Some(url.into());
        c.profile_cache_ttl_secs = 30;
    })
    .await
    .expect("an app")
}

const PROFILE: &str =
    "query($id: UUID!) { customer(id: $id) { id touchpoints(first: 5) { edges { node { type } } } } }";

fn reader(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read"], "personalization")
}

/// The median time of `n` profile reads, each of which must serve the profile.
async fn median_read(app: &TestApp, id: &str, n: usize) -> Duration {
    let token = reader(app);
    let mut times = Vec::new();
    for _ in 0..n {
        let started = Instant::now();
        let (_, body) = app.gql(&token, PROFILE, json!({ "id": id })).await;
        times.push(started.elapsed());
        assert_eq!(body["data"]["customer"]["id"], id, "{body}");
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn reads_stay_fast_and_exact_with_redis_dead_or_hung() {
    let mut redis = RedisProcess::start();
    let app = app_on(&redis).await;
    let created = record(
        &app,
        json!([touchpoint("f-1", json!([{ "kind": "EMAIL", "value": "f@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await;
    let id = created["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &id, "personalization", "GRANTED").await;
    let healthy = median_read(&app, &id, 10).await;

    // Dead: connections refused. The first failure opens the circuit; the reads after it do not wait on Redis.
    redis.kill();
    let dead = median_read(&app, &id, 21).await;
    assert!(dead < Duration::from_millis(50), "median read with Redis dead: {dead:?} (healthy: {healthy:?})");
    // Exact all the same: a withdrawal is refused on the next read.
    grant(&app, &id, "personalization", "WITHDRAWN").await;
    let (_, body) = app.gql(&reader(&app), PROFILE, json!({ "id": id })).await;
    assert_eq!(first_code(&body), "CONSENT_REQUIRED", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["reason"], "WITHDRAWN", "{body}");
    grant(&app, &id, "personalization", "GRANTED").await;

    // Back: the next probe closes the circuit, and reads go on.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let back = median_read(&app, &id, 5).await;
    assert!(back < Duration::from_millis(500), "{back:?}");

    // Hung: Redis takes the connection and never answers. One call waits out the timeout; the rest fail at once.
    redis.signal("-STOP");
    let hung = median_read(&app, &id, 21).await;
    redis.signal("-CONT");
    assert!(hung < Duration::from_millis(50), "median read with Redis hung: {hung:?} (healthy: {healthy:?})");
}

/// Writes touchpoints (keys `key-0`, `key-1`, …) until an event arrives on `socket`, and answers it.
async fn arrives(app: &TestApp, socket: &mut crate::subscriptions::Socket, key: &str) -> Value {
    let write = async {
        for i in 0..40 {
            let item = touchpoint(
                &format!("{key}-{i}"),
                json!([{ "kind": "EMAIL", "value": "c@example.com" }]),
                "PAGE_VIEW",
                1,
            );
            record(app, json!([item])).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    tokio::select! {
        message = next_json(socket) => message.expect("an event"),
        () = write => panic!("no event for `{key}` within the writes"),
    }
}

#[tokio::test]
async fn a_subscription_comes_back_when_redis_does() {
    let mut redis = RedisProcess::start();
    let app = app_on(&redis).await;
    let engine = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let mut socket = ready_socket(&app, &engine).await;
    let query = "subscription { touchpointRecorded { idempotencyKey } }";
    send(&mut socket, json!({ "type": "subscribe", "id": "t", "payload": { "query": query } })).await;
    let consented = record(
        &app,
        json!([touchpoint("c-0", json!([{ "kind": "EMAIL", "value": "c@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await["results"][0]["customerId"]
        .as_str()
        .expect("id")
        .to_owned();
    grant(&app, &consented, "personalization", "GRANTED").await;

    let before: Value = arrives(&app, &mut socket, "before").await;
    assert_eq!(before["type"], "next", "{before}");

    // Redis goes away and comes back: the same subscription goes on receiving, with no error and no `complete`.
    redis.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    let after: Value = arrives(&app, &mut socket, "after").await;
    assert_eq!(after["type"], "next", "the subscription was ended instead of restored: {after}");
    let key = after["payload"]["data"]["touchpointRecorded"]["idempotencyKey"].as_str().expect("key");
    assert!(key.starts_with("after-"), "{after}");
}

/// A TCP proxy in front of the test PostgreSQL that the test can cut (every connection dropped, new ones refused)
/// and restore on the same port: PostgreSQL going away and coming back, as the server sees it.
struct Cuttable {
    addr: std::net::SocketAddr,
    upstream: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Cuttable {
    async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let proxy = Cuttable { addr, upstream: upstream.to_owned(), tasks: Default::default() };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (tasks, upstream) = (self.tasks.clone(), self.upstream.clone());
        let accept = tokio::spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let upstream = upstream.clone();
                    let pipe = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(upstream.as_str()).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    tasks.lock().expect("tasks").push(pipe);
                }
            }
        });
        tasks.lock().expect("tasks").push(accept);
    }

    fn cut(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }

    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.expect("bind the same port again");
        self.serve(listener);
    }
}

/// A PostgreSQL server app whose database connections go through a [`Cuttable`] proxy, probed every 100 ms; none
/// without `TEST_DATABASE_URL`.
async fn behind_proxy() -> Option<(Cuttable, TestApp)> {
    let url = std::env::var("TEST_DATABASE_URL").ok()?;
    let parsed = url::Url::parse(&url).expect("TEST_DATABASE_URL is a URL");
    let upstream = format!("{}:{}", parsed.host_str().expect("host"), parsed.port().unwrap_or(5432));
    let proxy = Cuttable::start(&upstream).await;
    let mut through = parsed.clone();
    through.set_host(Some("127.0.0.1")).expect("host");
    through.set_port(Some(proxy.addr.port())).expect("port");
    let app = spawn_with(Backend::Postgres, |c| {
        c.database_url = through.to_string().into();
        c.database_probe_ms = 100;
    })
    .await?;
    Some((proxy, app))
}

#[tokio::test]
async fn with_postgres_gone_requests_fail_fast_as_unavailable_and_recover_by_themselves() {
    let Some((proxy, app)) = behind_proxy().await else { return };
    let created = record(
        &app,
        json!([touchpoint("pg-1", json!([{ "kind": "EMAIL", "value": "pg@example.com" }]), "PAGE_VIEW", 1)]),
    )
    .await;
    let id = created["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(&app, &id, "personalization", "GRANTED").await;
    let token = reader(&app);
    let (_, body) = app.gql(&token, PROFILE, json!({ "id": id })).await;
    assert_eq!(body["data"]["customer"]["id"], id.as_str(), "{body}");

    // Gone: once the probe has seen it (100 ms here), every request answers UNAVAILABLE at once — not after the
    // pool's 5 s — with 503 and Retry-After, and readiness says so as fast.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = app.gql(&token, PROFILE, json!({ "id": id })).await;
        let took = started.elapsed();
        assert_eq!(first_code(&body), "UNAVAILABLE", "{body}");
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(took < Duration::from_millis(200), "a request with the database gone took {took:?}");
    }
    let started = Instant::now();
    let ready = app.client.get(format!("{}/readyz", app.base)).send().await.expect("readyz");
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());

    // Back: the server notices by itself and serves again, nothing lost.
    proxy.restore().await;
    let mut served = None;
    for _ in 0..100 {
        let (_, body) = app.gql(&token, PROFILE, json!({ "id": id })).await;
        if body["data"]["customer"]["id"] == id.as_str() {
            served = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = served.expect("the server serves again once PostgreSQL is back");
    assert_eq!(served["data"]["customer"]["touchpoints"]["edges"].as_array().map(Vec::len), Some(1), "{served}");
}

/// One writer: touchpoints `w{n}-{i}` one per request, each retried until acknowledged, until `stop` is set; answers
/// the acknowledged keys and the error codes seen.
async fn write_until(app: &TestApp, writer: usize, stop: &std::sync::atomic::AtomicBool) -> (Vec<String>, Vec<String>) {
    let token = crate::touchpoints::writer(app);
    let (mut acknowledged, mut codes) = (Vec::new(), Vec::new());
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let key = format!("w{writer}-{i}");
        let item =
            touchpoint(&key, json!([{ "kind": "EMAIL", "value": format!("w{writer}@example.com") }]), "PAGE_VIEW", 1);
        let (_, body) = app.gql(&token, crate::touchpoints::RECORD, json!({ "t": [item] })).await;
        let result = &body["data"]["recordTouchpoints"];
        let status = result["results"][0]["status"].as_str().unwrap_or_default();
        if status == "CREATED" || status == "DUPLICATE" {
            acknowledged.push(key);
            i += 1;
        } else {
            let code = match result["results"][0]["error"]["code"].as_str() {
                Some(code) => code.to_owned(),
                None => first_code(&body).to_owned(),
            };
            codes.push(code);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    (acknowledged, codes)
}

#[tokio::test]
async fn writes_through_a_postgres_outage_are_retryable_and_none_is_lost_or_doubled() {
    let Some((proxy, app)) = behind_proxy().await else { return };

    // Four writers; PostgreSQL goes away for 2.7 s once they are under way, and they go on for 1.5 s after it is
    // back.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writers = futures_util::future::join_all((0..4).map(|w| write_until(&app, w, &stop)));
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        proxy.cut();
        let cut_at = Instant::now();
        // The server knows it is gone (readiness says so) …
        let mut noticed = false;
        for _ in 0..60 {
            let ready = app.client.get(format!("{}/readyz", app.base)).send().await.expect("readyz");
            if ready.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                noticed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // … and a write sent now is refused as retryable, at once.
        let item = touchpoint("during", json!([{ "kind": "EMAIL", "value": "during@example.com" }]), "PAGE_VIEW", 1);
        let started = Instant::now();
        let (status, body) =
            app.gql(&crate::touchpoints::writer(&app), crate::touchpoints::RECORD, json!({ "t": [item] })).await;
        let refused = (status, first_code(&body).to_owned(), started.elapsed());
        tokio::time::sleep(Duration::from_millis(2_700).saturating_sub(cut_at.elapsed())).await;
        proxy.restore().await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (noticed, refused)
    };
    let (results, (noticed, refused)) = tokio::join!(writers, outage);
    assert!(noticed, "readiness never said the database was gone");
    assert_eq!(refused.0, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{refused:?}");
    assert_eq!(refused.1, "UNAVAILABLE", "{refused:?}");
    // At once: not after the pool's 5 s acquire timeout (bounded generously for a loaded CI machine).
    assert!(refused.2 < Duration::from_secs(2), "{refused:?}");

    let mut acknowledged: Vec<String> = Vec::new();
    let mut codes: Vec<String> = Vec::new();
    for (keys, seen) in results {
        acknowledged.extend(keys);
        codes.extend(seen);
    }
    // Every failure a writer saw says a retry can fix it.
    assert!(codes.iter().all(|c| c == "UNAVAILABLE"), "codes seen during the outage: {codes:?}");
    // After the outage the writers go on by themselves.
    for w in 0..4 {
        let item = touchpoint(
            &format!("after-{w}"),
            json!([{ "kind": "EMAIL", "value": format!("w{w}@example.com") }]),
            "PAGE_VIEW",
            1,
        );
        let (_, body) =
            app.gql(&crate::touchpoints::writer(&app), crate::touchpoints::RECORD, json!({ "t": [item] })).await;
        assert_eq!(body["data"]["recordTouchpoints"]["created"], 1, "{body}");
        acknowledged.push(format!("after-{w}"));
    }
    // Every acknowledged write is stored, once.
    use sea_orm::{ConnectionTrait, Statement};
    let db = app.db().await;
    let rows = db
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT idempotency_key, COUNT(*) AS n FROM touchpoints GROUP BY idempotency_key",
        ))
        .await
        .expect("count");
    let stored: std::collections::HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.try_get::<String>("", "idempotency_key").expect("key"), r.try_get::<i64>("", "n").expect("n")))
        .collect();
    for key in &acknowledged {
        assert_eq!(stored.get(key), Some(&1), "acknowledged `{key}` is stored once");
    }
    assert!(stored.values().all(|n| *n == 1), "no touchpoint is stored twice");
    assert!(!stored.contains_key("during"), "the write refused during the outage was not stored");
}
