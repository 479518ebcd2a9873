//! The sink: tables, the batch ledger, inserts and dead letters.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use schemas::{Envelope, PayloadCompression, RecordKind};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::metrics::PipelineMetrics;
use crate::sinks::Sink;

use super::rowbinary::{self, column_type};
use super::{ClickHouseConfig, NAME};

/// ClickHouse error codes that mean "this data is wrong", not "the server
/// is unwell": such batches are dead-lettered instead of retried forever.
/// RowBinary rows that no longer fit the table's columns (a column's type
/// changed server-side) end early or late depending on the bytes: 32 or 33.
/// A truncated upload does not get here (the client sees the connection
/// fail, not a server answer).
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
            // 18.16 cannot describe RowBinary columns to the client.
            .with_validation(false);
        let sink = Self {
            client,
            database: config.database.clone(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            metrics,
            ledger: Arc::default(),
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

    async fn already_written(&self, envelope: &Envelope) -> Result<bool> {
        if self
            .ledger
            .contains(envelope.kind().as_str(), &envelope.batch_id().to_string())
        {
            return Ok(true);
        }
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
        let mut insert = self
            .client
            .insert_formatted_with(sql)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        insert.send(Bytes::from(data)).await?;
        insert.end().await
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
        let (columns, data) = encoded?;
        let sql = format!(
            "INSERT INTO {}.{} ({columns}) FORMAT RowBinary",
            self.database,
            table(envelope.kind()),
        );
        match self.insert(sql, data).await {
            Ok(()) => {}
            Err(e) if server_code(&e).is_some_and(|c| DATA_ERRORS.contains(&c)) => {
                warn!(error = %e, batch_id = %envelope.batch_id(), "ClickHouse rejected the batch; dead-lettered");
                self.metrics
                    .sink_errors
                    .with_label_values(&["clickhouse_rejected"])
                    .inc();
                self.dead_letter(envelope, &e.to_string()).await?;
            }
            Err(e) => return Err(sink_error(e)),
        }
        self.record(envelope);
        Ok(())
    }
}

use rowbinary::bytes as rowbinary_bytes;

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

/// An envelope's insert: the column list and its rows in RowBinary (with
/// `row_in_batch`, part of the de-duplication key). One insert per
/// envelope: splitting one into concurrent inserts measured slower (more
/// parts for ClickHouse to write and merge; `benches/scaleout.sh`).
pub fn encode_insert(envelope: &Envelope) -> Result<(String, Vec<u8>)> {
    let batch = envelope.batch();
    let mut data = Vec::new();
    rowbinary::encode(batch, &mut data)?;
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .chain(["`row_in_batch`".to_string()])
        .collect();
    Ok((columns.join(", "), data))
}

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
}
