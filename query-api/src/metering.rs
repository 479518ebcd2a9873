//! API request metering: every authenticated call to a query-API route
//! becomes an `api_requests` record (tenant, method, route template, status,
//! latency) — the basis of `api_requests` usage.
//!
//! The middleware runs after routing (so the route is the template, e.g.
//! `/api/insights/models/{id}/predict`, never a raw path with ids in it)
//! and learns the caller from a slot the [`crate::auth::Caller`] extractor
//! fills; unauthenticated requests are not billed. Rows go through a
//! bounded channel to a task that publishes one envelope per tenant to the
//! bus every `flush_ms` and at shutdown, so metering never delays a
//! response. Decision: the records are durable once published, i.e. within
//! a second; a crash of the query API loses at most that last second of
//! request records (billing the API synchronously would put the bus on
//! every request's path). A full channel drops rows and counts them.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt16Array,
};
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use control::Principal;
use pipeline::BusProducer;
use schemas::envelope::constant_utf8;
use schemas::{Envelope, RecordKind, TenantId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;
use uuid::Uuid;

/// Filled by the `Caller` extractor when the request authenticates.
#[derive(Clone, Default)]
pub struct CallerSlot(pub Arc<OnceLock<Principal>>);

impl CallerSlot {
    /// The request's slot, inserted if no middleware did yet (metering and
    /// the audit log share one).
    pub fn of(request: &mut Request) -> Self {
        if let Some(slot) = request.extensions().get::<CallerSlot>() {
            return slot.clone();
        }
        let slot = CallerSlot::default();
        request.extensions_mut().insert(slot.clone());
        slot
    }
}

struct Row {
    tenant: TenantId,
    method: String,
    route: String,
    status: u16,
    latency_ms: f64,
    at_ms: i64,
}

/// The metering handle shared by the middleware.
pub struct ApiMeter {
    tx: mpsc::Sender<Row>,
    dropped: prometheus::IntCounter,
}

impl ApiMeter {
    /// Starts the publishing task; it ends (after a last flush) once every
    /// `ApiMeter` handle is dropped.
    pub fn start(
        producer: Arc<dyn BusProducer>,
        flush: Duration,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<(Arc<Self>, JoinHandle<()>)> {
        let dropped = prometheus::IntCounter::new(
            "securenet_api_requests_dropped_total",
            "API request records dropped because the metering queue was full",
        )?;
        let published = prometheus::IntCounter::new(
            "securenet_api_requests_recorded_total",
            "API request records published to the bus",
        )?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(published.clone()))?;
        let (tx, mut rx) = mpsc::channel::<Row>(65_536);
        let task = tokio::spawn(async move {
            let mut pending: HashMap<TenantId, Vec<Row>> = HashMap::new();
            let mut tick = tokio::time::interval(flush);
            loop {
                tokio::select! {
                    row = rx.recv() => match row {
                        Some(row) => pending.entry(row.tenant.clone()).or_default().push(row),
                        None => break,
                    },
                    _ = tick.tick() => publish(&*producer, &mut pending, &published).await,
                }
            }
            publish(&*producer, &mut pending, &published).await;
        });
        Ok((Arc::new(Self { tx, dropped }), task))
    }
}

async fn publish(
    producer: &dyn BusProducer,
    pending: &mut HashMap<TenantId, Vec<Row>>,
    published: &prometheus::IntCounter,
) {
    for (tenant, rows) in pending.drain() {
        let n = rows.len();
        let outcome = match envelope(&tenant, &rows) {
            Ok(e) => producer.publish(e).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => published.inc_by(n as u64),
            Err(error) => warn!(%tenant, rows = n, %error, "API request records not published"),
        }
    }
}

fn envelope(tenant: &TenantId, rows: &[Row]) -> schemas::Result<Envelope> {
    let id = Uuid::now_v7();
    let n = rows.len();
    let at = || -> ArrayRef {
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.at_ms))
                .with_timezone("UTC"),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        constant_utf8(tenant.as_str(), n),
        at(),
        at(),
        constant_utf8(&id.to_string(), n),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.method.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.route.as_str()),
        )),
        Arc::new(UInt16Array::from_iter_values(rows.iter().map(|r| r.status))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.latency_ms),
        )),
    ];
    let batch = RecordBatch::try_new(schemas::schema::schema(RecordKind::ApiRequests), columns)?;
    Envelope::new(tenant.clone(), RecordKind::ApiRequests, id, batch)
}

/// The middleware: times the request, and records it if the caller
/// authenticated.
pub async fn middleware(
    State(meter): State<Arc<ApiMeter>>,
    mut request: Request,
    next: Next,
) -> Response {
    let slot = CallerSlot::of(&mut request);
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    // Refused for the rate limit: not billed.
    let refused = response.status() == axum::http::StatusCode::TOO_MANY_REQUESTS;
    if let (Some(caller), false) = (slot.0.get(), refused) {
        meter.record(
            &caller.tenant,
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}

impl ApiMeter {
    /// Records one call of `tenant` (never waits: a full queue drops the
    /// row and counts it). The HTTP middleware and the Flight SQL service
    /// call this.
    pub fn record(
        &self,
        tenant: &TenantId,
        method: &str,
        route: &str,
        status: u16,
        latency: Duration,
    ) {
        let row = Row {
            tenant: tenant.clone(),
            method: method.to_string(),
            route: route.to_string(),
            status,
            latency_ms: latency.as_secs_f64() * 1000.0,
            at_ms: schemas::time::now_ms(),
        };
        if self.tx.try_send(row).is_err() {
            self.dropped.inc();
        }
    }
}
