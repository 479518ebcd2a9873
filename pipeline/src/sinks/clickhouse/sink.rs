//! The sink: tables, the batch ledger, inserts and dead letters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use schemas::{BusPosition, Envelope, PayloadCompression, RecordKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::PipelineMetrics;
use crate::sinks::Sink;

use super::native;
use super::rowbinary::{self, column_type};
use super::{ClickHouseConfig, NAME};

/// ClickHouse error codes that mean "this data is wrong", not "the server
/// is unwell": such batches are dead-lettered instead of retried forever.
/// A Native block whose column no longer has the table's type (changed
/// server-side): 18.16 answers 368, current releases cast the column and
/// answer 6, 53 or 70 when that fails (and RowBinary rows that no longer fit
/// ended early or late depending on the bytes: 32 or 33). A truncated upload
/// does not get here (the client sees the connection fail, not a server
/// answer).
const DATA_ERRORS: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    131, // TOO_LARGE_STRING_SIZE
    368, // BAD_CAST
];

fn server_code(e: &clickhouse::error::Error) -> Option<u32> {
    let clickhouse::error::Error::BadResponse(text) = e else {
        return None;
    };
    let rest = &text[text.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub(super) fn sink_error(e: impl std::fmt::Display) -> Error {
    Error::Sink {
        sink: NAME,
        message: e.to_string(),
    }
}

pub struct ClickHouseSink {
    pub(super) client: clickhouse::Client,
    pub(super) database: String,
    timeout: Duration,
    metrics: PipelineMetrics,
    ledger: Arc<Ledger>,
    groups: Mutex<HashMap<String, mpsc::UnboundedSender<Member>>>,
    /// `max_inserts_per_table`.
    inserts_at_once: usize,
    replay_bounds: Mutex<HashMap<(Arc<str>, i32), ReplayBound>>,
}

/// Which deliveries of one bus partition may be replays, for the epoch this
/// process holds the partition in: those at or below the highest offset any
/// process had reserved in `bus_positions` when the epoch's first delivery
/// arrived. A sink reserves offsets before it writes them (up to
/// [`RESERVE_OFFSETS`] past the one in hand, one insert per that many
/// batches), so nothing above that offset was ever written: those batches
/// need no ledger lookup — a `SELECT` per envelope, which cost the sink
/// about a sixth of its rows/s (docs/benchmarks.md, "Ledger lookups only
/// for possible replays"). Only a
/// previous owner still writing after losing the partition (and reserving
/// more after the new owner read the bound) can have its rows inserted
/// twice, which `ReplacingMergeTree` collapses.
struct ReplayBound {
    epoch: u64,
    offsets: Arc<EpochOffsets>,
}

#[derive(Default)]
struct EpochOffsets {
    /// One past the highest offset anyone had reserved when the epoch
    /// began (0: none).
    highest: tokio::sync::OnceCell<u64>,
    /// One past the highest offset this process reserved in the epoch.
    reserved: tokio::sync::Mutex<u64>,
}

/// How far past the offset in hand a reservation reaches: after a
/// rebalance, the new owner looks up at most this many batches per
/// partition that were never written.
const RESERVE_OFFSETS: u64 = 256;

/// Group commit: envelopes written concurrently to the same table (and
/// with the same columns) share inserts. Each statement has a task that
/// runs up to `max_inserts_per_table` inserts at once; whenever one of
/// them is free it takes the first waiting envelope and everything queued
/// behind it (up to [`GROUP_MAX_BYTES`]), inserts it all at once and
/// answers every member; envelopes that arrive while every slot is busy
/// wait for the next free one. Nothing waits for company — one envelope
/// alone is inserted at once — so the groups grow only while ClickHouse is
/// slower than the stream. ClickHouse handles an insert on one thread: one
/// slot per table left the second core idle (`benches/scaleout.sh`, part 2
/// with 4 writes in flight). Fewer, larger
/// inserts mean fewer parts for ClickHouse to write and merge, which is
/// most of its CPU here (`benches/drain.sh`). The queue needs no bound of
/// its own: every member's writer awaits its answer, and the consumer
/// bounds its writers (`pipeline.consumer.max_in_flight`).
const GROUP_MAX_BYTES: usize = 64 << 20;
/// A group stays within one insert block (ClickHouse's
/// `max_insert_block_size` is 1,048,576 rows), which ClickHouse writes
/// whole or not at all: a refused group leaves no rows behind.
const GROUP_MAX_ROWS: usize = 500_000;

/// One envelope's rows waiting for its statement's next insert.
struct Member {
    data: Vec<u8>,
    rows: usize,
    done: oneshot::Sender<GroupOutcome>,
}

#[derive(Clone, Debug, PartialEq)]
enum GroupOutcome {
    Inserted,
    /// ClickHouse refused the data (a [`DATA_ERRORS`] code). `alone`: the
    /// insert held this envelope only, so the error is its own; otherwise
    /// the writer inserts it again alone to learn whether it is to blame.
    Rejected {
        error: String,
        alone: bool,
    },
    /// Transport or server trouble: the write fails and is retried.
    Failed(String),
}

/// Ledger rows wait at most this long, or until this many are pending,
/// before one insert records them all: an insert per batch cost a round
/// trip and, now and then, tens of milliseconds while ClickHouse wrote a
/// new part of the tiny ledger table (measured: `benches/scaleout.sh`).
const LEDGER_FLUSH_EVERY: Duration = Duration::from_millis(200);
const LEDGER_FLUSH_ROWS: usize = 256;
/// Pending ledger rows kept while ClickHouse refuses them; beyond this the
/// oldest are dropped (they only spare replays a second copy, see below).
const LEDGER_MAX_PENDING: usize = 100_000;

/// Batches written but not yet in `ingested_batches`. A replay of one of
/// them in this process is still recognised (they are looked up here
/// first); a replay elsewhere, or after a crash, within the flush interval
/// inserts the rows again, which `ReplacingMergeTree` collapses — the same
/// as a crash between a batch's rows and its ledger row always did.
#[derive(Default)]
struct Ledger {
    pending: Mutex<Vec<LedgerRow>>,
    full: tokio::sync::Notify,
}

#[derive(Clone)]
struct LedgerRow {
    kind: &'static str,
    batch_id: String,
    tenant_id: String,
    rows: u64,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<LedgerRow>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn contains(&self, kind: &str, batch_id: &str) -> bool {
        self.lock()
            .iter()
            .any(|r| r.kind == kind && r.batch_id == batch_id)
    }

    fn push(&self, row: LedgerRow) {
        let mut pending = self.lock();
        if pending.len() >= LEDGER_MAX_PENDING {
            pending.remove(0);
        }
        pending.push(row);
        if pending.len() >= LEDGER_FLUSH_ROWS {
            self.full.notify_one();
        }
    }
}

pub(super) fn table(kind: RecordKind) -> &'static str {
    kind.as_str()
}

impl ClickHouseSink {
    /// Connects and creates or migrates the tables.
    pub async fn connect(config: &ClickHouseConfig, metrics: PipelineMetrics) -> Result<Self> {
        metrics.register_sink(NAME);
        for outcome in ["looked_up", "skipped"] {
            metrics.ledger_lookups.with_label_values(&[outcome]);
        }
        if !config
            .database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Config(format!(
                "pipeline.clickhouse.database {:?}: letters, digits and '_' only",
                config.database
            )));
        }
        let client = clickhouse::Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_password(config.password.expose())
            .with_compression(config.compression.into())
            // 18.16 cannot describe RowBinary columns to the client.
            .with_validation(false);
        let sink = Self {
            client,
            database: config.database.clone(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            metrics,
            ledger: Arc::default(),
            groups: Mutex::default(),
            inserts_at_once: config.max_inserts_per_table.max(1),
            replay_bounds: Mutex::default(),
        };
        sink.migrate().await?;
        sink.spawn_ledger_writer();
        Ok(sink)
    }

    /// Writes pending ledger rows every [`LEDGER_FLUSH_EVERY`] (sooner
    /// when [`LEDGER_FLUSH_ROWS`] are waiting), until the sink is dropped.
    fn spawn_ledger_writer(&self) {
        let ledger: Weak<Ledger> = Arc::downgrade(&self.ledger);
        let (client, database, timeout) =
            (self.client.clone(), self.database.clone(), self.timeout);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            loop {
                let full = ledger
                    .upgrade()
                    .map(|l| async move { l.full.notified().await });
                match full {
                    None => return,
                    Some(full) => {
                        tokio::select! {
                            _ = tokio::time::sleep(LEDGER_FLUSH_EVERY) => {}
                            _ = full => {}
                        }
                    }
                }
                let Some(ledger) = ledger.upgrade() else {
                    return;
                };
                if let Err(e) = write_ledger(&client, &database, timeout, &ledger).await {
                    warn!(error = %e, "recording batches in the ClickHouse ledger failed; retrying");
                    metrics
                        .sink_errors
                        .with_label_values(&["clickhouse_ledger"])
                        .inc();
                }
            }
        });
    }

    pub(super) async fn execute(&self, sql: &str) -> Result<()> {
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(|e| sink_error(format!("{e} (in: {sql})")))
    }

    /// Idempotent DDL from the Arrow schemas.
    async fn migrate(&self) -> Result<()> {
        let db = &self.database;
        self.execute(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
            .await?;
        for kind in RecordKind::ALL {
            let schema = schemas::schema::schema(kind);
            let mut columns = Vec::new();
            for f in schema.fields() {
                columns.push(format!("`{}` {}", f.name(), column_type(f)?));
            }
            columns.push("`row_in_batch` UInt32".into());
            let ts = "toDateTime(intDiv(ts, 1000))";
            self.execute(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.{t} ({cols}) \
                 ENGINE = ReplacingMergeTree() PARTITION BY toYYYYMM({ts}) \
                 ORDER BY (tenant_id, ts, batch_id, row_in_batch)",
                t = table(kind),
                cols = columns.join(", "),
            ))
            .await?;
            // Columns a newer schema version added.
            let existing: Vec<String> = self
                .client
                .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
                .bind(db.as_str())
                .bind(table(kind))
                .fetch_all()
                .await
                .map_err(sink_error)?;
            for f in schema.fields() {
                if !existing.iter().any(|c| c == f.name()) {
                    self.execute(&format!(
                        "ALTER TABLE {db}.{t} ADD COLUMN `{n}` {ty}",
                        t = table(kind),
                        n = f.name(),
                        ty = column_type(f)?
                    ))
                    .await?;
                    info!(table = table(kind), column = f.name(), "added column");
                }
            }
        }
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.ingested_batches (kind String, batch_id String, \
             tenant_id String, rows UInt64, inserted_at DateTime DEFAULT now()) \
             ENGINE = ReplacingMergeTree() ORDER BY (kind, batch_id)"
        ))
        .await?;
        // Offsets reserved before their batches are written, per topic and
        // partition (see `ReplayBound`); merges keep the highest row.
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.bus_positions (bus_topic String, \
             bus_partition Int32, bus_offset UInt64, at DateTime DEFAULT now()) \
             ENGINE = ReplacingMergeTree(bus_offset) ORDER BY (bus_topic, bus_partition)"
        ))
        .await?;
        // Billing rollup: exact daily sums per tenant and metric, rebuilt
        // from the de-duplicated `usage` rows by the maintenance job (see
        // `maintenance.rs`), never appended to directly — a replayed batch
        // must not count twice.
        for t in ["usage_daily", "usage_daily_staging"] {
            self.execute(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.{t} (tenant_id String, day Date, \
                 metric String, value UInt64) ENGINE = SummingMergeTree((value)) \
                 PARTITION BY toYYYYMM(day) ORDER BY (tenant_id, day, metric)"
            ))
            .await?;
        }
        self.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {db}.dead_letters (kind String, batch_id String, \
             tenant_id String, error String, rows UInt64, payload String, \
             at DateTime DEFAULT now()) ENGINE = MergeTree() ORDER BY (tenant_id, at)"
        ))
        .await?;
        Ok(())
    }

    /// The partition's [`ReplayBound`] for the delivery's epoch (a later
    /// epoch replaces it); `None` for a delivery from an earlier epoch.
    fn replay_bound(&self, position: &BusPosition) -> Option<Arc<EpochOffsets>> {
        let mut bounds = self.replay_bounds.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = || ReplayBound {
            epoch: position.epoch,
            offsets: Arc::default(),
        };
        let bound = bounds
            .entry((position.topic.clone(), position.partition))
            .or_insert_with(fresh);
        if position.epoch > bound.epoch {
            *bound = fresh();
        } else if position.epoch < bound.epoch {
            return None;
        }
        Some(bound.offsets.clone())
    }

    /// Whether a previous delivery of this envelope may have reached
    /// ClickHouse: always, unless the bus says it is a first delivery above
    /// its partition's [`ReplayBound`].
    async fn may_be_replay(&self, envelope: &Envelope) -> Result<bool> {
        let Some(position) = envelope.position() else {
            return Ok(true);
        };
        let Ok(offset) = u64::try_from(position.offset) else {
            return Ok(true);
        };
        if position.redelivery {
            return Ok(true);
        }
        let Some(offsets) = self.replay_bound(position) else {
            return Ok(true);
        };
        let end = *offsets
            .highest
            .get_or_try_init(|| self.reserved_end(&position.topic, position.partition))
            .await?;
        Ok(offset < end)
    }

    /// Reserves the envelope's offset (and [`RESERVE_OFFSETS`] after it)
    /// before its rows are inserted, unless a reservation covers it.
    async fn reserve(&self, envelope: &Envelope) -> Result<()> {
        let Some(position) = envelope.position() else {
            return Ok(());
        };
        let Ok(offset) = u64::try_from(position.offset) else {
            return Ok(());
        };
        let upto = offset.saturating_add(RESERVE_OFFSETS);
        let Some(offsets) = self.replay_bound(position) else {
            // Written for an earlier epoch: reserved on its own.
            return self
                .record_reservation(&position.topic, position.partition, upto)
                .await;
        };
        let mut reserved = offsets.reserved.lock().await;
        if offset < *reserved || offsets.highest.get().is_some_and(|end| offset < *end) {
            return Ok(());
        }
        self.record_reservation(&position.topic, position.partition, upto)
            .await?;
        *reserved = upto.saturating_add(1);
        Ok(())
    }

    async fn record_reservation(&self, topic: &str, partition: i32, upto: u64) -> Result<()> {
        let mut data = Vec::with_capacity(topic.len() + 16);
        rowbinary_string(topic, &mut data);
        data.extend_from_slice(&partition.to_le_bytes());
        data.extend_from_slice(&upto.to_le_bytes());
        self.insert(
            format!(
                "INSERT INTO {}.bus_positions (bus_topic, bus_partition, bus_offset) FORMAT RowBinary",
                self.database
            ),
            data,
        )
        .await
        .map_err(sink_error)
    }

    /// One past the highest offset of a partition anyone reserved (0:
    /// none was).
    async fn reserved_end(&self, topic: &str, partition: i32) -> Result<u64> {
        self.client
            .query(&format!(
                "SELECT if(count() = 0, toUInt64(0), max(bus_offset) + 1) \
                 FROM {}.bus_positions WHERE bus_topic = ? AND bus_partition = ?",
                self.database
            ))
            .bind(topic)
            .bind(partition)
            .fetch_one()
            .await
            .map_err(sink_error)
    }

    async fn already_written(&self, envelope: &Envelope) -> Result<bool> {
        if self
            .ledger
            .contains(envelope.kind().as_str(), &envelope.batch_id().to_string())
        {
            return Ok(true);
        }
        if !self.may_be_replay(envelope).await? {
            self.metrics
                .ledger_lookups
                .with_label_values(&["skipped"])
                .inc();
            return Ok(false);
        }
        self.metrics
            .ledger_lookups
            .with_label_values(&["looked_up"])
            .inc();
        let n: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM {}.ingested_batches WHERE kind = ? AND batch_id = ?",
                self.database
            ))
            .bind(envelope.kind().as_str())
            .bind(envelope.batch_id().to_string())
            .fetch_one()
            .await
            .map_err(sink_error)?;
        Ok(n > 0)
    }

    async fn insert(&self, sql: String, data: Vec<u8>) -> Result<(), clickhouse::error::Error> {
        insert(&self.client, self.timeout, sql, vec![data]).await
    }

    /// Queues `data` for its statement's next insert (see [`Member`]) and
    /// waits for the outcome.
    async fn insert_grouped(
        &self,
        sql: String,
        data: Vec<u8>,
        rows: usize,
        kind: &'static str,
    ) -> Result<GroupOutcome> {
        let (done, outcome) = oneshot::channel();
        let mut member = Member { data, rows, done };
        // A statement's task ends only with the sink (its sender lives in
        // `groups`), so the retry below runs at most once, and only if the
        // task died (a panic).
        for _ in 0..2 {
            let queue = {
                let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
                groups
                    .entry(sql.clone())
                    .or_insert_with(|| self.spawn_group(sql.clone(), kind))
                    .clone()
            };
            match queue.send(member) {
                Ok(()) => {
                    return outcome
                        .await
                        .map_err(|_| sink_error("the insert task ended before answering"));
                }
                Err(mpsc::error::SendError(back)) => {
                    member = back;
                    self.groups
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&sql);
                }
            }
        }
        Err(sink_error("the insert task is gone"))
    }

    fn spawn_group(&self, sql: String, kind: &'static str) -> mpsc::UnboundedSender<Member> {
        let (tx, rx) = mpsc::unbounded_channel::<Member>();
        let (client, timeout) = (self.client.clone(), self.timeout);
        let inserts = self.metrics.sink_inserts.with_label_values(&[NAME, kind]);
        tokio::spawn(run_group(rx, self.inserts_at_once, move |data| {
            inserts.inc();
            let (client, sql) = (client.clone(), sql.clone());
            async move { insert(&client, timeout, sql, data).await }
        }));
        tx
    }

    /// Records the batch as written (in the ledger's next insert).
    fn record(&self, envelope: &Envelope) {
        self.ledger.push(LedgerRow {
            kind: envelope.kind().as_str(),
            batch_id: envelope.batch_id().to_string(),
            tenant_id: envelope.tenant().to_string(),
            rows: envelope.num_rows() as u64,
        });
    }

    async fn dead_letter(&self, envelope: &Envelope, error: &str) -> Result<()> {
        let payload = envelope.encode(PayloadCompression::Zstd)?;
        let mut row = Vec::new();
        for v in [
            envelope.kind().as_str(),
            &envelope.batch_id().to_string(),
            envelope.tenant().as_str(),
            error,
        ] {
            rowbinary_string(v, &mut row);
        }
        row.extend_from_slice(&(envelope.num_rows() as u64).to_le_bytes());
        rowbinary_bytes(&payload, &mut row);
        self.insert(
            format!(
                "INSERT INTO {}.dead_letters (kind, batch_id, tenant_id, error, rows, payload) FORMAT RowBinary",
                self.database
            ),
            row,
        )
        .await
        .map_err(sink_error)
    }

    async fn write_envelope(&self, envelope: &Envelope) -> Result<()> {
        // The ledger lookup's round trip overlaps the encoding: the request
        // is sent (hyper's connection task carries it) before the encoder
        // runs, and its answer read after. A batch found written wastes an
        // encoding; replays are rare.
        let (written, encoded) = futures::join!(self.already_written(envelope), async {
            encode_insert(envelope)
        });
        if written? {
            return Ok(());
        }
        self.reserve(envelope).await?;
        let (columns, data) = encoded?;
        let sql = format!(
            "INSERT INTO {}.{} ({columns}) FORMAT {INSERT_FORMAT}",
            self.database,
            table(envelope.kind()),
        );
        let rejected = match self
            .insert_grouped(
                sql.clone(),
                data,
                envelope.num_rows(),
                envelope.kind().as_str(),
            )
            .await?
        {
            GroupOutcome::Inserted => None,
            GroupOutcome::Failed(e) => return Err(sink_error(e)),
            GroupOutcome::Rejected { error, alone: true } => Some(error),
            // Someone in the group is to blame; this envelope alone tells
            // whether it is (the others do the same).
            GroupOutcome::Rejected { alone: false, .. } => {
                let (_, data) = encode_insert(envelope)?;
                match self.insert(sql, data).await {
                    Ok(()) => None,
                    Err(e) if is_data_error(&e) => Some(e.to_string()),
                    Err(e) => return Err(sink_error(e)),
                }
            }
        };
        if let Some(error) = rejected {
            warn!(%error, batch_id = %envelope.batch_id(), "ClickHouse rejected the batch; dead-lettered");
            self.metrics
                .sink_errors
                .with_label_values(&["clickhouse_rejected"])
                .inc();
            self.dead_letter(envelope, &error).await?;
        }
        self.record(envelope);
        Ok(())
    }
}

use rowbinary::bytes as rowbinary_bytes;

/// One insert of `chunks`, one after another in one body: a group's
/// members go as they were encoded, not copied into one buffer first
/// (without the copy the sink wrote 1.19× the rows a second;
/// docs/benchmarks.md, "Insert compression; group members sent as chunks").
async fn insert(
    client: &clickhouse::Client,
    timeout: Duration,
    sql: String,
    chunks: Vec<Vec<u8>>,
) -> Result<(), clickhouse::error::Error> {
    let mut insert = client
        .insert_formatted_with(sql)
        .with_timeouts(Some(timeout), Some(timeout));
    for chunk in chunks {
        insert.send(Bytes::from(chunk)).await?;
    }
    insert.end().await
}

/// A statement's insert task (see [`Member`]): `insert` sends one body
/// (its members' data in order).
async fn run_group<F, Fut>(
    mut queue: mpsc::UnboundedReceiver<Member>,
    at_once: usize,
    mut insert: F,
) where
    F: FnMut(Vec<Vec<u8>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), clickhouse::error::Error>>,
{
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            // A new group only when a slot is free: until then the queue
            // fills, and the next group takes all of it.
            first = queue.recv(), if running.len() < at_once.max(1) => {
                let Some(first) = first else { break };
                running.push(insert_group(first, &mut queue, &mut insert));
            }
            Some(()) = running.next(), if !running.is_empty() => {}
        }
    }
    while running.next().await.is_some() {}
}

/// `first` and what queued behind it, as one insert; answers every member.
fn insert_group<F, Fut>(
    first: Member,
    queue: &mut mpsc::UnboundedReceiver<Member>,
    insert: &mut F,
) -> impl std::future::Future<Output = ()> + use<F, Fut>
where
    F: FnMut(Vec<Vec<u8>>) -> Fut,
    Fut: std::future::Future<Output = Result<(), clickhouse::error::Error>>,
{
    let (mut bytes, mut rows) = (first.data.len(), first.rows);
    let mut members = vec![first];
    while bytes < GROUP_MAX_BYTES && rows < GROUP_MAX_ROWS {
        let Ok(next) = queue.try_recv() else { break };
        bytes += next.data.len();
        rows += next.rows;
        members.push(next);
    }
    let alone = members.len() == 1;
    let chunks = members
        .iter_mut()
        .map(|m| std::mem::take(&mut m.data))
        .collect();
    let inserted = insert(chunks);
    async move {
        let outcome = match inserted.await {
            Ok(()) => GroupOutcome::Inserted,
            Err(e) if is_data_error(&e) => GroupOutcome::Rejected {
                error: e.to_string(),
                alone,
            },
            Err(e) => GroupOutcome::Failed(e.to_string()),
        };
        for m in members {
            // A writer that gave up (its future dropped) no longer listens.
            let _ = m.done.send(outcome.clone());
        }
    }
}

fn is_data_error(e: &clickhouse::error::Error) -> bool {
    server_code(e).is_some_and(|c| DATA_ERRORS.contains(&c))
}

/// One insert of every pending ledger row; they leave the queue only once
/// it succeeded (rows pushed meanwhile stay for the next).
async fn write_ledger(
    client: &clickhouse::Client,
    database: &str,
    timeout: Duration,
    ledger: &Ledger,
) -> Result<()> {
    let rows: Vec<LedgerRow> = ledger.lock().clone();
    if rows.is_empty() {
        return Ok(());
    }
    let mut data = Vec::with_capacity(rows.len() * 80);
    for r in &rows {
        for v in [r.kind, &r.batch_id, &r.tenant_id] {
            rowbinary_string(v, &mut data);
        }
        data.extend_from_slice(&r.rows.to_le_bytes());
    }
    let mut insert = client
        .insert_formatted_with(format!(
            "INSERT INTO {database}.ingested_batches (kind, batch_id, tenant_id, rows) FORMAT RowBinary"
        ))
        .with_timeouts(Some(timeout), Some(timeout));
    insert.send(Bytes::from(data)).await.map_err(sink_error)?;
    insert.end().await.map_err(sink_error)?;
    let mut pending = ledger.lock();
    // Only this task removes rows, from the front; `push` may have dropped
    // some of the oldest meanwhile, so remove what is still there.
    let written = rows.len().min(pending.len());
    let still_first = pending
        .iter()
        .zip(&rows)
        .take_while(|(a, b)| a.batch_id == b.batch_id && a.kind == b.kind)
        .count();
    pending.drain(..still_first.min(written));
    Ok(())
}

/// An envelope's insert: the column list and its rows as one Native block
/// (with `row_in_batch`, part of the de-duplication key). One insert per
/// envelope: splitting one into concurrent inserts measured slower (more
/// parts for ClickHouse to write and merge; `benches/scaleout.sh`).
pub fn encode_insert(envelope: &Envelope) -> Result<(String, Vec<u8>)> {
    let batch = envelope.batch();
    let mut data = Vec::new();
    native::encode(batch, &mut data)?;
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .chain(["`row_in_batch`".to_string()])
        .collect();
    Ok((columns.join(", "), data))
}

/// The format of [`encode_insert`]'s data, for its `INSERT … FORMAT`.
pub const INSERT_FORMAT: &str = "Native";

fn rowbinary_string(s: &str, out: &mut Vec<u8>) {
    rowbinary_bytes(s.as_bytes(), out);
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write<'a>(&'a self, envelope: &'a Envelope) -> BoxFuture<'a, Result<()>> {
        async move {
            let started = Instant::now();
            let outcome = self.write_envelope(envelope).await;
            match &outcome {
                Ok(()) => self
                    .metrics
                    .observe_write(NAME, envelope, started.elapsed()),
                Err(_) => self.metrics.sink_errors.with_label_values(&[NAME]).inc(),
            }
            outcome
        }
        .boxed()
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.client
                .query("SELECT 1")
                .fetch_one::<u8>()
                .await
                .map(|_| ())
                .map_err(sink_error)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_are_read_from_exceptions() {
        let e = clickhouse::error::Error::BadResponse(
            "Code: 27, e.displayText() = DB::Exception: Cannot parse input".into(),
        );
        assert_eq!(server_code(&e), Some(27));
        let e = clickhouse::error::Error::BadResponse("Code: 241. DB::Exception: memory".into());
        assert_eq!(server_code(&e), Some(241));
        assert_eq!(server_code(&clickhouse::error::Error::TimedOut), None);
    }

    fn member(data: &[u8], rows: usize) -> (Member, oneshot::Receiver<GroupOutcome>) {
        let (done, outcome) = oneshot::channel();
        let data = data.to_vec();
        (Member { data, rows, done }, outcome)
    }

    /// Queues one member per body, in order; their answers.
    fn queue(
        tx: &mpsc::UnboundedSender<Member>,
        bodies: &[&[u8]],
        rows: usize,
    ) -> Vec<oneshot::Receiver<GroupOutcome>> {
        bodies
            .iter()
            .map(|body| {
                let (m, a) = member(body, rows);
                tx.send(m).unwrap();
                a
            })
            .collect()
    }

    /// A body with a `!` in it is refused as data, one with `?` fails as
    /// an outage; every body sent is recorded.
    fn fake_server(
        sent: Arc<Mutex<Vec<Vec<u8>>>>,
    ) -> impl FnMut(Vec<Vec<u8>>) -> futures::future::Ready<Result<(), clickhouse::error::Error>>
    {
        move |chunks| {
            let data = chunks.concat();
            let answer = if data.contains(&b'!') {
                Err(clickhouse::error::Error::BadResponse(
                    "Code: 27, e.displayText() = DB::Exception: Cannot parse input".into(),
                ))
            } else if data.contains(&b'?') {
                Err(clickhouse::error::Error::TimedOut)
            } else {
                Ok(())
            };
            sent.lock().unwrap().push(data);
            futures::future::ready(answer)
        }
    }

    #[tokio::test]
    async fn queued_members_share_one_insert_and_its_outcome() {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = queue(&tx, &[&b"ab"[..], b"cd", b"ef"], 1);
        let sent = Arc::new(Mutex::new(vec![]));
        let task = tokio::spawn(run_group(rx, 2, fake_server(sent.clone())));
        for a in answers {
            assert_eq!(a.await.unwrap(), GroupOutcome::Inserted);
        }
        assert_eq!(*sent.lock().unwrap(), [b"abcdef".to_vec()]);
        // One arriving alone is sent at once, alone.
        let (m, a) = member(b"gh", 1);
        tx.send(m).unwrap();
        assert_eq!(a.await.unwrap(), GroupOutcome::Inserted);
        assert_eq!(sent.lock().unwrap().len(), 2);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_group_sends_its_members_data_as_they_came_in_queue_order() {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = queue(&tx, &[&b"first"[..], b"second", b"third"], 1);
        let chunks = Arc::new(Mutex::new(Vec::<Vec<Vec<u8>>>::new()));
        let c = chunks.clone();
        tokio::spawn(run_group(rx, 1, move |sent: Vec<Vec<u8>>| {
            c.lock().unwrap().push(sent);
            futures::future::ready(Ok(()))
        }));
        for a in answers {
            assert_eq!(a.await.unwrap(), GroupOutcome::Inserted);
        }
        assert_eq!(
            *chunks.lock().unwrap(),
            [vec![
                b"first".to_vec(),
                b"second".to_vec(),
                b"third".to_vec()
            ]],
            "one insert, each member its own chunk"
        );
    }

    #[tokio::test]
    async fn a_refused_group_tells_its_members_they_were_not_alone() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (good, good_answer) = member(b"ok", 1);
        let (bad, bad_answer) = member(b"!", 1);
        tx.send(good).unwrap();
        tx.send(bad).unwrap();
        let sent = Arc::new(Mutex::new(vec![]));
        tokio::spawn(run_group(rx, 2, fake_server(sent.clone())));
        for a in [good_answer, bad_answer] {
            assert!(
                matches!(a.await.unwrap(), GroupOutcome::Rejected { alone: false, ref error } if error.contains("Code: 27"))
            );
        }
        // Alone, the error is the member's own; an outage is no data error.
        let (bad, bad_answer) = member(b"!", 1);
        tx.send(bad).unwrap();
        assert!(matches!(
            bad_answer.await.unwrap(),
            GroupOutcome::Rejected { alone: true, .. }
        ));
        let (down, down_answer) = member(b"?", 1);
        tx.send(down).unwrap();
        assert!(matches!(
            down_answer.await.unwrap(),
            GroupOutcome::Failed(_)
        ));
    }

    #[tokio::test]
    async fn inserts_run_side_by_side_and_the_queue_waits_for_a_free_one() {
        let (tx, rx) = mpsc::unbounded_channel();
        let sent = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (s, g) = (sent.clone(), gate.clone());
        tokio::spawn(run_group(rx, 2, move |chunks: Vec<Vec<u8>>| {
            s.lock().unwrap().push(chunks.concat());
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok(())
            }
        }));
        let sent_now = |n: usize| {
            let sent = sent.clone();
            async move {
                while sent.lock().unwrap().len() < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let mut answers = vec![];
        for (body, started) in [(&b"a"[..], 1), (b"b", 2)] {
            let (m, a) = member(body, 1);
            tx.send(m).unwrap();
            answers.push(a);
            sent_now(started).await;
        }
        // Both slots busy: these wait, and then go in together.
        for body in [&b"c"[..], b"d"] {
            let (m, a) = member(body, 1);
            tx.send(m).unwrap();
            answers.push(a);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(sent.lock().unwrap().len(), 2);
        gate.add_permits(1);
        sent_now(3).await;
        gate.add_permits(2);
        for a in answers {
            assert_eq!(a.await.unwrap(), GroupOutcome::Inserted);
        }
        assert_eq!(
            *sent.lock().unwrap(),
            [b"a".to_vec(), b"b".to_vec(), b"cd".to_vec()]
        );
    }

    #[tokio::test]
    async fn groups_stop_at_the_row_bound() {
        let (tx, rx) = mpsc::unbounded_channel();
        let answers = queue(&tx, &[&b"a"[..], b"b", b"c"], GROUP_MAX_ROWS / 2);
        let sent = Arc::new(Mutex::new(vec![]));
        tokio::spawn(run_group(rx, 2, fake_server(sent.clone())));
        for a in answers {
            assert_eq!(a.await.unwrap(), GroupOutcome::Inserted);
        }
        assert_eq!(*sent.lock().unwrap(), [b"ab".to_vec(), b"c".to_vec()]);
    }
}
