//! Redis Cluster (issue 13, "more than one machine"): the server on a real local cluster of three
//! `redis-server --cluster-enabled yes` processes the test starts and joins with `redis-cli --cluster create`.
//!
//! A profile read fills the cache on the node that owns the customer's slot and a write drops it (the next read is
//! fresh), for customers on different nodes, and a write that touches customers on two nodes drops all of their
//! keys (one `DEL` per slot, never `CROSSSLOT`); a subscription on one instance hears writes made on another
//! (sharded pub/sub); a subscription comes back when the node holding its channel is restarted. Skipped, with the
//! reason printed, where `redis-server` or `redis-cli` is not installed.
use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use kontakt::storage::keys;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::{
    common::{Backend, TestApp, spawn_with},
    subscriptions::{Socket, next_json, ready_socket, send},
    touchpoints::{grant, record, touchpoint, writer},
};

/// One `redis-server --cluster-enabled yes` of the test's cluster.
struct Node {
    port: u16,
    /// The cluster bus port, chosen free too (the default, port + 10000, may not exist).
    bus: u16,
    child: Option<Child>,
}

/// Three cluster nodes, no replicas, every slot assigned; every process is killed when this is dropped.
struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|out| out.status.success())
}

/// Free TCP ports on 127.0.0.1, distinct (the listeners are held until all are chosen).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("address").port()).collect()
}

fn sync_connection(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection_with_timeout(Duration::from_secs(1))
}

impl RedisCluster {
    /// Starts the nodes, makes them a cluster and waits for `cluster_state:ok`; `None` (printed) without Redis.
    fn start() -> Option<Self> {
        for program in ["redis-server", "redis-cli"] {
            if !installed(program) {
                eprintln!("skipped: `{program}` is not installed (Debian: apt-get install redis-server)");
                return None;
            }
        }
        let ports = free_ports(6);
        let nodes = (0..3).map(|i| Node { port: ports[2 * i], bus: ports[2 * i + 1], child: None }).collect();
        let mut cluster = RedisCluster { dir: tempfile::tempdir().expect("temp dir"), nodes };
        for i in 0..3 {
            cluster.launch(i);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            cluster.logs()
        );
        cluster.wait_ok();
        Some(cluster)
    }

    fn log_file(&self, port: u16) -> PathBuf {
        self.dir.path().join(format!("redis-{port}.log"))
    }

    /// Starts node `i` (again: its `nodes-P.conf` keeps its id and slots) and waits until it answers PING.
    fn launch(&mut self, i: usize) {
        let dir: &Path = self.dir.path();
        let (port, bus) = (self.nodes[i].port, self.nodes[i].bus);
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
            .arg("--cluster-config-file")
            .arg(dir.join(format!("nodes-{port}.conf")))
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_file(port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.nodes[i].child = Some(child);
        for _ in 0..100 {
            if let Ok(mut conn) = sync_connection(port)
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {port} did not answer:\n{}", self.logs());
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Until every node reports `cluster_state:ok` (at most 20 s).
    fn wait_ok(&self) {
        for _ in 0..200 {
            let ok = self.nodes.iter().all(|node| {
                sync_connection(node.port)
                    .and_then(|mut conn| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut conn))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster did not reach cluster_state:ok:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(self.log_file(n.port)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!("--- node {} ---\n{}", n.port, tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `KONTAKT_REDIS_CLUSTER_URLS`: every node as a seed.
    fn urls(&self) -> String {
        self.nodes.iter().map(|n| format!("redis://127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// The port of the node serving `slot` (from `CLUSTER NODES`).
    fn owner(&self, slot: u16) -> u16 {
        let mut conn = sync_connection(self.nodes[0].port).expect("a node");
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut conn).expect("CLUSTER NODES");
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields[1].split(['@', ',']).next().and_then(|a| a.rsplit(':').next()).expect("address");
            for range in fields.iter().skip(8) {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(start), Ok(end)) = (start.parse::<u16>(), end.parse::<u16>())
                    && (start..=end).contains(&slot)
                {
                    return port.parse().expect("port");
                }
            }
        }
        panic!("no node serves slot {slot}:\n{nodes}");
    }

    /// Index of the node listening on `port`.
    fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port == port).expect("a node of this cluster")
    }

    /// Whether `key` exists, asked of the node that owns its slot; checks our slot against `CLUSTER KEYSLOT`.
    async fn exists(&self, key: &str) -> bool {
        let slot = keys::slot(key);
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.owner(slot))).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("the owning node");
        let theirs: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await.expect("KEYSLOT");
        assert_eq!(theirs, slot, "our slot of {key}");
        conn.exists(key).await.expect("EXISTS")
    }

    /// Moves an empty `slot` from the node on port `from` to the one on `to` (`CLUSTER SETSLOT`, as
    /// `redis-cli --cluster reshard` does for a slot without keys) and waits until every node agrees.
    fn move_slot(&self, slot: u16, from: u16, to: u16) {
        let id = |port: u16| -> String {
            let mut conn = sync_connection(port).expect("a node");
            redis::cmd("CLUSTER").arg("MYID").query(&mut conn).expect("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from), id(to));
        let setslot = |port: u16, args: &[&str]| {
            let mut conn = sync_connection(port).expect("a node");
            let _: () = redis::cmd("CLUSTER").arg("SETSLOT").arg(slot).arg(args).query(&mut conn).expect("SETSLOT");
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        for node in &self.nodes {
            setslot(node.port, &["NODE", &to_id]);
        }
        for _ in 0..100 {
            let agreed = self.nodes.iter().all(|node| {
                sync_connection(node.port)
                    .and_then(|mut conn| redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query::<i64>(&mut conn))
                    .is_ok()
            });
            if agreed && self.owner(slot) == to {
                self.wait_ok();
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("slot {slot} did not move to {to}");
    }

    /// Connections subscribed to the sharded `channel`, on the node that owns its slot (`PUBSUB SHARDNUMSUB`).
    async fn shard_subscribers(&self, channel: &str) -> i64 {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.owner(keys::slot(channel)))).expect("client");
        let mut conn = client.get_multiplexed_async_connection().await.expect("the owning node");
        let (_, count): (String, i64) =
            redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel).query_async(&mut conn).await.expect("SHARDNUMSUB");
        count
    }

    /// Polls `shard_subscribers` (at most 5 s) until it is `expected`.
    async fn wait_subscribers(&self, channel: &str, expected: i64) {
        let mut count = -1;
        for _ in 0..50 {
            count = self.shard_subscribers(channel).await;
            if count == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{channel} has {count} subscribers on its node, not {expected}");
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A server on the cluster; `probe_ms` is how long its circuit breaker stays open after a Redis failure.
async fn app_on(cluster: &RedisCluster, backend: Backend, probe_ms: u64) -> Option<TestApp> {
    let urls = cluster.urls();
    spawn_with(backend, |c| {
        c.redis_url = None;
        c.redis_cluster_urls = Some(urls.into());
        c.redis_probe_ms = probe_ms;
        c.profile_cache_ttl_secs = 30;
    })
    .await
}

const PROFILE: &str = "query($id: UUID!) { customer(id: $id) { id identities { kind value }
    touchpoints(first: 5) { edges { node { type } } } } }";

fn reader(app: &TestApp) -> String {
    app.token("acme", &["profiles:read", "touchpoints:read", "pii:read"], "personalization")
}

/// The profile as read now; fails on any error.
async fn profile(app: &TestApp, id: &str) -> Value {
    let data = app.data(&reader(app), PROFILE, json!({ "id": id })).await;
    assert_eq!(data["customer"]["id"], id, "{data}");
    data["customer"].clone()
}

/// The shared cache keys of a customer of `acme` (as `profiles::cache` writes them under the server's prefix).
fn cache_keys(app: &TestApp, id: &str) -> [String; 2] {
    let prefix = &app.config.redis_prefix;
    [format!("{prefix}:cache:{{acme:{id}}}:identities"), format!("{prefix}:cache:{{acme:{id}}}:recent")]
}

/// A customer with a touchpoint and consent to personalization; returns its id.
async fn customer(app: &TestApp, email: &str) -> String {
    let created = record(
        app,
        json!([touchpoint(&format!("k-{email}"), json!([{ "kind": "EMAIL", "value": email }]), "PAGE_VIEW", 1)]),
    )
    .await;
    let id = created["results"][0]["customerId"].as_str().expect("id").to_owned();
    grant(app, &id, "personalization", "GRANTED").await;
    id
}

fn values(profile: &Value) -> Vec<String> {
    let mut values: Vec<String> = profile["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .map(|i| i["value"].as_str().expect("value").to_owned())
        .collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_cache_on_a_redis_cluster_fills_per_customer_slot_and_every_write_drops_it() {
    let Some(cluster) = RedisCluster::start() else { return };
    // A breaker opened by any failed command (a CROSSSLOT among them) would stay open for the whole test, and the
    // cache would stop filling: every fill checked below shows that no command failed.
    let app = app_on(&cluster, Backend::Sqlite, 600_000).await.expect("sqlite always runs");
    let ready: Value = app.client.get(app.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["cache"], json!({ "kind": "redis-cluster", "status": "ok" }), "{ready}");

    // Two customers whose keys live on different nodes.
    let first = customer(&app, "c0@example.com").await;
    let node_of = |id: &str| cluster.owner(keys::slot(&cache_keys(&app, id)[0]));
    let mut second = None;
    for i in 1..20 {
        let email = format!("c{i}@example.com");
        let id = customer(&app, &email).await;
        if node_of(&id) != node_of(&first) {
            second = Some((id, email));
            break;
        }
    }
    let (second, second_email) = second.expect("a customer on another node within 19 tries");
    let (a, b) = (first.as_str(), second.as_str());
    for id in [a, b] {
        let [identities, recent] = cache_keys(&app, id);
        assert_eq!(keys::slot(&identities), keys::slot(&recent), "a customer's keys share a slot");
    }

    // A read fills each customer's keys, on its own node.
    for id in [a, b] {
        let read = profile(&app, id).await;
        assert_eq!(read["touchpoints"]["edges"].as_array().map(Vec::len), Some(1), "{read}");
        for key in cache_keys(&app, id) {
            assert!(cluster.exists(&key).await, "{key} was not filled");
        }
    }
    // Served from the cache now; the same answer.
    assert_eq!(values(&profile(&app, a).await), ["c0@example.com"]);

    // A write to one customer drops its keys only, and the next read is fresh.
    app.data(
        &writer(&app),
        "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { customer { id } } }",
        json!({ "input": { "identities": [{ "kind": "EMAIL", "value": "c0@example.com" },
                                          { "kind": "EMAIL", "value": "c0-new@example.com" }] } }),
    )
    .await;
    for key in cache_keys(&app, a) {
        assert!(!cluster.exists(&key).await, "{key} survived a write to its customer");
    }
    for key in cache_keys(&app, b) {
        assert!(cluster.exists(&key).await, "{key} went with another customer's write");
    }
    assert_eq!(values(&profile(&app, a).await), ["c0-new@example.com", "c0@example.com"], "a fresh read");
    for key in cache_keys(&app, a) {
        assert!(cluster.exists(&key).await, "{key} was not filled again");
    }

    // A merge touches both customers in one write: four keys on two nodes go, one DEL per slot.
    let officer = app.token("acme", &["profiles:read", "profiles:write", "touchpoints:read", "pii:read"], "support");
    app.data(
        &officer,
        "mutation($s: UUID!, $m: UUID!) { mergeCustomers(survivorId: $s, mergedId: $m, note: \"same\") { id } }",
        json!({ "s": a, "m": b }),
    )
    .await;
    for key in cache_keys(&app, a).into_iter().chain(cache_keys(&app, b)) {
        assert!(!cluster.exists(&key).await, "{key} survived the merge");
    }
    let merged = profile(&app, a).await;
    assert!(values(&merged).contains(&second_email), "the survivor has both: {merged}");
    for key in cache_keys(&app, a) {
        assert!(cluster.exists(&key).await, "{key} was not filled after the merge (did the breaker open?)");
    }
    let ready: Value = app.client.get(app.url("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["status"], "ready", "{ready}");
}

/// Writes touchpoints (keys `<key>-0`, `<key>-1`, …) on `app` until a message arrives on `socket`, and answers it.
async fn arrives(app: &TestApp, socket: &mut Socket, key: &str) -> Value {
    let write = async {
        for i in 0..60 {
            let item = touchpoint(
                &format!("{key}-{i}"),
                json!([{ "kind": "EMAIL", "value": "sub@example.com" }]),
                "PAGE_VIEW",
                1,
            );
            record(app, json!([item])).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    // Events of earlier writes (another phase's) may still be queued: skipped.
    let prefix = format!("{key}-");
    let heard = async {
        loop {
            let message = next_json(socket).await.expect("an event");
            let theirs = message["payload"]["data"]["touchpointRecorded"]["idempotencyKey"].as_str();
            if message["type"] != "next" || theirs.is_some_and(|k| k.starts_with(&prefix)) {
                return message;
            }
        }
    };
    tokio::select! {
        message = heard => message,
        () = write => panic!("no event for `{key}` within the writes"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_one_instance_hears_writes_on_another_through_the_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else { return };
    let Some(a) = app_on(&cluster, Backend::Postgres, 1_000).await else {
        eprintln!("skipped: two instances need PostgreSQL (TEST_DATABASE_URL)");
        return;
    };
    let b = a.second_instance().await;
    let officer = a.token("acme", &["profiles:read", "profiles:write", "touchpoints:read", "pii:read"], "support");

    // customerChanges: a subscriber on B hears customers written on A.
    let mut socket = ready_socket(&b, &officer).await;
    let query = "subscription { customerChanges { customerId kind } }";
    send(&mut socket, json!({ "type": "subscribe", "id": "c", "payload": { "query": query } })).await;
    let warm = async {
        for i in 0..40 {
            a.upsert(&officer, json!([{ "kind": "EMAIL", "value": format!("two{i}@example.com") }]), None).await;
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    };
    let heard = tokio::select! {
        first = next_json(&mut socket) => first.expect("an event"),
        () = warm => panic!("B's subscriber heard nothing of A's writes"),
    };
    assert_eq!(heard["type"], "next", "{heard}");
    assert_eq!(heard["payload"]["data"]["customerChanges"]["kind"], "CREATED", "{heard}");

    // touchpointRecorded: the same, for a consenting customer's touchpoints.
    let id = customer(&a, "sub@example.com").await;
    let engine = b.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let mut touchpoints = ready_socket(&b, &engine).await;
    let query = "subscription { touchpointRecorded { idempotencyKey customerId } }";
    send(&mut touchpoints, json!({ "type": "subscribe", "id": "t", "payload": { "query": query } })).await;
    let heard = arrives(&a, &mut touchpoints, "two").await;
    assert_eq!(heard["type"], "next", "{heard}");
    assert_eq!(heard["payload"]["data"]["touchpointRecorded"]["customerId"], id.as_str(), "{heard}");

    // The cache is shared too: B reads (and fills), A writes, B's next read is fresh.
    assert_eq!(values(&profile(&b, &id).await), ["sub@example.com"]);
    for key in cache_keys(&b, &id) {
        assert!(cluster.exists(&key).await, "{key} was not filled by B");
    }
    a.data(
        &writer(&a),
        "mutation($input: UpsertCustomerInput!) { upsertCustomer(input: $input) { customer { id } } }",
        json!({ "input": { "identities": [{ "kind": "EMAIL", "value": "sub@example.com" },
                                          { "kind": "EMAIL", "value": "sub-2@example.com" }] } }),
    )
    .await;
    assert_eq!(values(&profile(&b, &id).await), ["sub-2@example.com", "sub@example.com"], "B reads A's write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_the_redis_cluster_comes_back_when_its_node_does() {
    let Some(mut cluster) = RedisCluster::start() else { return };
    let app = app_on(&cluster, Backend::Sqlite, 1_000).await.expect("sqlite always runs");
    let engine = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let mut socket = ready_socket(&app, &engine).await;
    let query = "subscription { touchpointRecorded { idempotencyKey } }";
    send(&mut socket, json!({ "type": "subscribe", "id": "t", "payload": { "query": query } })).await;
    customer(&app, "sub@example.com").await;
    let before = arrives(&app, &mut socket, "before").await;
    assert_eq!(before["type"], "next", "{before}");
    // A sharded subscription, on the node that owns the channel's slot; a second local subscriber shares it.
    let channel = format!("{}:events:touchpoints:acme", app.config.redis_prefix);
    assert_eq!(cluster.shard_subscribers(&channel).await, 1);
    let mut other = ready_socket(&app, &engine).await;
    send(&mut other, json!({ "type": "subscribe", "id": "t", "payload": { "query": query } })).await;
    assert_eq!(arrives(&app, &mut other, "shared").await["type"], "next");
    assert_eq!(cluster.shard_subscribers(&channel).await, 1, "one Redis subscription per channel and instance");
    drop(other);

    // The node that serves the tenant's channel goes away and comes back (same id and slots, no data).
    let node = cluster.index_of(cluster.owner(keys::slot(&channel)));
    cluster.kill(node);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.launch(node);
    cluster.wait_ok();
    let after = arrives(&app, &mut socket, "after").await;
    assert_eq!(after["type"], "next", "the subscription was ended instead of restored: {after}");
    let key = after["payload"]["data"]["touchpointRecorded"]["idempotencyKey"].as_str().expect("key");
    assert!(key.starts_with("after-"), "{after}");
    assert_eq!(cluster.shard_subscribers(&channel).await, 1, "subscribed again on the restarted node");

    // The last local subscriber gone, the instance unsubscribes the channel.
    send(&mut socket, json!({ "type": "complete", "id": "t" })).await;
    cluster.wait_subscribers(&channel, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_the_redis_cluster_follows_its_channel_to_another_node() {
    let Some(cluster) = RedisCluster::start() else { return };
    let app = app_on(&cluster, Backend::Sqlite, 1_000).await.expect("sqlite always runs");
    let engine = app.token("acme", &["profiles:read", "touchpoints:read"], "personalization");
    let mut socket = ready_socket(&app, &engine).await;
    let query = "subscription { touchpointRecorded { idempotencyKey } }";
    send(&mut socket, json!({ "type": "subscribe", "id": "t", "payload": { "query": query } })).await;
    customer(&app, "sub@example.com").await;
    assert_eq!(arrives(&app, &mut socket, "before").await["type"], "next");

    // The channel's slot moves to another node (as resharding moves it): Redis ends the shard subscriptions of the
    // slot with a `sunsubscribe` push.
    let channel = format!("{}:events:touchpoints:acme", app.config.redis_prefix);
    let slot = keys::slot(&channel);
    let from = cluster.owner(slot);
    let to = cluster.nodes.iter().map(|n| n.port).find(|p| *p != from).expect("another node");
    cluster.move_slot(slot, from, to);
    assert_eq!(cluster.owner(slot), to);

    let after = arrives(&app, &mut socket, "after").await;
    assert_eq!(after["type"], "next", "the subscription was ended instead of moved: {after}");
    assert_eq!(cluster.shard_subscribers(&channel).await, 1, "subscribed on the slot's new node");
}
