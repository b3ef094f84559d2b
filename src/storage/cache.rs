//! A small cache interface with a Redis implementation (shared by instances) and an in-process one (moka).
use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use redis::{AsyncCommands, aio::ConnectionManager};

use super::breaker::BreakerError;

/// Byte values under string keys. Implementations add the installation's prefix; callers pass bare keys.
/// Failures are logged and treated as a miss: the database stays the truth.
#[async_trait]
pub trait Cache: Send + Sync {
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration);
    /// Drops these keys (one round trip).
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

pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    /// Shared with the pub/sub publisher: one view of whether Redis answers.
    breaker: std::sync::Arc<super::breaker::Breaker>,
}

impl RedisCache {
    pub fn new(conn: ConnectionManager, prefix: &str, breaker: std::sync::Arc<super::breaker::Breaker>) -> Self {
        RedisCache { conn, prefix: format!("{prefix}:cache:"), breaker }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
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
        let mut conn = self.conn.clone();
        let keys: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        // A delete that cannot reach Redis leaves an entry to its TTL; the profile cache is safe anyway, since every
        // entry carries the consent version it was built under and a read compares it with the database's.
        match self.breaker.call(conn.del::<_, ()>(keys)).await {
            Ok(()) | Err(BreakerError::Open(_)) => {}
            Err(err) => tracing::warn!(error = %err, "redis delete failed"),
        }
    }
    async fn ping(&self) -> anyhow::Result<()> {
        // Readiness asks Redis itself (bounded), not the breaker's view.
        let mut conn = self.conn.clone();
        let ping = redis::cmd("PING");
        let ping = ping.query_async::<String>(&mut conn);
        tokio::time::timeout(Duration::from_secs(1), ping)
            .await
            .map_err(|_| anyhow::anyhow!("redis did not answer PING in 1 s"))??;
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "redis"
    }
}
