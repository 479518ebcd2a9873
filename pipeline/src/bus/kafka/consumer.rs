//! The consumer: rebalances, retries with backoff (a bounded channel), dead letters, commits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use schemas::{BusPosition, Envelope, EnvelopeHeaders, RecordKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::bus::{Acker, BusConsumer, Delivery};
use crate::error::Result;
use crate::metrics::PipelineMetrics;

use super::{KafkaConfig, kafka_error};

use super::offsets::*;

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
        let consumer: Inner = config
            .consumer_client()
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
        let envelope = envelope.with_position(Some(BusPosition {
            topic: ticket.topic.as_str().into(),
            partition: ticket.partition,
            offset: ticket.offset,
            epoch: ticket.epoch,
            redelivery: attempt > 0,
        }));
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
    let base = schemas::time::backoff_ms(100, 30_000, attempt);
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
