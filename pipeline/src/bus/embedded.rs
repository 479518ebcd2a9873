//! The embedded bus: a bounded in-process channel for `securenet serve`.
//!
//! `publish` waits for a free slot (backpressure, never a drop) and then for
//! the consumer's acknowledgement, so a 2xx from ingest means the sinks wrote
//! the rows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::FutureExt;
use futures::future::BoxFuture;
use schemas::Envelope;
use tokio::sync::{mpsc, oneshot};

use super::{Acker, BusConsumer, BusProducer, Delivery};
use crate::error::{Error, Result};

type Message = (Envelope, oneshot::Sender<Result<()>>);

/// Creates a bus holding at most `capacity` envelopes in flight.
pub fn channel(capacity: usize) -> (EmbeddedProducer, EmbeddedConsumer) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let depth = Arc::new(AtomicUsize::new(0));
    (
        EmbeddedProducer {
            tx,
            depth: depth.clone(),
        },
        EmbeddedConsumer { rx, depth },
    )
}

#[derive(Clone)]
pub struct EmbeddedProducer {
    tx: mpsc::Sender<Message>,
    depth: Arc<AtomicUsize>,
}

pub struct EmbeddedConsumer {
    rx: mpsc::Receiver<Message>,
    depth: Arc<AtomicUsize>,
}

impl BusProducer for EmbeddedProducer {
    fn publish(&self, envelope: Envelope) -> BoxFuture<'_, Result<()>> {
        async move {
            let (ack_tx, ack_rx) = oneshot::channel();
            self.depth.fetch_add(1, Ordering::Relaxed);
            if self.tx.send((envelope, ack_tx)).await.is_err() {
                self.depth.fetch_sub(1, Ordering::Relaxed);
                return Err(Error::Closed);
            }
            // A dropped sender means the consumer died before settling.
            ack_rx.await.unwrap_or(Err(Error::Closed))
        }
        .boxed()
    }

    fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

impl BusConsumer for EmbeddedConsumer {
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>> {
        async move {
            let (envelope, ack_tx) = self.rx.recv().await?;
            self.depth.fetch_sub(1, Ordering::Relaxed);
            Some(Delivery {
                envelope,
                ack: Acker::new(move |outcome| {
                    // The publisher may have gone away (client disconnected);
                    // the data is written either way.
                    let _ = ack_tx.send(outcome);
                }),
            })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::envelope;
    use std::time::Duration;

    #[tokio::test]
    async fn publish_resolves_with_the_consumers_outcome() {
        let (tx, mut rx) = channel(4);
        let consumer = tokio::spawn(async move {
            let first = rx.next().await.unwrap();
            first.ack.settle(Ok(()));
            let second = rx.next().await.unwrap();
            second.ack.settle(Err(Error::Sink {
                sink: "test",
                message: "disk full".into(),
            }));
            let third = rx.next().await.unwrap();
            drop(third.ack); // never settled
        });
        assert!(tx.publish(envelope("acme", 1)).await.is_ok());
        let err = tx.publish(envelope("acme", 1)).await.unwrap_err();
        assert_eq!(err.to_string(), "sink test failed: disk full");
        assert!(matches!(
            tx.publish(envelope("acme", 1)).await,
            Err(Error::Closed)
        ));
        consumer.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_bus_pushes_back_instead_of_dropping() {
        let (tx, mut rx) = channel(1);
        let tx = Arc::new(tx);
        let first = tokio::spawn({
            let tx = tx.clone();
            async move { tx.publish(envelope("acme", 1)).await }
        });
        let second = tokio::spawn({
            let tx = tx.clone();
            async move { tx.publish(envelope("acme", 2)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(tx.depth(), 2, "both publishers wait; nothing dropped");
        for _ in 0..2 {
            rx.next().await.unwrap().ack.settle(Ok(()));
        }
        assert!(first.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
        assert_eq!(tx.depth(), 0);
    }

    #[tokio::test]
    async fn closed_consumer_fails_publishers() {
        let (tx, rx) = channel(1);
        drop(rx);
        assert!(matches!(
            tx.publish(envelope("acme", 1)).await,
            Err(Error::Closed)
        ));
    }
}
