//! The consumer loop: deliveries in, sink writes, acknowledgements out.
//!
//! Every delivery is written to every sink; only when all of them confirmed
//! is it acknowledged (Vector's "finalize after delivery"). Up to
//! `max_in_flight` deliveries are written concurrently, which bounds memory
//! and keeps the Parquet encoder busy on every core.
//!
//! Inline detectors (usage counting, Sigma rules, the streaming detector's
//! windows) see each delivery first; what they derive from it is written to
//! the sinks together with it and acknowledged with it, so a replayed
//! delivery derives — and the idempotent sinks store — the very same
//! records again, never twice. A stateful [`Detector`] runs behind a lock
//! (one delivery at a time); an [`Inline`] that needs no exclusive access,
//! like the Sigma stage, runs for every delivery in flight at once.

use std::sync::{Arc, Mutex};

use detectors::Detector;
use schemas::Envelope;

use futures::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::warn;

use crate::bus::{BusConsumer, Delivery};
use crate::error::{Error, Result};
use crate::metrics::PipelineMetrics;
use crate::sinks::Sink;

/// Settings of the consumer loop.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Deliveries written to the sinks concurrently.
    pub max_in_flight: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self { max_in_flight: 4 }
    }
}

/// What the consumer runs on every delivery before writing it (see the
/// module docs). Deliveries in flight call it concurrently.
pub trait Inline: Send + Sync {
    fn name(&self) -> &'static str;
    /// The delivery as it is to be written and seen by the detectors after
    /// this one (an enrichment fills columns: GeoIP); unchanged by default.
    fn enrich(&self, envelope: Envelope) -> detectors::Result<Envelope> {
        Ok(envelope)
    }
    /// What `envelope` derives, written and acknowledged with it.
    fn derive(&self, envelope: &Envelope) -> detectors::Result<Vec<Envelope>>;
}

/// A stateful [`Detector`] behind a lock: one delivery at a time.
impl<D: Detector> Inline for Mutex<D> {
    fn name(&self) -> &'static str {
        self.lock().unwrap_or_else(|p| p.into_inner()).name()
    }

    fn derive(&self, envelope: &Envelope) -> detectors::Result<Vec<Envelope>> {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .process_batch(envelope)
    }
}

/// Inline detectors, in the order they run.
pub type InlineDetectors = Arc<[Arc<dyn Inline>]>;

/// Runs until the bus is closed and drained, then waits for every write in
/// flight to settle.
pub async fn run(
    mut bus: impl BusConsumer,
    sinks: Vec<Arc<dyn Sink>>,
    detectors: InlineDetectors,
    config: ConsumerConfig,
    metrics: PipelineMetrics,
) {
    let permits = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    let sinks: Arc<[Arc<dyn Sink>]> = sinks.into();
    let mut tasks = JoinSet::new();
    while let Some(delivery) = bus.next().await {
        // Closed only if we close it, which we never do.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let sinks = sinks.clone();
        let detectors = detectors.clone();
        let metrics = metrics.clone();
        metrics.in_flight.inc();
        tasks.spawn(async move {
            deliver(delivery, &sinks, &detectors).await;
            metrics.in_flight.dec();
            drop(permit);
        });
        // Reap finished tasks so the set does not grow with the stream.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn deliver(delivery: Delivery, sinks: &[Arc<dyn Sink>], detectors: &InlineDetectors) {
    let Delivery { envelope, ack } = delivery;
    let (tenant, kind, batch_id) = (
        envelope.tenant().clone(),
        envelope.kind(),
        envelope.batch_id(),
    );
    let outcome = match derive(envelope, detectors) {
        Ok((envelope, derived)) => {
            write_all(sinks, std::iter::once(&envelope).chain(&derived)).await
        }
        Err(e) => Err(e),
    };
    if let Err(error) = &outcome {
        warn!(%error, %tenant, %kind, %batch_id, "batch not written; not acknowledged");
    }
    ack.settle(outcome);
}

/// The delivery as enriched, and what the inline detectors derive from it.
/// A detector failing is the batch failing: billing counts are never
/// silently skipped.
fn derive(
    mut envelope: Envelope,
    detectors: &InlineDetectors,
) -> Result<(Envelope, Vec<Envelope>)> {
    let failed = |detector: &Arc<dyn Inline>, e: detectors::Error| Error::Detector {
        detector: detector.name(),
        message: e.to_string(),
    };
    // What the sinks learn from the bus position (first delivery or a
    // possible replay) holds for everything derived from the delivery: a
    // replayed batch derives the same envelopes again.
    let position = envelope.position().cloned();
    for detector in detectors.iter() {
        envelope = detector.enrich(envelope).map_err(|e| failed(detector, e))?;
    }
    let envelope = envelope.with_position(position.clone());
    let mut derived = Vec::new();
    for detector in detectors.iter() {
        let out = detector
            .derive(&envelope)
            .map_err(|e| failed(detector, e))?;
        derived.extend(out.into_iter().map(|d| d.with_position(position.clone())));
    }
    Ok((envelope, derived))
}

/// Writes every envelope to every sink concurrently; the first failure wins.
pub async fn write_all(
    sinks: &[Arc<dyn Sink>],
    envelopes: impl IntoIterator<Item = &Envelope>,
) -> Result<()> {
    let writes = envelopes
        .into_iter()
        .flat_map(|e| sinks.iter().map(move |s| s.write(e)));
    join_all(writes).await.into_iter().collect()
}

/// Checks every sink; the first failure names its sink.
pub async fn healthcheck(sinks: &[Arc<dyn Sink>]) -> Result<()> {
    for sink in sinks {
        sink.healthcheck().await.map_err(|e| Error::Sink {
            sink: sink.name(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusProducer;
    use crate::bus::embedded;
    use crate::testutil::envelope;
    use futures::FutureExt;
    use futures::future::BoxFuture;
    use schemas::Envelope;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recording {
        rows: Mutex<Vec<usize>>,
        kinds: Mutex<Vec<(schemas::RecordKind, uuid::Uuid)>>,
        fail: bool,
    }

    fn no_detectors() -> InlineDetectors {
        Arc::new([])
    }

    impl Sink for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }
        fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<()>> {
            async move {
                if self.fail {
                    return Err(Error::Sink {
                        sink: "recording",
                        message: "refused".into(),
                    });
                }
                self.rows.lock().unwrap().push(envelope.num_rows());
                self.kinds
                    .lock()
                    .unwrap()
                    .push((envelope.kind(), envelope.batch_id()));
                Ok(())
            }
            .boxed()
        }
        fn healthcheck(&self) -> BoxFuture<'_, Result<()>> {
            async move {
                if self.fail {
                    Err(Error::Sink {
                        sink: "recording",
                        message: "down".into(),
                    })
                } else {
                    Ok(())
                }
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn acknowledges_after_every_sink_wrote() {
        let (tx, rx) = embedded::channel(8);
        let a = Arc::new(Recording::default());
        let b = Arc::new(Recording::default());
        let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
        let sinks: Vec<Arc<dyn Sink>> = vec![a.clone(), b.clone()];
        let task = tokio::spawn(run(
            rx,
            sinks,
            no_detectors(),
            ConsumerConfig::default(),
            metrics,
        ));
        for rows in 1..=5 {
            tx.publish(envelope("acme", rows)).await.unwrap();
        }
        drop(tx);
        task.await.unwrap();
        for s in [a, b] {
            let mut rows = s.rows.lock().unwrap().clone();
            rows.sort();
            assert_eq!(rows, [1, 2, 3, 4, 5]);
        }
    }

    #[tokio::test]
    async fn one_failing_sink_fails_the_publish() {
        let (tx, rx) = embedded::channel(8);
        let ok = Arc::new(Recording::default());
        let bad = Arc::new(Recording {
            fail: true,
            ..Default::default()
        });
        let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
        let sinks: Vec<Arc<dyn Sink>> = vec![ok, bad.clone()];
        tokio::spawn(run(
            rx,
            sinks.clone(),
            no_detectors(),
            ConsumerConfig::default(),
            metrics,
        ));
        let err = tx.publish(envelope("acme", 3)).await.unwrap_err();
        assert_eq!(err.to_string(), "sink recording failed: refused");
        let health = healthcheck(&sinks).await.unwrap_err();
        assert!(health.to_string().contains("recording"), "{health}");
    }

    #[tokio::test]
    async fn inline_detector_output_is_written_with_its_batch() {
        let (tx, rx) = embedded::channel(8);
        let sink = Arc::new(Recording::default());
        let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
        let detectors: InlineDetectors =
            Arc::new([Arc::new(Mutex::new(detectors::usage::UsageCounter)) as _]);
        let sinks: Vec<Arc<dyn Sink>> = vec![sink.clone()];
        let task = tokio::spawn(run(
            rx,
            sinks,
            detectors,
            ConsumerConfig::default(),
            metrics,
        ));
        let logs = envelope("acme", 3);
        let source = logs.batch_id();
        // Resolves only once the usage envelope is written too.
        tx.publish(logs).await.unwrap();
        let kinds = sink.kinds.lock().unwrap().clone();
        assert_eq!(kinds.len(), 2, "{kinds:?}");
        assert!(kinds.contains(&(schemas::RecordKind::Logs, source)));
        assert!(kinds.contains(&(
            schemas::RecordKind::Usage,
            detectors::usage::usage_batch_id(source)
        )));
        drop(tx);
        task.await.unwrap();
    }

    struct Broken;
    impl Detector for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }
        fn process_batch(&mut self, _: &Envelope) -> detectors::Result<Vec<Envelope>> {
            Err(detectors::Error::Column("bytes".into()))
        }
    }

    #[tokio::test]
    async fn a_failing_detector_fails_the_batch() {
        let (tx, rx) = embedded::channel(8);
        let sink = Arc::new(Recording::default());
        let metrics = PipelineMetrics::new(&prometheus::Registry::new()).unwrap();
        let detectors: InlineDetectors = Arc::new([Arc::new(Mutex::new(Broken)) as _]);
        let sinks: Vec<Arc<dyn Sink>> = vec![sink.clone()];
        tokio::spawn(run(
            rx,
            sinks,
            detectors,
            ConsumerConfig::default(),
            metrics,
        ));
        let err = tx.publish(envelope("acme", 3)).await.unwrap_err();
        assert!(err.to_string().contains("detector broken failed"), "{err}");
        assert!(sink.kinds.lock().unwrap().is_empty());
    }
}
