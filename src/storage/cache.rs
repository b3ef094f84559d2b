//! A small cache interface with a Redis implementation (shared by instances; one server or a Redis Cluster) and an
//! in-process one (moka).
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{
    AsyncCommands,
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
};

use super::{breaker::BreakerError, keys};

/// Byte values under string keys. Implementations add the installation's prefix; callers pass bare keys.
/// Failures are logged and treated as a miss: the database stays the truth.
///
/// Keys that belong together carry the same hash tag (`{…}`, see [`keys`]), so that a Redis Cluster keeps them on
/// one slot: callers tag a customer's keys with its tenant and id (`{acme:0190…}:identities`).
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration);
    /// Drops these keys: one round trip on one Redis server; on a Redis Cluster one `DEL` per hash slot (keys of
    /// one customer share a slot), sent at once, so no `DEL` ever spans slots (`CROSSSLOT`).
    async fn delete(&self, keys: &[String]);
    /// Checks the backend answers (for `/readyz`).
    async fn ping(&self) -> anyhow::Result<()>;
    fn kind(&self) -> &'static str;
}

pub struct MemoryCache {
    entries: moka::future::Cache<String, (Arc<Vec<u8>>, Duration)>,
}

struct PerEntryTtl;

impl moka::Expiry<String, (Arc<Vec<u8>>, Duration)> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &(Arc<Vec<u8>>, Duration),
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.1)
    }
}

impl MemoryCache {
    pub fn new(max_entries: u64) -> Self {
        MemoryCache {
            entries: moka::future::Cache::builder().max_capacity(max_entries).expire_after(PerEntryTtl).build(),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.entries.get(key).await.map(|(v, _)| v.as_ref().clone())
    }
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        self.entries.insert(key.to_owned(), (Arc::new(value), ttl)).await;
    }
    async fn delete(&self, keys: &[String]) {
        for key in keys {
            self.entries.invalidate(key).await;
        }
    }
    async fn ping(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "memory"
    }
}

/// Redis as the shared cache: one server through a [`ConnectionManager`], or a Redis Cluster through the cluster
/// client's [`ClusterConnection`] (which routes each command to the node owning its key's slot). Every command goes
/// through the circuit breaker, in both forms.
pub struct RedisCache<C = ConnectionManager> {
    conn: C,
    prefix: String,
    /// Shared with the pub/sub publisher: one view of whether Redis answers.
    breaker: Arc<super::breaker::Breaker>,
    /// A Redis Cluster: multi-key commands are split by hash slot.
    cluster: bool,
}

impl RedisCache<ConnectionManager> {
    pub fn new(conn: ConnectionManager, prefix: &str, breaker: Arc<super::breaker::Breaker>) -> Self {
        RedisCache { conn, prefix: format!("{prefix}:cache:"), breaker, cluster: false }
    }
}

impl RedisCache<ClusterConnection> {
    /// On a Redis Cluster. The prefix holds no hash tag (`Config::check`), so a key's slot is its caller's tag's.
    pub fn cluster(conn: ClusterConnection, prefix: &str, breaker: Arc<super::breaker::Breaker>) -> Self {
        RedisCache { conn, prefix: format!("{prefix}:cache:"), breaker, cluster: true }
    }
}

impl<C> RedisCache<C> {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

/// Keys grouped by their Redis Cluster hash slot, in slot order (each group can be one `DEL`).
fn by_slot(keys: Vec<String>) -> Vec<Vec<String>> {
    let mut slots: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for key in keys {
        slots.entry(keys::slot(&key)).or_default().push(key);
    }
    slots.into_values().collect()
}

#[async_trait]
impl<C> Cache for RedisCache<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let mut conn = self.conn.clone();
        match self.breaker.call(conn.get::<_, Option<Vec<u8>>>(self.key(key))).await {
            Ok(value) => value,
            Err(BreakerError::Open(_)) => None,
            Err(err) => {
                tracing::warn!(error = %err, "redis get failed; treating as a miss");
                None
            }
        }
    }
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let mut conn = self.conn.clone();
        let secs = ttl.as_secs().max(1);
        match self.breaker.call(conn.set_ex::<_, _, ()>(self.key(key), value, secs)).await {
            Ok(()) | Err(BreakerError::Open(_)) => {}
            Err(err) => tracing::warn!(error = %err, "redis set failed"),
        }
    }
    async fn delete(&self, keys: &[String]) {
        if keys.is_empty() {
            return;
        }
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        // One server: one DEL. A cluster: one DEL per slot, all sent at once and bounded together by the breaker.
        let groups = if self.cluster { by_slot(keys) } else { vec![keys] };
        let deletes = groups.into_iter().map(|keys| {
            let mut conn = self.conn.clone();
            async move { conn.del::<_, ()>(keys).await }
        });
        // A delete that cannot reach Redis leaves an entry to its TTL; the profile cache is safe anyway, since every
        // entry carries the consent version it was built under and a read compares it with the database's.
        match self.breaker.call(futures_util::future::try_join_all(deletes)).await {
            Ok(_) | Err(BreakerError::Open(_)) => {}
            Err(err) => tracing::warn!(error = %err, "redis delete failed"),
        }
    }
    async fn ping(&self) -> anyhow::Result<()> {
        // Readiness asks Redis itself (bounded), not the breaker's view. On a cluster the client sends PING to every
        // node and succeeds only if all answer.
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<String>(&mut conn);
        tokio::time::timeout(Duration::from_secs(1), ping)
            .await
            .map_err(|_| anyhow::anyhow!("redis did not answer PING in 1 s"))??;
        Ok(())
    }
    fn kind(&self) -> &'static str {
        if self.cluster { "redis-cluster" } else { "redis" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_is_split_by_slot_and_a_customer_stays_whole() {
        let keys = |tag: &str| [format!("k:cache:{{{tag}}}:identities"), format!("k:cache:{{{tag}}}:recent")];
        // Two customers whose tags hash to different slots.
        let (a, b) = ("acme:0190a", "acme:0190b");
        assert_ne!(super::keys::slot(&keys(a)[0]), super::keys::slot(&keys(b)[0]));
        let groups = by_slot(keys(a).into_iter().chain(keys(b)).collect());
        assert_eq!(groups.len(), 2, "{groups:?}");
        for group in &groups {
            assert_eq!(group.len(), 2, "a customer's two keys in one DEL: {groups:?}");
            assert!(group.iter().all(|k| super::keys::slot(k) == super::keys::slot(&group[0])));
        }
        assert_eq!(by_slot(keys(a).to_vec()).len(), 1);
        assert!(by_slot(Vec::new()).is_empty());
    }
}
