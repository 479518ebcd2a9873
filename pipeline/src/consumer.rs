//! The consumer loop: deliveries in, sink writes, acknowledgements out.
//!
//! Every delivery is written to every sink; only when all of them confirmed
//! is it acknowledged (Vector's "finalize after delivery"). Up to
//! `max_in_flight` deliveries are written concurrently, which bounds memory
//! and keeps the Parquet encoder busy on every core.

use std::sync::Arc;

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

/// Runs until the bus is closed and drained, then waits for every write in
/// flight to settle.
pub async fn run(
    mut bus: impl BusConsumer,
    sinks: Vec<Arc<dyn Sink>>,
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
        let metrics = metrics.clone();
        metrics.in_flight.inc();
        tasks.spawn(async move {
            deliver(delivery, &sinks).await;
            metrics.in_flight.dec();
            drop(permit);
        });
        // Reap finished tasks so the set does not grow with the stream.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

async fn deliver(delivery: Delivery, sinks: &[Arc<dyn Sink>]) {
    let Delivery { envelope, ack } = delivery;
    let results = join_all(sinks.iter().map(|s| s.write(&envelope))).await;
    let outcome = match results.into_iter().find_map(Result::err) {
        None => Ok(()),
        Some(error) => {
            warn!(%error, tenant = %envelope.tenant(), kind = %envelope.kind(),
                batch_id = %envelope.batch_id(), "sink write failed; batch not acknowledged");
            Err(error)
        }
    };
    ack.settle(outcome);
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
        fail: bool,
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
        let task = tokio::spawn(run(rx, sinks, ConsumerConfig::default(), metrics));
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
        tokio::spawn(run(rx, sinks.clone(), ConsumerConfig::default(), metrics));
        let err = tx.publish(envelope("acme", 3)).await.unwrap_err();
        assert_eq!(err.to_string(), "sink recording failed: refused");
        let health = healthcheck(&sinks).await.unwrap_err();
        assert!(health.to_string().contains("recording"), "{health}");
    }
}
