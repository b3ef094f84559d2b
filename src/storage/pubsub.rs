//! Publish/subscribe between instances: Redis pub/sub when configured (one server, or sharded pub/sub on a Redis
//! Cluster), a tokio broadcast channel otherwise.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures_util::{StreamExt, stream::BoxStream};
use redis::{AsyncCommands, PushInfo, PushKind, aio::ConnectionManager, cluster_async::ClusterConnection};
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

/// Pub/sub on a Redis Cluster: sharded pub/sub (`SPUBLISH` / `SSUBSCRIBE`, Redis 7), so a message goes only to the
/// node that owns its channel's slot instead of being broadcast over the whole cluster bus as `PUBLISH` would be.
///
/// Subscriptions are RESP3 pushes on one cluster connection per instance: the redis crate's cluster client routes
/// each `SSUBSCRIBE` to the channel's node, and when a node's connection drops it reconnects and subscribes that
/// node's channels again by itself. Local subscribers of a channel share its one Redis subscription: the push
/// handler ([`Channels::on_push`]) hands each message to a broadcast channel per Redis channel, and the last local
/// subscriber to go unsubscribes. When Redis itself ends a subscription (its slot moved to another node: a
/// `sunsubscribe` push the client takes as final), a task subscribes the channel again, every `resubscribe_after`
/// until it succeeds. Messages published meanwhile are not delivered (as on one server).
pub struct ClusterPubSub {
    publisher: ClusterConnection,
    subscriber: ClusterConnection,
    channels: Arc<Channels>,
    prefix: String,
    breaker: Arc<super::breaker::Breaker>,
    /// How long a `SSUBSCRIBE` or `SUNSUBSCRIBE` may take.
    timeout: Duration,
    /// Subscribes again the channels Redis unsubscribed; stopped with this.
    resubscriber: tokio::task::JoinHandle<()>,
}

/// The Redis channels this instance is subscribed to, each with its local subscribers.
pub struct Channels {
    senders: Mutex<HashMap<String, broadcast::Sender<String>>>,
    /// Held while a channel is subscribed or unsubscribed in Redis, so the two never cross for one channel.
    changing: tokio::sync::Mutex<()>,
    /// Channels Redis unsubscribed while they had local subscribers, for [`ClusterPubSub`] to subscribe again.
    ended: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Channels {
    /// The channel registry, and the receiving end of the channels Redis ends (for [`ClusterPubSub::new`]).
    pub fn new() -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (ended, rx) = tokio::sync::mpsc::unbounded_channel();
        (Arc::new(Channels { senders: Mutex::default(), changing: tokio::sync::Mutex::new(()), ended }), rx)
    }

    fn senders(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<String>>> {
        self.senders.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn has_subscribers(&self, channel: &str) -> bool {
        self.senders().get(channel).is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// The cluster connection's push handler: runs on the connection's task, so it only hands things on.
    pub fn on_push(&self, push: PushInfo) {
        let mut data = push.data.into_iter();
        match push.kind {
            PushKind::SMessage | PushKind::Message => {
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else { return };
                let (Ok(channel), Ok(payload)) =
                    (redis::from_redis_value::<String>(channel), redis::from_redis_value::<String>(payload))
                else {
                    return;
                };
                if let Some(tx) = self.senders().get(&channel) {
                    // No local subscriber left (it is being unsubscribed) is not an error.
                    let _ = tx.send(payload);
                }
            }
            // Our own SUNSUBSCRIBE removed the channel first; one that still has subscribers was ended by Redis (or
            // raced a new subscriber, and subscribing it again is harmless).
            PushKind::SUnsubscribe => {
                let Some(Ok(channel)) = data.next().map(redis::from_redis_value::<String>) else { return };
                if self.has_subscribers(&channel) {
                    tracing::warn!(channel = %channel, "redis cluster ended a subscription (its slot moved?); subscribing again");
                    metrics::counter!("kontakt_pubsub_resubscribes_total").increment(1);
                    let _ = self.ended.send(channel);
                }
            }
            PushKind::Disconnection if !self.senders().is_empty() => {
                tracing::warn!(
                    "redis cluster: a node's connection dropped; its subscriptions are restored when it answers"
                );
                metrics::counter!("kontakt_pubsub_resubscribes_total").increment(1);
            }
            _ => {}
        }
    }
}

/// Unsubscribes the channel in Redis when the last local subscriber has gone (dropped with a subscription's stream).
struct LastOut {
    channel: String,
    channels: Arc<Channels>,
    subscriber: ClusterConnection,
    timeout: Duration,
}

impl Drop for LastOut {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (channel, channels, mut subscriber, timeout) =
            (std::mem::take(&mut self.channel), self.channels.clone(), self.subscriber.clone(), self.timeout);
        runtime.spawn(async move {
            let _changing = channels.changing.lock().await;
            {
                let mut senders = channels.senders();
                // A new subscriber may have come meanwhile: it keeps the subscription.
                if senders.get(&channel).is_none_or(|tx| tx.receiver_count() > 0) {
                    return;
                }
                senders.remove(&channel);
            }
            match tokio::time::timeout(timeout, subscriber.sunsubscribe(&channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, channel = %channel, "redis cluster: SUNSUBSCRIBE failed"),
                Err(_) => tracing::warn!(channel = %channel, "redis cluster: SUNSUBSCRIBE timed out"),
            }
        });
    }
}

impl ClusterPubSub {
    /// `subscriber` must be a RESP3 cluster connection whose push sender calls `channels.on_push`; `ended` is the
    /// receiver [`Channels::new`] gave with them.
    pub fn new(
        publisher: ClusterConnection,
        subscriber: ClusterConnection,
        (channels, ended): (Arc<Channels>, tokio::sync::mpsc::UnboundedReceiver<String>),
        prefix: &str,
        breaker: Arc<super::breaker::Breaker>,
        timeout: Duration,
        resubscribe_after: Duration,
    ) -> Self {
        let resubscriber =
            tokio::spawn(Self::resubscribe(ended, channels.clone(), subscriber.clone(), timeout, resubscribe_after));
        ClusterPubSub {
            publisher,
            subscriber,
            channels,
            prefix: format!("{prefix}:events:"),
            breaker,
            timeout,
            resubscriber,
        }
    }

    /// Subscribes each ended channel again, every `pause` until it succeeds or its last local subscriber has gone.
    async fn resubscribe(
        mut ended: tokio::sync::mpsc::UnboundedReceiver<String>,
        channels: Arc<Channels>,
        mut subscriber: ClusterConnection,
        timeout: Duration,
        pause: Duration,
    ) {
        while let Some(channel) = ended.recv().await {
            loop {
                tokio::time::sleep(pause).await;
                let _changing = channels.changing.lock().await;
                if !channels.has_subscribers(&channel) {
                    break;
                }
                match tokio::time::timeout(timeout, subscriber.ssubscribe(&channel)).await {
                    Ok(Ok(())) => {
                        tracing::info!(channel = %channel, "redis cluster subscription restored");
                        break;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, channel = %channel, "redis cluster: SSUBSCRIBE failed")
                    }
                    Err(_) => tracing::warn!(channel = %channel, "redis cluster: SSUBSCRIBE timed out"),
                }
            }
        }
    }
}

impl Drop for ClusterPubSub {
    fn drop(&mut self) {
        self.resubscriber.abort();
    }
}

#[async_trait]
impl PubSub for ClusterPubSub {
    async fn publish(&self, topic: &str, payload: String) -> anyhow::Result<()> {
        let mut conn = self.publisher.clone();
        self.breaker.call(conn.spublish::<_, _, ()>(format!("{}{topic}", self.prefix), payload)).await?;
        Ok(())
    }

    /// The first local subscriber of a channel subscribes it in Redis (an error if that fails); later ones join it.
    async fn subscribe(&self, topic: &str) -> anyhow::Result<BoxStream<'static, String>> {
        let channel = format!("{}{topic}", self.prefix);
        let rx = {
            let _changing = self.channels.changing.lock().await;
            let existing = self.channels.senders().get(&channel).map(broadcast::Sender::subscribe);
            match existing {
                Some(rx) => rx,
                None => {
                    // Registered before SSUBSCRIBE, so nothing pushed right after the subscription is dropped.
                    let (tx, rx) = broadcast::channel(1024);
                    self.channels.senders().insert(channel.clone(), tx);
                    let mut conn = self.subscriber.clone();
                    let subscribed = match tokio::time::timeout(self.timeout, conn.ssubscribe(&channel)).await {
                        Ok(result) => result.map_err(anyhow::Error::from),
                        Err(_) => Err(anyhow::anyhow!("redis cluster: SSUBSCRIBE timed out after {:?}", self.timeout)),
                    };
                    if let Err(err) = subscribed {
                        self.channels.senders().remove(&channel);
                        return Err(err);
                    }
                    rx
                }
            }
        };
        let last_out = LastOut {
            channel,
            channels: self.channels.clone(),
            subscriber: self.subscriber.clone(),
            timeout: self.timeout,
        };
        Ok(BroadcastStream::new(rx)
            .filter_map(move |message| {
                let _keep = &last_out;
                async move { message.ok() }
            })
            .boxed())
    }
}
