//! The bus: what ingest publishes to and the consumer loop reads from.
//!
//! Both implementations give the same guarantee: [`BusProducer::publish`]
//! resolves `Ok` only once the envelope is durably handed off — for Kafka,
//! when the broker acknowledged it (acks=all); for the embedded bus, when
//! every sink has written it. Ingest acknowledges its clients on that.

pub mod embedded;
#[cfg(feature = "kafka")]
pub mod kafka;

use futures::future::BoxFuture;
use schemas::Envelope;

use crate::error::Result;

/// The publishing half of a bus.
pub trait BusProducer: Send + Sync + 'static {
    /// Hands `envelope` to the bus; resolves once it is durable.
    fn publish(&self, envelope: Envelope) -> BoxFuture<'_, Result<()>>;

    /// Messages waiting to be consumed (for metrics and health).
    fn depth(&self) -> usize;
}

/// The consuming half of a bus.
pub trait BusConsumer: Send + 'static {
    /// The next delivery, or `None` once the bus is closed and drained.
    fn next(&mut self) -> BoxFuture<'_, Option<Delivery>>;
}

/// One envelope taken off the bus, with the handle that settles it.
pub struct Delivery {
    pub envelope: Envelope,
    pub ack: Acker,
}

/// Settles a delivery. Dropping an `Acker` without calling
/// [`Acker::settle`] reports failure to the producer: nothing is silently
/// acknowledged.
pub struct Acker(Box<dyn FnOnce(Result<()>) + Send>);

impl Acker {
    pub fn new(f: impl FnOnce(Result<()>) + Send + 'static) -> Self {
        Self(Box::new(f))
    }

    /// Reports the outcome of writing the delivery to every sink.
    pub fn settle(self, outcome: Result<()>) {
        (self.0)(outcome)
    }
}
