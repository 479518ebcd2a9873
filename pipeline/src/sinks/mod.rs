//! Sinks: where envelopes end up. A sink is idempotent on the envelope's
//! batch id — writing the same envelope twice leaves the same result as
//! writing it once — which is what makes at-least-once delivery on the bus
//! produce effectively-once results.

pub mod clickhouse;
pub mod parquet;

use futures::future::BoxFuture;
use schemas::Envelope;

use crate::error::Result;

/// A destination for envelopes.
///
/// ```
/// use futures::FutureExt;
/// use futures::future::BoxFuture;
/// use pipeline::{Result, Sink};
/// use schemas::Envelope;
///
/// /// Counts rows; idempotence is not its concern.
/// struct CountRows(std::sync::atomic::AtomicUsize);
///
/// impl Sink for CountRows {
///     fn name(&self) -> &'static str { "count" }
///     fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<()>> {
///         self.0.fetch_add(envelope.num_rows(), std::sync::atomic::Ordering::Relaxed);
///         async { Ok(()) }.boxed()
///     }
///     fn healthcheck(&self) -> BoxFuture<'_, Result<()>> { async { Ok(()) }.boxed() }
/// }
/// ```
pub trait Sink: Send + Sync + 'static {
    /// Short name for metrics and errors (`parquet`, `clickhouse`).
    fn name(&self) -> &'static str;

    /// Writes the envelope durably; resolves only once it is stored.
    fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<()>>;

    /// Cheap readiness probe.
    fn healthcheck(&self) -> BoxFuture<'_, Result<()>>;
}
