//! Publish/subscribe between instances: Redis pub/sub when configured, a tokio broadcast channel otherwise.
use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use futures_util::{StreamExt, stream::BoxStream};
use redis::{AsyncCommands, aio::ConnectionManager};
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// Topics are bare names; implementations add the installation's prefix.
#[async_trait]
pub trait PubSub: Send + Sync {
    async fn publish(&self, topic: &str, payload: String) -> anyhow::Result<()>;
    async fn subscribe(&self, topic: &str) -> anyhow::Result<BoxStream<'static, String>>;
}

#[derive(Default)]
pub struct LocalPubSub {
    topics: Mutex<HashMap<String, broadcast::Sender<String>>>,
}

impl LocalPubSub {
    fn sender(&self, topic: &str) -> broadcast::Sender<String> {
        let mut topics = self.topics.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Drop topics nobody listens to any more, so the map does not grow without bound.
        topics.retain(|_, tx| tx.receiver_count() > 0);
        topics.entry(topic.to_owned()).or_insert_with(|| broadcast::channel(1024).0).clone()
    }
}

#[async_trait]
impl PubSub for LocalPubSub {
    async fn publish(&self, topic: &str, payload: String) -> anyhow::Result<()> {
        // No subscriber is not an error.
        let _ = self.sender(topic).send(payload);
        Ok(())
    }
    async fn subscribe(&self, topic: &str) -> anyhow::Result<BoxStream<'static, String>> {
        let rx = self.sender(topic).subscribe();
        Ok(BroadcastStream::new(rx).filter_map(|m| async move { m.ok() }).boxed())
    }
}

pub struct RedisPubSub {
    client: redis::Client,
    publisher: ConnectionManager,
    prefix: String,
}

impl RedisPubSub {
    pub fn new(client: redis::Client, publisher: ConnectionManager, prefix: &str) -> Self {
        RedisPubSub { client, publisher, prefix: format!("{prefix}:events:") }
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, topic: &str, payload: String) -> anyhow::Result<()> {
        let mut conn = self.publisher.clone();
        conn.publish::<_, _, ()>(format!("{}{topic}", self.prefix), payload).await?;
        Ok(())
    }
    async fn subscribe(&self, topic: &str) -> anyhow::Result<BoxStream<'static, String>> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(format!("{}{topic}", self.prefix)).await?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move { msg.get_payload::<String>().ok() }).boxed())
    }
}
