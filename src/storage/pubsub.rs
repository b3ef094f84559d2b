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
    breaker: std::sync::Arc<super::breaker::Breaker>,
    /// How long a lost subscription waits before it subscribes again.
    resubscribe_after: std::time::Duration,
}

impl RedisPubSub {
    pub fn new(
        client: redis::Client,
        publisher: ConnectionManager,
        prefix: &str,
        breaker: std::sync::Arc<super::breaker::Breaker>,
        resubscribe_after: std::time::Duration,
    ) -> Self {
        RedisPubSub { client, publisher, prefix: format!("{prefix}:events:"), breaker, resubscribe_after }
    }

    async fn listen(client: &redis::Client, channel: &str) -> anyhow::Result<BoxStream<'static, String>> {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move { msg.get_payload::<String>().ok() }).boxed())
    }
}

#[async_trait]
impl PubSub for RedisPubSub {
    async fn publish(&self, topic: &str, payload: String) -> anyhow::Result<()> {
        let mut conn = self.publisher.clone();
        self.breaker.call(conn.publish::<_, _, ()>(format!("{}{topic}", self.prefix), payload)).await?;
        Ok(())
    }

    /// A subscription that outlives Redis: when the connection drops (Redis restarted, a network cut), it subscribes
    /// again every `resubscribe_after` until Redis answers, and goes on. Messages published meanwhile are not
    /// delivered (pub/sub keeps nothing); streams that need them replay from their own store (`derivedChanges` from
    /// the outbox by position). Only the first subscription's failure is an error.
    async fn subscribe(&self, topic: &str) -> anyhow::Result<BoxStream<'static, String>> {
        let channel = format!("{}{topic}", self.prefix);
        let first = Self::listen(&self.client, &channel).await?;
        let (client, pause) = (self.client.clone(), self.resubscribe_after);
        let stream = futures_util::stream::unfold(Some(first), move |mut current| {
            let (client, channel) = (client.clone(), channel.clone());
            async move {
                loop {
                    if let Some(messages) = current.as_mut() {
                        if let Some(message) = messages.next().await {
                            return Some((message, current));
                        }
                        tracing::warn!(channel = %channel, "redis subscription lost; subscribing again when Redis answers");
                        metrics::counter!("kontakt_pubsub_resubscribes_total").increment(1);
                        current = None;
                    }
                    tokio::time::sleep(pause).await;
                    if let Ok(messages) = Self::listen(&client, &channel).await {
                        tracing::info!(channel = %channel, "redis subscription restored");
                        current = Some(messages);
                    }
                }
            }
        });
        Ok(stream.boxed())
    }
}
