use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::Producer;
use schemas::Envelope;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::bus::BusProducer;
use crate::metrics::PipelineMetrics;

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
    for bad in [0, 300_001] {
        let config = KafkaConfig {
            fetch_wait_max_ms: bad,
            ..Default::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("fetch_wait_max_ms"), "{err}");
    }
    assert!(KafkaConfig::default().validate().is_ok());
    let blank = KafkaConfig {
        group_instance_id: Some(" ".into()),
        ..Default::default()
    };
    let err = blank.validate().unwrap_err().to_string();
    assert!(err.contains("group_instance_id"), "{err}");
}

#[test]
fn the_consumer_takes_its_timing_from_the_config() {
    let default = KafkaConfig::default().consumer_client();
    assert_eq!(default.get("fetch.wait.max.ms"), Some("100"));
    assert_eq!(default.get("session.timeout.ms"), Some("10000"));
    assert_eq!(default.get("group.instance.id"), None);
    let tuned = KafkaConfig {
        fetch_wait_max_ms: 500,
        group_instance_id: Some("pipeline-0".into()),
        ..Default::default()
    }
    .consumer_client();
    assert_eq!(tuned.get("fetch.wait.max.ms"), Some("500"));
    assert_eq!(tuned.get("group.instance.id"), Some("pipeline-0"));
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
        // The rest of the suite (Tansu, e2e) runs the zstd default.
        compression: schemas::PayloadCompression::None,
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

/// A rolling upgrade: messages of earlier releases (plain Arrow payload,
/// compressed by the Kafka client) and current ones (payload compressed by
/// Arrow IPC, Kafka-level compression off) on one topic are all delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_compressed_messages_of_earlier_releases_are_still_read() {
    let mock = MockCluster::new(1).unwrap();
    let mut config = config(mock.bootstrap_servers(), "upgrade");
    config.partitions = 1;
    config.compression = schemas::PayloadCompression::Zstd;
    mock_topics(&mock, &config);
    let old: rdkafka::producer::BaseProducer = config
        .client()
        .set("compression.type", "zstd")
        .create()
        .unwrap();
    let topic = config.topic(RecordKind::Logs);
    let earlier = envelope("acme", 3);
    let payload = earlier.encode(schemas::PayloadCompression::None).unwrap();
    let headers = earlier.headers().to_pairs().iter().fold(
        rdkafka::message::OwnedHeaders::new(),
        |h, (key, value)| {
            h.insert(rdkafka::message::Header {
                key,
                value: Some(value.as_str()),
            })
        },
    );
    old.send(
        BaseRecord::to(&topic)
            .key("acme")
            .payload(payload.as_ref())
            .headers(headers),
    )
    .map_err(|(e, _)| e)
    .unwrap();
    old.flush(Duration::from_secs(10)).unwrap();
    let current = envelope("acme", 2);
    let ids = [earlier.batch_id(), current.batch_id()];
    KafkaProducer::new(&config)
        .unwrap()
        .publish(current)
        .await
        .unwrap();

    let seen = consume_until(&config, 2).await;
    let seen = seen.0.lock().unwrap();
    assert!(ids.iter().all(|id| seen.contains(id)), "{seen:?}");
}

#[test]
fn backoff_grows_and_is_capped() {
    assert!(backoff(0) <= Duration::from_millis(125));
    assert!(backoff(3) >= Duration::from_millis(600));
    assert!(backoff(30) <= Duration::from_millis(37_500));
}
