//! The Kafka bus (rdkafka).
//!
//! Producer: idempotent, `acks=all`; payloads compressed by Arrow IPC (zstd,
//! `compression`), not by the Kafka client (see `schemas::envelope`);
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
//!
//! Layout: this file holds the configuration and topic creation;
//! [`producer`] publishes, [`offsets`] tracks what may be committed, and
//! [`consumer`] consumes, retries, dead-letters and commits.

mod consumer;
mod offsets;
mod producer;
#[cfg(test)]
mod tests;

pub use consumer::{KafkaConsumer, RebalanceContext, backoff};
pub use offsets::{OffsetTracker, Ticket};
pub use producer::KafkaProducer;

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use schemas::{PayloadCompression, RecordKind};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::error::{Error, Result};

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
    /// `zstd` (default) or `none`: how each envelope's Arrow IPC buffers
    /// are compressed. Kafka-level compression is off: the broker stores
    /// the bytes as they come (Tansu re-encodes Kafka-compressed batches on
    /// every produce). Consumers read both forms, and the Kafka-compressed
    /// messages of earlier releases.
    pub compression: PayloadCompression,
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
    /// How long the broker may hold a fetch waiting for data
    /// (`fetch.wait.max.ms`). Apache Kafka answers as soon as data is
    /// there, so this only sets how often an idle consumer asks; Tansu 0.6
    /// holds every fetch for half of it (all of it under 250 ms), data or
    /// not, so there it is the pace of the pipeline's fetches.
    /// 100 ms, as Vector's Kafka source; librdkafka's own default is 500.
    pub fetch_wait_max_ms: u32,
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
            compression: PayloadCompression::Zstd,
            linger_ms: 5,
            delivery_timeout_ms: 30_000,
            max_retrying: 8,
            session_timeout_ms: 10_000,
            fetch_wait_max_ms: 100,
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

    /// The pipeline consumer's settings: manual commits, from the earliest
    /// offset, the group timing and fetch pacing of this config.
    pub fn consumer_client(&self) -> ClientConfig {
        let mut c = self.client();
        c.set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout_ms / 3).max(1).to_string(),
            )
            .set("fetch.message.max.bytes", (64 << 20).to_string())
            .set("fetch.wait.max.ms", self.fetch_wait_max_ms.to_string())
            // Feeds securenet_bus_consumer_lag_messages.
            .set("statistics.interval.ms", "5000");
        if let Some(instance) = &self.group_instance_id {
            c.set("group.instance.id", instance);
        }
        c
    }

    /// A producer with the bus's settings (idempotent, acks=all, no
    /// Kafka-level compression); benchmarks use it as the raw baseline.
    pub fn producer(&self) -> Result<FutureProducer> {
        let mut c = self.client();
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "none")
            .set("linger.ms", self.linger_ms.to_string())
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            // Envelopes are whole batches; allow large ones.
            .set("message.max.bytes", (64 << 20).to_string());
        c.create().map_err(kafka_error)
    }

    pub fn validate(&self) -> Result<()> {
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
        // librdkafka allows 0, which makes an idle consumer ask in a loop.
        if !(1..=300_000).contains(&self.fetch_wait_max_ms) {
            return Err(Error::Config(format!(
                "bus.kafka.fetch_wait_max_ms {}: expected 1 to 300000",
                self.fetch_wait_max_ms
            )));
        }
        Ok(())
    }
}

pub(super) fn kafka_error(e: KafkaError) -> Error {
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
