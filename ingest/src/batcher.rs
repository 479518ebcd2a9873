//! The per-tenant batcher.
//!
//! Receivers submit a request's records for one tenant and wait. A single
//! actor task owns one pending batch per tenant and flushes it when it
//! reaches `max_rows` or `max_bytes`, when it is `linger` old, or at
//! shutdown — and, when a request is waiting for its answer, by *group
//! commit*: such a batch is flushed at once while fewer than
//! `flush_concurrency` of the tenant's batches are being written, and
//! otherwise grows until one of those writes completes. Waiting clients get
//! minimal latency at low load and large batches at high load; nobody waits
//! on the linger timer. Detached records (syslog, where nobody waits) are
//! flushed by size or linger only, which keeps Parquet files large. Each
//! flush becomes one envelope (one tenant, one batch id) that is published
//! on the bus; when the bus reports it durable, every request whose records
//! were in it is answered.
//!
//! Detached and waited-on records of a tenant go in separate batches,
//! because a failed publish means different things to them: a waiting
//! client gets a 503 and sends again, so its records must not be stored
//! later behind its back; detached records have nobody to send them again,
//! so their batch is published again — the same envelope, the same batch
//! id, which the sinks de-duplicate — with backoff for as long as the bus
//! error is transient and ingest is not shutting down. Their budget stays
//! held meanwhile, so a TCP syslog reader pauses instead of dropping.
//!
//! Memory is bounded by the in-flight budget: a request holds permits for
//! its records' in-memory size from the moment they are parsed until their
//! batch is durable. HTTP receivers parse into a [`Reservation`] that grows
//! as records are built (so a small gzip body that inflates into millions
//! of records is stopped while parsing, not after), then submit with it.
//! When the budget is spent (sinks slower than senders), a request waits
//! up to `backpressure_wait` and then gets [`Error::Overloaded`] — a 503
//! with Retry-After, never a silent drop; a request whose records alone
//! exceed the whole budget gets [`Error::TooLarge`] (413).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use pipeline::BusProducer;
use prometheus::IntGauge;
use schemas::{Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

use crate::config::BatchConfig;
use crate::error::{Error, Result};
use crate::metrics::IngestMetrics;

type Outcome = std::result::Result<(), Arc<str>>;

/// A pending batch: its tenant, and whether anyone waits for its outcome
/// (see the module documentation for why the two never share a batch).
type Key = (TenantId, bool);

/// Backoff between publishes of a detached batch: 100 ms doubling to 5 s.
fn republish_delay(attempt: u32) -> Duration {
    Duration::from_millis(schemas::time::backoff_ms(100, 5_000, attempt))
}

enum Command {
    Append {
        tenant: TenantId,
        records: Vec<LogRecord>,
        bytes: usize,
        waiter: Waiter,
    },
    /// Flush everything now and flush every later append immediately.
    Close,
}

/// Who is waiting for a submission, and the budget it holds. The permit
/// travels with the records and is released only when their batch is
/// settled, so a client that disconnects early cannot free budget that is
/// still in use.
struct Waiter {
    /// `None` for detached submissions (syslog): nobody to answer.
    reply: Option<oneshot::Sender<Outcome>>,
    _budget: Budget,
    records: usize,
    input: &'static str,
}

/// Budget permits that keep the in-flight gauge in step.
struct Budget {
    _permit: OwnedSemaphorePermit,
    bytes: i64,
    gauge: IntGauge,
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.gauge.sub(self.bytes);
    }
}

/// Handle to the batcher; cheap to clone. The actor exits, after flushing
/// everything, once every handle is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Command>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    backpressure_wait: Duration,
    metrics: IngestMetrics,
}

impl Batcher {
    /// Starts the actor. The returned handle resolves once the actor has
    /// flushed everything and every publish has settled.
    pub fn start(
        config: BatchConfig,
        producer: Arc<dyn BusProducer>,
        metrics: IngestMetrics,
    ) -> Result<(Self, tokio::task::JoinHandle<()>)> {
        config.validate()?;
        let (tx, rx) = mpsc::channel(1024);
        let actor = Actor {
            config: config.clone(),
            producer,
            metrics: metrics.clone(),
            pending: HashMap::new(),
            deadlines: VecDeque::new(),
            flushes: JoinSet::new(),
            writing: HashMap::new(),
            closing: false,
            shutdown: CancellationToken::new(),
            generation: 0,
        };
        let task = tokio::spawn(actor.run(rx));
        Ok((
            Self {
                tx,
                budget: Arc::new(Semaphore::new(config.max_in_flight_bytes)),
                budget_total: config.max_in_flight_bytes,
                backpressure_wait: Duration::from_millis(config.backpressure_wait_ms),
                metrics,
            },
            task,
        ))
    }

    /// Submits one tenant's records and resolves once they are durable.
    /// Waits at most `backpressure_wait` for budget, then answers
    /// [`Error::Overloaded`].
    pub async fn submit(&self, tenant: TenantId, records: Vec<LogRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(LogRecord::approx_size).sum();
        let budget = match tokio::time::timeout(self.backpressure_wait, self.reserve(bytes)).await {
            Ok(Some(budget)) => budget,
            _ => return Err(self.overloaded()),
        };
        let (reply, wait) = oneshot::channel();
        self.append(tenant, records, bytes, budget, Some(reply))
            .await?;
        wait.await
            .unwrap_or_else(|_| Err("the batcher stopped".into()))
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// Queues records without waiting for durability — for receivers with
    /// nobody to answer (syslog). Waits for budget as long as it takes, which
    /// is how a TCP listener pauses reading when the pipeline is full. A batch
    /// that later fails is counted as `failed` in the records metric.
    pub async fn enqueue(&self, tenant: TenantId, records: Vec<LogRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(LogRecord::approx_size).sum();
        let permits = bytes.clamp(1, self.budget_total) as u32;
        let permit = match self.budget.clone().try_acquire_many_owned(permits) {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics.paused.inc();
                self.budget
                    .clone()
                    .acquire_many_owned(permits)
                    .await
                    .map_err(|_| Error::Unavailable("ingest is shutting down".into()))?
            }
        };
        let budget = self.budget_for(permit, permits);
        self.append(tenant, records, bytes, budget, None).await
    }

    /// Like [`Batcher::enqueue`] but never waits: with no budget left it
    /// answers [`Error::Overloaded`] at once (UDP, which cannot push back).
    pub async fn try_enqueue(&self, tenant: TenantId, records: Vec<LogRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(LogRecord::approx_size).sum();
        let permits = bytes.clamp(1, self.budget_total) as u32;
        let Ok(permit) = self.budget.clone().try_acquire_many_owned(permits) else {
            return Err(self.overloaded());
        };
        let budget = self.budget_for(permit, permits);
        self.append(tenant, records, bytes, budget, None).await
    }

    /// An empty reservation to parse one request's records into; for
    /// blocking threads (see [`Reservation::charge`]).
    pub fn reservation(&self) -> Reservation {
        Reservation {
            budget: self.budget.clone(),
            total: self.budget_total,
            permit: None,
            reserved: 0,
            used: 0,
            deadline: std::time::Instant::now() + self.backpressure_wait,
            runtime: tokio::runtime::Handle::current(),
            metrics: self.metrics.clone(),
        }
    }

    /// Submits records parsed into `reservation` (which already holds
    /// their budget) and resolves once they are durable.
    pub async fn submit_reserved(
        &self,
        tenant: TenantId,
        records: Vec<LogRecord>,
        reservation: Reservation,
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes = reservation.used;
        let budget = match reservation.into_budget() {
            Some(b) => b,
            // Nothing reserved (tests with an unbounded reservation): take
            // the budget now.
            None => match tokio::time::timeout(self.backpressure_wait, self.reserve(bytes)).await {
                Ok(Some(budget)) => budget,
                _ => return Err(self.overloaded()),
            },
        };
        let (reply, wait) = oneshot::channel();
        self.append(tenant, records, bytes, budget, Some(reply))
            .await?;
        wait.await
            .unwrap_or_else(|_| Err("the batcher stopped".into()))
            .map_err(|e| Error::Unavailable(e.to_string()))
    }

    fn overloaded(&self) -> Error {
        self.metrics.backpressure.inc();
        Error::Overloaded {
            retry_after_secs: 1,
        }
    }

    async fn reserve(&self, bytes: usize) -> Option<Budget> {
        let permits = bytes.clamp(1, self.budget_total) as u32;
        let permit = self.budget.clone().acquire_many_owned(permits).await.ok()?;
        Some(self.budget_for(permit, permits))
    }

    fn budget_for(&self, permit: OwnedSemaphorePermit, permits: u32) -> Budget {
        self.metrics.in_flight_bytes.add(permits as i64);
        Budget {
            _permit: permit,
            bytes: permits as i64,
            gauge: self.metrics.in_flight_bytes.clone(),
        }
    }

    async fn append(
        &self,
        tenant: TenantId,
        records: Vec<LogRecord>,
        bytes: usize,
        budget: Budget,
        reply: Option<oneshot::Sender<Outcome>>,
    ) -> Result<()> {
        let waiter = Waiter {
            reply,
            _budget: budget,
            records: records.len(),
            input: records.first().map_or("unknown", |r| r.input),
        };
        self.tx
            .send(Command::Append {
                tenant,
                records,
                bytes,
                waiter,
            })
            .await
            .map_err(|_| Error::Unavailable("ingest is shutting down".into()))
    }

    /// Flushes everything pending now; later submissions flush immediately.
    /// Call at the start of a graceful shutdown.
    pub async fn close(&self) {
        let _ = self.tx.send(Command::Close).await;
    }
}

/// Budget for one request's records, taken while they are parsed.
///
/// [`Reservation::charge`] blocks the (blocking) thread until the budget
/// has room, at most until the request's backpressure deadline.
pub struct Reservation {
    budget: Arc<Semaphore>,
    total: usize,
    permit: Option<OwnedSemaphorePermit>,
    reserved: usize,
    used: usize,
    deadline: std::time::Instant,
    runtime: tokio::runtime::Handle,
    metrics: IngestMetrics,
}

/// Budget is taken in steps of this much, not per record.
const RESERVE_STEP: usize = 256 << 10;

impl Reservation {
    /// Accounts one parsed record. Call from a blocking thread: waits for
    /// budget up to the backpressure deadline.
    pub fn charge(&mut self, record: &LogRecord) -> Result<()> {
        self.used += record.approx_size();
        if self.used <= self.reserved {
            return Ok(());
        }
        if self.used > self.total {
            return Err(Error::TooLarge(format!(
                "the request's records take more than {} bytes in memory, all that ingest may \
                 hold at once (ingest.batch.max_in_flight_bytes); send fewer records per request",
                self.total
            )));
        }
        let want = (self.used - self.reserved)
            .max(RESERVE_STEP)
            .min(self.total - self.reserved);
        let permits = u32::try_from(want).unwrap_or(u32::MAX);
        let acquired = match self.budget.clone().try_acquire_many_owned(permits) {
            Ok(p) => p,
            Err(_) => {
                let wait = self
                    .deadline
                    .saturating_duration_since(std::time::Instant::now());
                let budget = self.budget.clone();
                let got = self.runtime.block_on(async move {
                    tokio::time::timeout(wait, budget.acquire_many_owned(permits)).await
                });
                match got {
                    Ok(Ok(p)) => p,
                    _ => {
                        self.metrics.backpressure.inc();
                        return Err(Error::Overloaded {
                            retry_after_secs: 1,
                        });
                    }
                }
            }
        };
        self.metrics.in_flight_bytes.add(i64::from(permits));
        self.reserved += want;
        match &mut self.permit {
            Some(p) => p.merge(acquired),
            None => self.permit = Some(acquired),
        }
        Ok(())
    }

    /// Bytes of records charged so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The budget actually used, as held by the batch; the unused rest of
    /// the last step is released now.
    fn into_budget(mut self) -> Option<Budget> {
        let mut permit = self.permit.take()?;
        let keep = self.used.clamp(1, self.reserved);
        if self.reserved > keep
            && let Some(extra) = permit.split(self.reserved - keep)
        {
            drop(extra);
            self.metrics
                .in_flight_bytes
                .sub((self.reserved - keep) as i64);
        }
        let bytes = permit.num_permits() as i64;
        Some(Budget {
            _permit: permit,
            bytes,
            gauge: self.metrics.in_flight_bytes.clone(),
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Not submitted (an error while parsing): give the budget back.
        if let Some(p) = self.permit.take() {
            self.metrics.in_flight_bytes.sub(p.num_permits() as i64);
        }
    }
}

struct Pending {
    builder: LogBatchBuilder,
    bytes: usize,
    waiters: Vec<Waiter>,
    generation: u64,
}

struct Actor {
    config: BatchConfig,
    producer: Arc<dyn BusProducer>,
    metrics: IngestMetrics,
    pending: HashMap<Key, Pending>,
    /// Flush deadlines in opening order; linger is constant, so this is also
    /// deadline order. Entries of already-flushed batches are skipped by
    /// their generation.
    deadlines: VecDeque<(Instant, Key, u64)>,
    /// Each flush task returns its key, to release its slot.
    flushes: JoinSet<Key>,
    /// Batches being written, per key (absent = 0).
    writing: HashMap<Key, usize>,
    closing: bool,
    /// Cancelled at shutdown: detached batches stop publishing again.
    shutdown: CancellationToken,
    generation: u64,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let next_deadline = self.deadlines.front().map(|(at, _, _)| *at);
            tokio::select! {
                command = rx.recv() => match command {
                    Some(Command::Append { tenant, records, bytes, waiter }) => {
                        self.append(tenant, records, bytes, waiter);
                    }
                    Some(Command::Close) => {
                        self.closing = true;
                        self.shutdown.cancel();
                        self.flush_all("shutdown");
                    }
                    None => break,
                },
                _ = sleep_until(next_deadline) => self.flush_expired(),
                Some(done) = self.flushes.join_next(), if !self.flushes.is_empty() => {
                    if let Ok(key) = done {
                        self.flushed(key);
                    }
                }
            }
        }
        self.shutdown.cancel();
        self.flush_all("shutdown");
        while self.flushes.join_next().await.is_some() {}
    }

    fn append(&mut self, tenant: TenantId, records: Vec<LogRecord>, bytes: usize, waiter: Waiter) {
        let key: Key = (tenant, waiter.reply.is_some());
        let pending = match self.pending.get_mut(&key) {
            Some(p) => p,
            None => {
                self.generation += 1;
                let generation = self.generation;
                self.deadlines.push_back((
                    Instant::now() + self.config.linger(),
                    key.clone(),
                    generation,
                ));
                self.pending.entry(key.clone()).or_insert(Pending {
                    builder: LogBatchBuilder::with_capacity(records.len().max(1024)),
                    bytes: 0,
                    waiters: Vec::new(),
                    generation,
                })
            }
        };
        for record in &records {
            pending.builder.append(record);
        }
        pending.bytes += bytes;
        pending.waiters.push(waiter);
        let reason = if self.closing {
            Some("shutdown")
        } else if pending.builder.len() >= self.config.max_rows {
            Some("rows")
        } else if pending.bytes >= self.config.max_bytes {
            Some("bytes")
        } else if key.1
            && self.writing.get(&key).copied().unwrap_or(0) < self.config.flush_concurrency
        {
            // Group commit only helps someone who is waiting for the answer;
            // detached records (syslog) wait for size or linger, which keeps
            // files large.
            Some("idle")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.flush(&key, reason);
        }
    }

    /// A write finished: release its slot and send what accumulated meanwhile.
    fn flushed(&mut self, key: Key) {
        if let Some(n) = self.writing.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.writing.remove(&key);
            }
        }
        if key.1 && self.pending.contains_key(&key) {
            self.flush(&key, "group");
        }
    }

    fn flush_expired(&mut self) {
        let now = Instant::now();
        while let Some((at, _, _)) = self.deadlines.front() {
            if *at > now {
                break;
            }
            let Some((_, key, generation)) = self.deadlines.pop_front() else {
                break;
            };
            if self
                .pending
                .get(&key)
                .is_some_and(|p| p.generation == generation)
            {
                self.flush(&key, "age");
            }
        }
    }

    fn flush_all(&mut self, reason: &'static str) {
        let keys: Vec<Key> = self.pending.keys().cloned().collect();
        for key in keys {
            self.flush(&key, reason);
        }
        self.deadlines.clear();
    }

    fn flush(&mut self, key: &Key, reason: &'static str) {
        let Some(pending) = self.pending.remove(key) else {
            return;
        };
        self.metrics.flushes.with_label_values(&[reason]).inc();
        *self.writing.entry(key.clone()).or_default() += 1;
        let producer = self.producer.clone();
        let metrics = self.metrics.clone();
        let shutdown = self.shutdown.clone();
        let key = key.clone();
        self.flushes.spawn(async move {
            let (tenant, waited) = (&key.0, key.1);
            let outcome = match seal(tenant, pending.builder) {
                Ok(envelope) if waited => publish(producer.as_ref(), envelope).await,
                Ok(envelope) => {
                    publish_detached(producer.as_ref(), envelope, &shutdown, &metrics).await
                }
                Err(error) => Err(error),
            };
            if let Err(error) = &outcome {
                warn!(%error, %tenant, "batch not stored; waiting requests get 503");
            }
            for waiter in pending.waiters {
                match waiter.reply {
                    // The request may have been cancelled; its rows are stored anyway.
                    Some(reply) => {
                        let _ = reply.send(outcome.clone());
                    }
                    None if outcome.is_err() => {
                        // Nobody to tell (syslog): say it in the metrics.
                        metrics
                            .records
                            .with_label_values(&[waiter.input, "failed"])
                            .inc_by(waiter.records as u64);
                    }
                    None => {}
                }
            }
            key
        });
    }
}

/// The pending records as one envelope with a fresh batch id.
fn seal(tenant: &TenantId, builder: LogBatchBuilder) -> std::result::Result<Envelope, Arc<str>> {
    let id = Uuid::now_v7();
    let batch = builder
        .finish(tenant, id)
        .map_err(|e| Arc::<str>::from(e.to_string()))?;
    Envelope::new(tenant.clone(), RecordKind::Logs, id, batch)
        .map_err(|e| Arc::<str>::from(e.to_string()))
}

async fn publish(producer: &dyn BusProducer, envelope: Envelope) -> Outcome {
    producer
        .publish(envelope)
        .await
        .map_err(|e| Arc::<str>::from(e.to_string()))
}

/// Publishes a detached batch, again after each transient bus error, until
/// it is stored or ingest shuts down (one last attempt then). The same
/// envelope each time: if an attempt that reported failure was stored after
/// all, the sinks see one batch id twice and keep it once.
async fn publish_detached(
    producer: &dyn BusProducer,
    envelope: Envelope,
    shutdown: &CancellationToken,
    metrics: &IngestMetrics,
) -> Outcome {
    let mut attempt = 0;
    loop {
        match producer.publish(envelope.clone()).await {
            Ok(()) => return Ok(()),
            Err(error) if error.is_transient() && !shutdown.is_cancelled() => {
                metrics.republished.inc();
                let delay = republish_delay(attempt);
                warn!(%error, tenant = %envelope.tenant(), batch_id = %envelope.batch_id(), ?delay,
                    "detached batch not stored; publishing it again");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {}
                }
                attempt += 1;
            }
            Err(error) => return Err(Arc::from(error.to_string())),
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn group_commit_sends_at_once_when_idle_and_groups_while_busy() {
        let bus = Arc::new(FakeBus {
            delay: Duration::from_millis(200),
            ..Default::default()
        });
        let config = BatchConfig {
            linger_ms: 60_000,
            flush_concurrency: 1,
            ..Default::default()
        };
        let (batcher, _task) = start(config, bus.clone());
        let started = std::time::Instant::now();
        // The first request goes out at once; the next four arrive while it is
        // being written and leave together when it completes.
        let submit = |n| {
            let b = batcher.clone();
            tokio::spawn(async move { b.submit(tenant("acme"), records(n)).await })
        };
        let first = submit(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let rest: Vec<_> = (2..=5).map(submit).collect();
        first.await.unwrap().unwrap();
        for r in rest {
            r.await.unwrap().unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never waited for the linger"
        );
        assert_eq!(
            bus.published.lock().unwrap().as_slice(),
            [("acme".to_string(), 1), ("acme".to_string(), 2 + 3 + 4 + 5)]
        );
    }

    use super::*;
    use futures::FutureExt;
    use futures::future::BoxFuture;
    use std::sync::Mutex;

    /// A bus that records (tenant, rows) and acknowledges after `delay`;
    /// the first `failures` publishes fail with a bus error instead.
    #[derive(Default)]
    struct FakeBus {
        published: Mutex<Vec<(String, usize)>>,
        delay: Duration,
        failures: std::sync::atomic::AtomicUsize,
        /// Batch id of every attempt, failed ones included.
        attempts: Mutex<Vec<Uuid>>,
    }

    impl BusProducer for FakeBus {
        fn publish(&self, envelope: Envelope) -> BoxFuture<'_, pipeline::Result<()>> {
            async move {
                tokio::time::sleep(self.delay).await;
                self.attempts.lock().unwrap().push(envelope.batch_id());
                let failing = self
                    .failures
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                if failing {
                    return Err(pipeline::Error::Bus("Message timed out".into()));
                }
                self.published
                    .lock()
                    .unwrap()
                    .push((envelope.tenant().to_string(), envelope.num_rows()));
                Ok(())
            }
            .boxed()
        }
        fn depth(&self) -> usize {
            0
        }
    }

    fn records(n: usize) -> Vec<LogRecord> {
        (0..n)
            .map(|i| LogRecord {
                message: format!("line {i}"),
                input: "test",
                ..Default::default()
            })
            .collect()
    }

    fn tenant(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    fn start(config: BatchConfig, bus: Arc<FakeBus>) -> (Batcher, tokio::task::JoinHandle<()>) {
        let metrics = IngestMetrics::new(&prometheus::Registry::new()).unwrap();
        Batcher::start(config, bus, metrics).unwrap()
    }

    #[tokio::test]
    async fn groups_by_tenant_and_flushes_on_age() {
        let bus = Arc::new(FakeBus::default());
        // No eager flush: only the linger timer sends.
        let config = BatchConfig {
            linger_ms: 50,
            flush_concurrency: 0,
            ..Default::default()
        };
        let (batcher, task) = start(config, bus.clone());
        let (a, b, c) = tokio::join!(
            batcher.submit(tenant("acme"), records(3)),
            batcher.submit(tenant("globex"), records(2)),
            batcher.submit(tenant("acme"), records(4)),
        );
        a.unwrap();
        b.unwrap();
        c.unwrap();
        let mut published = bus.published.lock().unwrap().clone();
        published.sort();
        assert_eq!(published, [("acme".into(), 7), ("globex".into(), 2)]);
        drop(batcher);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn flushes_on_rows_without_waiting_for_linger() {
        let bus = Arc::new(FakeBus::default());
        let config = BatchConfig {
            linger_ms: 60_000,
            max_rows: 10,
            flush_concurrency: 0,
            ..Default::default()
        };
        let (batcher, _task) = start(config, bus.clone());
        tokio::time::timeout(
            Duration::from_secs(5),
            batcher.submit(tenant("acme"), records(10)),
        )
        .await
        .expect("flushed on rows, not after the 60 s linger")
        .unwrap();
    }

    #[tokio::test]
    async fn close_flushes_pending_batches_now() {
        let bus = Arc::new(FakeBus::default());
        let config = BatchConfig {
            linger_ms: 60_000,
            flush_concurrency: 0,
            ..Default::default()
        };
        let (batcher, task) = start(config, bus.clone());
        let waiting = tokio::spawn({
            let b = batcher.clone();
            async move { b.submit(tenant("acme"), records(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        batcher.close().await;
        waiting.await.unwrap().unwrap();
        drop(batcher);
        task.await.unwrap();
        assert_eq!(
            bus.published.lock().unwrap().as_slice(),
            [("acme".to_string(), 5)]
        );
    }

    #[tokio::test]
    async fn detached_records_wait_for_linger_not_group_commit() {
        let bus = Arc::new(FakeBus::default());
        let config = BatchConfig {
            linger_ms: 300,
            flush_concurrency: 2,
            ..Default::default()
        };
        let (batcher, _task) = start(config, bus.clone());
        for _ in 0..3 {
            batcher.enqueue(tenant("acme"), records(2)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            bus.published.lock().unwrap().is_empty(),
            "nothing before the linger"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            bus.published.lock().unwrap().as_slice(),
            [("acme".to_string(), 6)]
        );
    }

    #[tokio::test]
    async fn spent_budget_answers_overloaded() {
        let bus = Arc::new(FakeBus {
            delay: Duration::from_millis(500),
            ..Default::default()
        });
        let per_request: usize = records(10).iter().map(LogRecord::approx_size).sum();
        let config = BatchConfig {
            linger_ms: 1,
            max_in_flight_bytes: per_request + per_request / 2,
            backpressure_wait_ms: 50,
            ..Default::default()
        };
        let (batcher, _task) = start(config, bus.clone());
        let first = tokio::spawn({
            let b = batcher.clone();
            async move { b.submit(tenant("acme"), records(10)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let second = batcher.submit(tenant("acme"), records(10)).await;
        assert!(
            matches!(
                second,
                Err(Error::Overloaded {
                    retry_after_secs: 1
                })
            ),
            "{second:?}"
        );
        first.await.unwrap().unwrap();
        // Budget released: the retry succeeds.
        batcher.submit(tenant("acme"), records(10)).await.unwrap();
    }

    /// A batcher over a bus whose first `failures` publishes fail, with a
    /// short linger so detached records flush at once.
    fn failing(
        failures: usize,
    ) -> (
        Arc<FakeBus>,
        IngestMetrics,
        Batcher,
        tokio::task::JoinHandle<()>,
    ) {
        let bus = Arc::new(FakeBus {
            failures: failures.into(),
            ..Default::default()
        });
        let config = BatchConfig {
            linger_ms: 10,
            ..Default::default()
        };
        let metrics = IngestMetrics::new(&prometheus::Registry::new()).unwrap();
        let (batcher, task) = Batcher::start(config, bus.clone(), metrics.clone()).unwrap();
        (bus, metrics, batcher, task)
    }

    #[tokio::test]
    async fn a_detached_batch_is_published_again_until_the_bus_takes_it() {
        let (bus, metrics, batcher, task) = failing(3);
        batcher.enqueue(tenant("acme"), records(5)).await.unwrap();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while bus.published.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < until, "never stored");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            bus.published.lock().unwrap().as_slice(),
            [("acme".to_string(), 5)]
        );
        // Four attempts of one envelope: the sinks de-duplicate on its id.
        let attempts = bus.attempts.lock().unwrap().clone();
        assert_eq!(attempts.len(), 4);
        assert!(attempts.iter().all(|id| *id == attempts[0]));
        assert_eq!(metrics.republished.get(), 3);
        assert_eq!(failed(&metrics), 0);
        drop(batcher);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_error_and_its_rows_are_not_sent_again() {
        let bus = Arc::new(FakeBus {
            failures: 1.into(),
            ..Default::default()
        });
        let metrics = IngestMetrics::new(&prometheus::Registry::new()).unwrap();
        let (batcher, task) =
            Batcher::start(BatchConfig::default(), bus.clone(), metrics.clone()).unwrap();
        let refused = batcher.submit(tenant("acme"), records(2)).await;
        assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
        // Syslog records of the same tenant meanwhile: a batch of their own.
        batcher.enqueue(tenant("acme"), records(3)).await.unwrap();
        batcher.submit(tenant("acme"), records(4)).await.unwrap();
        drop(batcher);
        task.await.unwrap();
        let mut published = bus.published.lock().unwrap().clone();
        published.sort();
        assert_eq!(published, [("acme".into(), 3), ("acme".into(), 4)]);
        assert_eq!(metrics.republished.get(), 0);
    }

    #[tokio::test]
    async fn at_shutdown_a_failing_detached_batch_is_given_up_and_counted() {
        let (bus, metrics, batcher, task) = failing(usize::MAX);
        batcher.enqueue(tenant("acme"), records(5)).await.unwrap();
        while metrics.republished.get() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        batcher.close().await;
        drop(batcher);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("shutdown waits for no more backoff")
            .unwrap();
        assert!(bus.published.lock().unwrap().is_empty());
        assert_eq!(failed(&metrics), 5);
    }

    fn failed(metrics: &IngestMetrics) -> u64 {
        metrics.records.with_label_values(&["test", "failed"]).get()
    }
}
