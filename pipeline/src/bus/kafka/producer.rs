//! Publishing envelopes: idempotent, `acks=all`, acknowledged when the broker has them.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemas::{Envelope, EnvelopeHeaders};
use tracing::warn;

use crate::bus::BusProducer;
use crate::error::{Error, Result};

use super::{KafkaConfig, kafka_error};

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
            let payload = envelope.encode(self.config.compression)?;
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
