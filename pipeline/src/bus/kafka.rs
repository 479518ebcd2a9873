//! The Kafka bus (rdkafka).
//!
//! Producer: idempotent, `acks=all`, compressed at the Kafka level;
//! [`BusProducer::publish`] resolves once the broker acknowledged the
//! message, which is when ingest acknowledges its client.
//!
//! Consumer: one group per pipeline role. Offsets are committed by hand and
//! only up to the lowest offset whose envelope every sink has not yet
//! confirmed ([`OffsetTracker`]), so a crash replays at most the
//! unconfirmed tail; sinks are idempotent on batch ids, so the replay
//! changes nothing. On revocation the confirmed offsets of the revoked
//! partitions are committed synchronously and late confirmations for them
//! are ignored (the new owner replays them). A message that cannot be
//! decoded goes to the dead-letter topic with the reason, and its offset is
//! then treated as done: it never blocks its partition. A delivery whose
//! sink write failed is retried with backoff until it succeeds; while more
//! than `max_retrying` deliveries wait, the consumer stops fetching, which
//! bounds memory and leaves the backlog in Kafka.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use schemas::{Envelope, EnvelopeHeaders, RecordKind};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::{Acker, BusConsumer, BusProducer, Delivery};
use crate::error::{Error, Result};
use crate::metrics::PipelineMetrics;

/// `[bus.kafka]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Topics are `<prefix>.<kind>.v1`; the dead-letter topic is
    /// `<prefix>.deadletter.v1`.
    pub topic_prefix: String,
    /// Partitions of topics created at start (existing topics are kept).
    pub partitions: i32,
    pub replication_factor: i32,
    /// Consumer group of the pipeline role.
    pub group_id: String,
    /// Static group membership (KIP-345): a stable name per pipeline
    /// process (a StatefulSet pod name, a systemd instance). A restarted
    /// process with the same name takes its partitions back at once instead
    /// of waiting for the session timeout and a rebalance of the whole group.
    /// Two live processes must never share one.
    pub group_instance_id: Option<String>,
    /// `zstd` or `lz4` (Kafka-level; the Arrow payload is not compressed).
    pub compression: String,
    /// Producer linger: batches messages for this long.
    pub linger_ms: u32,
    /// How long a publish may take, retries included, before it fails.
    pub delivery_timeout_ms: u32,
    /// Deliveries waiting for a sink retry before fetching pauses.
    pub max_retrying: usize,
    /// How long the group waits for a silent member (crashed, killed,
    /// partitioned away) before its partitions move to the others. Kafka's
    /// client default is 45 s; 10 s (Vector's default) bounds the stall after
    /// a crash. Heartbeats go every third of it.
    pub session_timeout_ms: u32,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …);
    /// `securenet config` shows secret ones (`sasl.password`…) redacted.
    pub options: schemas::secret::ClientOptions,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "securenet".into(),
            partitions: 6,
            replication_factor: 1,
            group_id: "securenet-pipeline".into(),
            group_instance_id: None,
            compression: "zstd".into(),
            linger_ms: 5,
            delivery_timeout_ms: 30_000,
            max_retrying: 8,
            session_timeout_ms: 10_000,
            options: Default::default(),
        }
    }
}

impl KafkaConfig {
    pub fn topic(&self, kind: RecordKind) -> String {
        format!("{}.{kind}.v1", self.topic_prefix)
    }

    pub fn dead_letter_topic(&self) -> String {
        format!("{}.deadletter.v1", self.topic_prefix)
    }

    /// The librdkafka settings every client of the bus shares.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in self.options.iter() {
            c.set(k, v);
        }
        c
    }

    /// A producer with the bus's settings (idempotent, acks=all, the
    /// configured compression); benchmarks use it as the raw baseline.
    pub fn producer(&self) -> Result<FutureProducer> {
        let mut c = self.client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &self.compression)
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            // Envelopes are whole batches; allow large ones.
            .set("message.max.bytes", (64 << 20).to_string());
        c.create().map_err(kafka_error)
    }

    pub fn validate(&self) -> Result<()> {
        if !matches!(self.compression.as_str(), "zstd" | "lz4" | "none") {
            return Err(Error::Config(format!(
                "bus.kafka.compression {:?}: expected zstd, lz4 or none",
                self.compression
            )));
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err(Error::Config(
                "bus.kafka.partitions and replication_factor must be at least 1".into(),
            ));
        }
        if self
            .group_instance_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return Err(Error::Config(
                "bus.kafka.group_instance_id must not be empty (leave it unset for dynamic membership)"
                    .into(),
            ));
        }
        // librdkafka's range; brokers also enforce their own
        // group.min/max.session.timeout.ms (6 s to 30 min by default).
        if !(1_000..=3_600_000).contains(&self.session_timeout_ms) {
            return Err(Error::Config(format!(
                "bus.kafka.session_timeout_ms {}: expected 1000 to 3600000",
                self.session_timeout_ms
            )));
        }
        Ok(())
    }
}

fn kafka_error(e: KafkaError) -> Error {
    Error::Bus(e.to_string())
}

/// Creates every topic (one per kind, plus the dead-letter topic) that does
/// not exist yet. Idempotent.
pub async fn ensure_topics(config: &KafkaConfig) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = config.client().create().map_err(kafka_error)?;
    let mut names: Vec<String> = RecordKind::ALL
        .iter()
        .map(|k| config.topic(*k))
        .chain([config.dead_letter_topic()])
        .collect();
    // Only create what is missing: clusters often deny CreateTopics to
    // applications whose topics an operator made. (A blocking call, once at
    // start-up.)
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka_error)?;
    names.retain(|n| {
        !metadata
            .topics()
            .iter()
            .any(|t| t.name() == n && t.error().is_none())
    });
    if names.is_empty() {
        return Ok(());
    }
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n,
                config.partitions,
                TopicReplication::Fixed(config.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(&topics, &opts)
        .await
        .map_err(kafka_error)?
    {
        match result {
            Ok(name) => info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::Bus(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(())
}

/// Publishes envelopes; cheap to clone.
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer,
    config: Arc<KafkaConfig>,
}

impl KafkaProducer {
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            producer: config.producer()?,
            config: Arc::new(config.clone()),
        })
    }

    /// Waits until every queued message is delivered (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        self.producer.flush(timeout).map_err(kafka_error)
    }
}

fn headers_of(headers: &EnvelopeHeaders) -> OwnedHeaders {
    headers
        .to_pairs()
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value.as_str()),
            })
        })
}

impl BusProducer for KafkaProducer {
    fn publish(&self, envelope: Envelope) -> BoxFuture<'_, Result<()>> {
        async move {
            let payload = envelope.encode()?;
            let topic = self.config.topic(envelope.kind());
            let key = envelope.tenant().as_str();
            let record = FutureRecord::to(&topic)
                .key(key)
                .payload(payload.as_ref())
                .headers(headers_of(envelope.headers()));
            // The queue timeout bounds the wait for room in librdkafka's
            // local queue; `message.timeout.ms` bounds the delivery itself.
            match self
                .producer
                .send(
                    record,
                    Duration::from_millis(self.config.delivery_timeout_ms.into()),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err((e, _)) => {
                    warn!(error = %e, %topic, batch_id = %envelope.batch_id(), "publish failed");
                    Err(match e {
                        KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                            Error::Overloaded
                        }
                        e => kafka_error(e),
                    })
                }
            }
        }
        .boxed()
    }

    fn depth(&self) -> usize {
        usize::try_from(self.producer.in_flight_count()).unwrap_or(0)
    }
}

/// Per partition: offsets handed out and not yet settled. The committable
/// offset is the lowest unsettled one (or one past the highest seen).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
    epoch: u64,
}

#[derive(Debug)]
struct Partition {
    epoch: u64,
    pending: BTreeSet<i64>,
    next: i64,
    committed: i64,
}

/// Identifies one handed-out offset, including the assignment epoch so a
/// confirmation that arrives after its partition was revoked is ignored.
#[derive(Debug, Clone)]
pub struct Ticket {
    topic: String,
    partition: i32,
    offset: i64,
    epoch: u64,
}

impl OffsetTracker {
    /// Records that `offset` was handed out.
    pub fn start(&mut self, topic: &str, partition: i32, offset: i64) -> Ticket {
        let key = (topic.to_string(), partition);
        let epoch = match self.partitions.get_mut(&key) {
            Some(p) => {
                p.pending.insert(offset);
                p.next = p.next.max(offset + 1);
                p.epoch
            }
            None => {
                self.epoch += 1;
                self.partitions.insert(
                    key,
                    Partition {
                        epoch: self.epoch,
                        pending: BTreeSet::from([offset]),
                        next: offset + 1,
                        committed: offset,
                    },
                );
                self.epoch
            }
        };
        Ticket {
            topic: topic.to_string(),
            partition,
            offset,
            epoch,
        }
    }

    /// Marks the ticket's offset done; returns the new commit position of
    /// its partition if it advanced.
    pub fn finish(&mut self, ticket: &Ticket) -> Option<i64> {
        let p = self
            .partitions
            .get_mut(&(ticket.topic.clone(), ticket.partition))?;
        if p.epoch != ticket.epoch {
            return None;
        }
        p.pending.remove(&ticket.offset);
        let position = p.pending.first().copied().unwrap_or(p.next);
        (position > p.committed).then(|| {
            p.committed = position;
            position
        })
    }

    /// Forgets revoked partitions; returns their last commit positions.
    pub fn revoke(&mut self, revoked: &[(String, i32)]) -> Vec<(String, i32, i64)> {
        revoked
            .iter()
            .filter_map(|key| {
                let p = self.partitions.remove(key)?;
                let position = p.pending.first().copied().unwrap_or(p.next);
                Some((key.0.clone(), key.1, position))
            })
            .collect()
    }

    /// Commit positions of every partition (shutdown).
    pub fn positions(&self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter()
            .map(|((t, part), p)| {
                (
                    t.clone(),
                    *part,
                    p.pending.first().copied().unwrap_or(p.next),
                )
            })
            .collect()
    }
}

fn tpl(positions: &[(String, i32, i64)]) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        // Offsets were produced by this consumer for this partition; adding
        // cannot fail for a valid offset.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    list
}

/// Commits on revocation, before the partitions move to another member;
/// turns librdkafka's statistics into the consumer-lag gauge.
pub struct RebalanceContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    lag: prometheus::IntGaugeVec,
    assigned: prometheus::IntGauge,
}

impl ClientContext for RebalanceContext {
    /// Every `statistics.interval.ms`: the lag of the partitions this member
    /// consumes, per record kind (`<prefix>.<kind>.v1` → `kind`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            let lag: i64 = t
                .partitions
                .iter()
                .filter(|(p, part)| **p >= 0 && part.consumer_lag >= 0)
                .map(|(_, part)| part.consumer_lag)
                .sum();
            let kind = topic.rsplit('.').nth(1).unwrap_or(topic);
            self.lag.with_label_values(&[kind]).set(lag);
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let revoked: Vec<(String, i32)> = list
                .elements()
                .iter()
                .map(|e| (e.topic().to_string(), e.partition()))
                .collect();
            let positions = lock(&self.tracker).revoke(&revoked);
            if positions.is_empty() {
                return;
            }
            match consumer.commit(&tpl(&positions), CommitMode::Sync) {
                Ok(()) => info!(partitions = positions.len(), "committed on revoke"),
                Err(e) => warn!(error = %e, "commit on revoke failed; the new owner replays"),
            }
        }
    }

    /// The eager protocol replaces the whole assignment on every rebalance.
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let owned = match rebalance {
            Rebalance::Assign(list) => list.count(),
            Rebalance::Revoke(_) | Rebalance::Error(_) => 0,
        };
        info!(partitions = owned, "consumer group assignment");
        self.assigned.set(i64::try_from(owned).unwrap_or(i64::MAX));
    }
}

fn lock(m: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

type Inner = StreamConsumer<RebalanceContext>;

/// Room in the retry channel beyond `max_retrying`: deliveries in flight
/// when fetching paused (the consumer's window is far smaller).
const RETRY_HEADROOM: usize = 256;

/// Takes envelopes off every `securenet.<kind>.v1` topic.
pub struct KafkaConsumer {
    consumer: Arc<Inner>,
    tracker: Arc<Mutex<OffsetTracker>>,
    retries: mpsc::Receiver<Retry>,
    retry_tx: mpsc::Sender<Retry>,
    retrying: Arc<AtomicUsize>,
    max_retrying: usize,
    dead_letter: FutureProducer,
    dead_letter_topic: String,
    shutdown: CancellationToken,
    metrics: PipelineMetrics,
}

struct Retry {
    envelope: Envelope,
    ticket: Ticket,
    attempt: u32,
}

impl KafkaConsumer {
    /// Joins the group and subscribes. `shutdown` makes [`BusConsumer::next`]
    /// return `None`; offsets confirmed by then are committed on drop.
    pub fn new(
        config: &KafkaConfig,
        shutdown: CancellationToken,
        metrics: PipelineMetrics,
    ) -> Result<Self> {
        config.validate()?;
        let tracker = Arc::new(Mutex::new(OffsetTracker::default()));
        let mut c = config.client();
        c.set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 3).max(1).to_string(),
            )
            .set("fetch.message.max.bytes", (64 << 20).to_string())
            // Feeds securenet_bus_consumer_lag_messages.
            .set("statistics.interval.ms", "5000");
        if let Some(instance) = &config.group_instance_id {
            c.set("group.instance.id", instance);
        }
        let consumer: Inner = c
            .create_with_context(RebalanceContext {
                tracker: tracker.clone(),
                lag: metrics.consumer_lag.clone(),
                assigned: metrics.assigned_partitions.clone(),
            })
            .map_err(kafka_error)?;
        let topics: Vec<String> = RecordKind::ALL.iter().map(|k| config.topic(*k)).collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&refs).map_err(kafka_error)?;
        // Bounded: a retry is a delivery already handed out, and fetching
        // stops while `max_retrying` wait, so at most that many plus the
        // consumer's in-flight window are ever queued; if the channel is
        // full anyway, the retry task waits instead of growing a queue.
        let (retry_tx, retries) = mpsc::channel(config.max_retrying.max(1) + RETRY_HEADROOM);
        Ok(Self {
            consumer: Arc::new(consumer),
            tracker,
            retries,
            retry_tx,
            retrying: Arc::new(AtomicUsize::new(0)),
            max_retrying: config.max_retrying.max(1),
            dead_letter: config.producer()?,
            dead_letter_topic: config.dead_letter_topic(),
            shutdown,
            metrics,
        })
    }

    fn delivery(&self, envelope: Envelope, ticket: Ticket, attempt: u32) -> Delivery {
        let consumer = self.consumer.clone();
        let tracker = self.tracker.clone();
        let retry_tx = self.retry_tx.clone();
        let retrying = self.retrying.clone();
        let again = envelope.clone();
        Delivery {
            envelope,
            ack: Acker::new(move |outcome| match outcome {
                Ok(()) => commit(&consumer, &tracker, &ticket),
                Err(error) => {
                    // Sinks are idempotent: retry the same envelope until it
                    // lands. The offset stays uncommitted meanwhile.
                    let delay = backoff(attempt);
                    warn!(%error, batch_id = %again.batch_id(), attempt, ?delay, "sink write failed; retrying");
                    retrying.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = retry_tx
                            .send(Retry {
                                envelope: again,
                                ticket,
                                attempt: attempt + 1,
                            })
                            .await;
                    });
                }
            }),
        }
    }

    /// Decodes a message, or dead-letters it and returns `None`.
    async fn decode(&self, message: &BorrowedMessage<'_>) -> Option<Envelope> {
        let payload = message.payload().unwrap_or_default();
        let decoded = message
            .headers()
            .ok_or(schemas::Error::MissingHeader { name: "tenant" })
            .and_then(|h| {
                EnvelopeHeaders::from_pairs(h.iter().map(|h| (h.key, h.value.unwrap_or_default())))
            })
            .and_then(|headers| Envelope::decode(headers, payload));
        match decoded {
            Ok(envelope) => Some(envelope),
            Err(reason) => {
                self.dead_letter(message, &reason.to_string()).await;
                None
            }
        }
    }

    async fn dead_letter(&self, message: &BorrowedMessage<'_>, reason: &str) {
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let source = [
            ("dlq_reason", reason.to_string()),
            ("dlq_topic", message.topic().to_string()),
            ("dlq_partition", message.partition().to_string()),
            ("dlq_offset", message.offset().to_string()),
        ];
        for (key, value) in &source {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str()),
            });
        }
        let payload = message.payload().unwrap_or_default();
        error!(topic = message.topic(), partition = message.partition(), offset = message.offset(),
            %reason, "undecodable message sent to the dead-letter topic");
        self.metrics.dead_letters.inc();
        // Until the dead letter is stored the offset must not move: retry.
        let mut attempt = 0;
        loop {
            let mut record = FutureRecord::to(&self.dead_letter_topic)
                .payload(payload)
                .headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            match self.dead_letter.send(record, Duration::from_secs(30)).await {
                Ok(_) => return,
                Err((e, _)) => {
                    warn!(error = %e, "dead-letter publish failed; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// 100 ms doubling to 30 s, with ±25 % jitter so a fleet does not retry in
/// lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(9)).min(30_000);
    let jitter = rand::random::<f64>() * 0.5 + 0.75;
    Duration::from_millis((base as f64 * jitter) as u64)
}

fn commit(consumer: &Inner, tracker: &Mutex<OffsetTracker>, ticket: &Ticket) {
    let Some(position) = lock(tracker).finish(ticket) else {
        return;
    };
    let list = tpl(&[(ticket.topic.clone(), ticket.partition, position)]);
    if let Err(e) = consumer.commit(&list, CommitMode::Async) {
        // A later commit of this partition supersedes this one.
        debug!(error = %e, "async commit failed");
    }
}

impl BusConsumer for KafkaConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        async move {
            loop {
                let backlog = self.retrying.load(Ordering::Relaxed) >= self.max_retrying;
                let message = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => return None,
                    Some(retry) = self.retries.recv() => {
                        self.retrying.fetch_sub(1, Ordering::Relaxed);
                        return Some(self.delivery(retry.envelope, retry.ticket, retry.attempt));
                    }
                    m = self.consumer.recv(), if !backlog => m,
                };
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "kafka consume error");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let ticket = lock(&self.tracker).start(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                );
                match self.decode(&message).await {
                    Some(envelope) => {
                        drop(message);
                        return Some(self.delivery(envelope, ticket, 0));
                    }
                    None => commit(&self.consumer, &self.tracker, &ticket),
                }
            }
        }
        .boxed()
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        let positions = lock(&self.tracker).positions();
        if positions.is_empty() {
            return;
        }
        match self.consumer.commit(&tpl(&positions), CommitMode::Sync) {
            Ok(()) => info!(
                partitions = positions.len(),
                "committed offsets at shutdown"
            ),
            Err(e) => warn!(error = %e, "final commit failed; the next start replays"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_past_contiguous_confirmed_offsets() {
        let mut t = OffsetTracker::default();
        let a = t.start("logs", 0, 10);
        let b = t.start("logs", 0, 11);
        let c = t.start("logs", 0, 12);
        assert_eq!(t.finish(&b), None, "10 is still pending");
        assert_eq!(t.finish(&a), Some(12), "10 and 11 done; 12 pending");
        assert_eq!(t.finish(&c), Some(13));
        let other = t.start("logs", 1, 0);
        assert_eq!(t.positions().len(), 2);
        assert_eq!(t.finish(&other), Some(1));
    }

    #[test]
    fn confirmations_after_revocation_are_ignored() {
        let mut t = OffsetTracker::default();
        let a = t.start("logs", 0, 5);
        let b = t.start("logs", 0, 6);
        assert_eq!(t.finish(&b), None);
        assert_eq!(
            t.revoke(&[("logs".into(), 0)]),
            [("logs".to_string(), 0, 5)],
            "commit up to the unconfirmed 5"
        );
        // Reassigned later: a fresh epoch; the old ticket does nothing.
        let c = t.start("logs", 0, 5);
        assert_eq!(t.finish(&a), None);
        assert_eq!(t.finish(&c), Some(6));
    }

    #[test]
    fn bad_group_settings_are_config_errors() {
        for bad in [0, 999, 3_600_001] {
            let config = KafkaConfig {
                session_timeout_ms: bad,
                ..Default::default()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("session_timeout_ms"), "{err}");
        }
        assert!(KafkaConfig::default().validate().is_ok());
        let blank = KafkaConfig {
            group_instance_id: Some(" ".into()),
            ..Default::default()
        };
        let err = blank.validate().unwrap_err().to_string();
        assert!(err.contains("group_instance_id"), "{err}");
    }

    use crate::consumer::{self, ConsumerConfig};
    use crate::sinks::Sink;
    use crate::testutil::envelope;
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::BaseRecord;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use std::collections::HashSet;

    /// Remembers the batch ids it wrote.
    #[derive(Default)]
    struct Seen(Mutex<HashSet<uuid::Uuid>>);

    impl Sink for Seen {
        fn name(&self) -> &'static str {
            "seen"
        }
        fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<()>> {
            self.0.lock().unwrap().insert(envelope.batch_id());
            async { Ok(()) }.boxed()
        }
        fn healthcheck(&self) -> BoxFuture<'_, Result<()>> {
            async { Ok(()) }.boxed()
        }
    }

    fn config(brokers: String, prefix: &str) -> KafkaConfig {
        KafkaConfig {
            brokers,
            topic_prefix: prefix.into(),
            partitions: 2,
            group_id: format!("{prefix}-group"),
            compression: "lz4".into(),
            delivery_timeout_ms: 20_000,
            ..Default::default()
        }
    }

    /// The mock cluster does not implement CreateTopics; create them
    /// directly (`ensure_topics` is exercised against Tansu end to end).
    fn mock_topics(
        mock: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
        config: &KafkaConfig,
    ) {
        for kind in RecordKind::ALL {
            mock.create_topic(&config.topic(kind), config.partitions, 1)
                .unwrap();
        }
        mock.create_topic(&config.dead_letter_topic(), 1, 1)
            .unwrap();
    }

    async fn consume_until(config: &KafkaConfig, want: usize) -> Arc<Seen> {
        let seen = Arc::new(Seen::default());
        let stop = CancellationToken::new();
        let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
        let bus = KafkaConsumer::new(config, stop.clone(), metrics.clone()).unwrap();
        let sinks: Vec<Arc<dyn Sink>> = vec![seen.clone()];
        let task = tokio::spawn(consumer::run(
            bus,
            sinks,
            Arc::new([]),
            ConsumerConfig::default(),
            metrics,
        ));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while seen.0.lock().unwrap().len() < want && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.unwrap();
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn injected_broker_errors_are_retried_and_nothing_acknowledged_is_lost() {
        let mock = MockCluster::new(3).unwrap();
        let config = config(mock.bootstrap_servers(), "faults");
        mock_topics(&mock, &config);
        let producer = KafkaProducer::new(&config).unwrap();
        // Retriable errors on the first produce requests: librdkafka's
        // idempotent producer retries them without duplicating.
        mock.request_errors(
            RDKafkaApiKey::Produce,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            ],
        );
        let mut acknowledged = HashSet::new();
        for i in 0..20 {
            let e = envelope(if i % 2 == 0 { "acme" } else { "globex" }, 3);
            let id = e.batch_id();
            producer.publish(e).await.unwrap();
            acknowledged.insert(id);
        }
        let seen = consume_until(&config, acknowledged.len()).await;
        let seen = seen.0.lock().unwrap().clone();
        assert!(
            acknowledged.is_subset(&seen),
            "lost {:?}",
            acknowledged.difference(&seen)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_that_cannot_reach_the_broker_is_never_acknowledged() {
        let mock = MockCluster::new(1).unwrap();
        let mut config = config(mock.bootstrap_servers(), "down");
        config.delivery_timeout_ms = 1_500;
        mock_topics(&mock, &config);
        let producer = KafkaProducer::new(&config).unwrap();
        producer.publish(envelope("acme", 1)).await.unwrap();
        mock.broker_down(1).unwrap();
        let err = producer.publish(envelope("acme", 1)).await.unwrap_err();
        assert!(matches!(err, Error::Bus(_) | Error::Overloaded), "{err}");
        mock.broker_up(1).unwrap();
        // The client retries, as an HTTP client does after a 503; once the
        // broker is reachable again the publish is acknowledged.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while producer.publish(envelope("acme", 1)).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "broker did not come back"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_messages_go_to_the_dead_letter_topic_and_do_not_block() {
        let mock = MockCluster::new(1).unwrap();
        let mut config = config(mock.bootstrap_servers(), "dlq");
        config.partitions = 1;
        mock_topics(&mock, &config);
        let raw: rdkafka::producer::BaseProducer = config.client().create().unwrap();
        let topic = config.topic(RecordKind::Logs);
        raw.send(BaseRecord::to(&topic).key("acme").payload("not arrow"))
            .map_err(|(e, _)| e)
            .unwrap();
        raw.flush(Duration::from_secs(10)).unwrap();
        let producer = KafkaProducer::new(&config).unwrap();
        let good = envelope("acme", 2);
        let id = good.batch_id();
        producer.publish(good).await.unwrap();

        let seen = consume_until(&config, 1).await;
        assert!(
            seen.0.lock().unwrap().contains(&id),
            "the good batch after the poison one"
        );

        let reader: BaseConsumer = config
            .client()
            .set("group.id", "dlq-reader")
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        reader.subscribe(&[&config.dead_letter_topic()]).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let letter = loop {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
                break m.detach();
            }
            assert!(std::time::Instant::now() < deadline, "no dead letter");
        };
        assert_eq!(letter.payload(), Some(&b"not arrow"[..]));
        let headers: HashMap<String, String> = letter
            .headers()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers["dlq_topic"], topic);
        assert_eq!(headers["dlq_offset"], "0");
        assert!(headers["dlq_reason"].contains("tenant"), "{headers:?}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) <= Duration::from_millis(125));
        assert!(backoff(3) >= Duration::from_millis(600));
        assert!(backoff(30) <= Duration::from_millis(37_500));
    }
}
