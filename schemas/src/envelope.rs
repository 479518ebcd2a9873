//! The bus envelope: one Arrow IPC stream (schema + exactly one record batch)
//! plus five headers — `tenant`, `kind`, `schema_version`, `batch_id`,
//! `produced_at` — identical on Kafka and on the embedded bus.
//!
//! [`Envelope::new`] and [`Envelope::decode`] are the only ways to obtain an
//! envelope, and both enforce the invariants sinks rely on: the batch has the
//! schema of its kind, every row belongs to the header's tenant, and every row
//! carries the header's batch id.
//!
//! On Kafka the payload's buffers are compressed by Arrow IPC itself (zstd,
//! [`PayloadCompression`]), not by the Kafka client: the broker then stores
//! and serves opaque bytes whatever it is. Tansu decompresses and
//! re-encodes Kafka-level compressed batches on every produce, which cost it
//! ~5× the CPU of both SecureNet roles together (docs/benchmarks.md);
//! Apache Kafka keeps either form as it came. Decoding bounds what the
//! compressed buffers may claim to inflate to before arrow allocates it.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, new_null_array};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::kind::RecordKind;
use crate::schema::{self, SchemaVersion};
use crate::tenant::TenantId;

pub const HEADER_TENANT: &str = "tenant";
pub const HEADER_KIND: &str = "kind";
pub const HEADER_SCHEMA_VERSION: &str = "schema_version";
pub const HEADER_BATCH_ID: &str = "batch_id";
pub const HEADER_PRODUCED_AT: &str = "produced_at";

/// How an envelope's Arrow IPC buffers are compressed on the Kafka bus
/// (`bus.kafka.compression`). Readers accept either, so a topic may hold
/// both while producers are reconfigured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadCompression {
    None,
    /// zstd at [`ZSTD_LEVEL`], each buffer on its own.
    #[default]
    Zstd,
}

/// zstd level of bus payloads. They live only until the pipeline has
/// written them, so compression speed matters more than the last few
/// percent of size: level 1 compressed envelopes of log rows ~1.6× faster
/// than zstd's default 3 and no larger (`benches/benches/ingest_path.rs`,
/// `envelope_encode_10k` against `envelope_encode_zstd3_10k`; compression
/// was ~20 % of the ingest role's CPU in `perf`).
pub const ZSTD_LEVEL: i32 = 1;

/// The most a payload's compressed buffers may declare as their
/// uncompressed size together. arrow allocates what a buffer declares
/// before inflating it, so a damaged or hostile length must be refused
/// first; 1 GiB is ~16× the largest message the bus accepts.
pub const MAX_INFLATED_BYTES: u64 = 1 << 30;

/// Envelope metadata; on Kafka these are message headers (and the tenant is
/// also the message key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeaders {
    pub tenant: TenantId,
    pub kind: RecordKind,
    pub schema_version: SchemaVersion,
    /// UUIDv7: unique and time-ordered; sinks de-duplicate on it.
    pub batch_id: Uuid,
    /// Milliseconds since the epoch, UTC.
    pub produced_at: DateTime<Utc>,
}

impl EnvelopeHeaders {
    /// The headers as (name, value) pairs, in a fixed order.
    pub fn to_pairs(&self) -> [(&'static str, String); 5] {
        [
            (HEADER_TENANT, self.tenant.to_string()),
            (HEADER_KIND, self.kind.to_string()),
            (HEADER_SCHEMA_VERSION, self.schema_version.to_string()),
            (HEADER_BATCH_ID, self.batch_id.to_string()),
            (
                HEADER_PRODUCED_AT,
                self.produced_at.timestamp_millis().to_string(),
            ),
        ]
    }

    /// Parses headers from (name, value) pairs; unknown names are ignored so
    /// that transports may add their own.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self> {
        let (mut tenant, mut kind, mut version, mut batch_id, mut produced_at) =
            (None, None, None, None, None);
        for (name, value) in pairs {
            let slot = match name {
                HEADER_TENANT => &mut tenant,
                HEADER_KIND => &mut kind,
                HEADER_SCHEMA_VERSION => &mut version,
                HEADER_BATCH_ID => &mut batch_id,
                HEADER_PRODUCED_AT => &mut produced_at,
                _ => continue,
            };
            *slot = Some(value);
        }
        fn text<'a>(name: &'static str, v: Option<&'a [u8]>) -> Result<&'a str> {
            let v = v.ok_or(Error::MissingHeader { name })?;
            std::str::from_utf8(v).map_err(|_| Error::InvalidHeader {
                name,
                value: String::from_utf8_lossy(v).chars().take(64).collect(),
            })
        }
        let invalid = |name, value: &str| Error::InvalidHeader {
            name,
            value: value.chars().take(64).collect(),
        };
        let tenant = TenantId::new(text(HEADER_TENANT, tenant)?)?;
        let kind = text(HEADER_KIND, kind)?.parse()?;
        let schema_version = text(HEADER_SCHEMA_VERSION, version)?.parse()?;
        let id = text(HEADER_BATCH_ID, batch_id)?;
        let batch_id = Uuid::parse_str(id).map_err(|_| invalid(HEADER_BATCH_ID, id))?;
        let at = text(HEADER_PRODUCED_AT, produced_at)?;
        let produced_at = at
            .parse::<i64>()
            .ok()
            .and_then(DateTime::<Utc>::from_timestamp_millis)
            .ok_or_else(|| invalid(HEADER_PRODUCED_AT, at))?;
        Ok(Self {
            tenant,
            kind,
            schema_version,
            batch_id,
            produced_at,
        })
    }
}

/// A validated batch of one kind for one tenant.
#[derive(Debug, Clone)]
pub struct Envelope {
    headers: EnvelopeHeaders,
    batch: RecordBatch,
    position: Option<BusPosition>,
}

/// Where a delivered envelope came from on a partitioned bus (Kafka): what
/// a sink needs to tell a first delivery from a possible replay. Set by the
/// consumer, never encoded; envelopes derived from a delivery carry its
/// position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusPosition {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Changes whenever the partition is assigned to this consumer anew;
    /// a previous owner may have written anything at or after the
    /// committed offset before this epoch began.
    pub epoch: u64,
    /// Handed to the sinks before, in this process (a retry after a failed
    /// write, which may have landed anyway).
    pub redelivery: bool,
}

impl Envelope {
    /// Wraps a batch produced by this process. The batch must already carry
    /// `batch_id` in its `batch_id` column (see [`crate::LogBatchBuilder`]).
    pub fn new(
        tenant: TenantId,
        kind: RecordKind,
        batch_id: Uuid,
        batch: RecordBatch,
    ) -> Result<Self> {
        let headers = EnvelopeHeaders {
            tenant,
            kind,
            schema_version: schema::version(kind),
            batch_id,
            produced_at: DateTime::from_timestamp_millis(crate::time::now_ms()).unwrap_or_default(),
        };
        let batch = conform(&headers, batch)?;
        Ok(Self {
            headers,
            batch,
            position: None,
        })
    }

    pub fn headers(&self) -> &EnvelopeHeaders {
        &self.headers
    }
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }
    pub fn tenant(&self) -> &TenantId {
        &self.headers.tenant
    }
    pub fn kind(&self) -> RecordKind {
        self.headers.kind
    }
    pub fn batch_id(&self) -> Uuid {
        self.headers.batch_id
    }
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The same envelope with `batch` in place of its batch (an enrichment
    /// that filled columns); checked against the kind's schema again.
    pub fn with_batch(self, batch: RecordBatch) -> Result<Self> {
        let batch = conform(&self.headers, batch)?;
        Ok(Self {
            headers: self.headers,
            batch,
            position: self.position,
        })
    }

    /// Where the bus delivered this envelope from, if it says.
    pub fn position(&self) -> Option<&BusPosition> {
        self.position.as_ref()
    }

    /// The same envelope, delivered from `position`.
    pub fn with_position(mut self, position: Option<BusPosition>) -> Self {
        self.position = position;
        self
    }

    /// Encodes the batch as one Arrow IPC stream (schema + one batch), its
    /// buffers compressed as asked.
    pub fn encode(&self, compression: PayloadCompression) -> Result<Bytes> {
        let mut out = Vec::with_capacity(self.batch.get_array_memory_size() + 1024);
        let options = match compression {
            PayloadCompression::None => IpcWriteOptions::default(),
            PayloadCompression::Zstd => IpcWriteOptions::default()
                .try_with_compression(Some(CompressionType::ZSTD))?
                .try_with_compression_level(Some(ZSTD_LEVEL))?,
        };
        let mut writer =
            StreamWriter::try_new_with_options(&mut out, &self.batch.schema(), options)?;
        writer.write(&self.batch)?;
        writer.finish()?;
        drop(writer);
        Ok(Bytes::from(out))
    }

    /// Decodes and validates an envelope received from the bus.
    pub fn decode(headers: EnvelopeHeaders, payload: &[u8]) -> Result<Self> {
        // arrow-ipc trusts the flatbuffer it reads and panics on some damaged
        // input (e.g. an unknown type id). Bus bytes can come from anywhere,
        // and a panic here would turn one bad message into a poison pill that
        // stops its partition, so a panic is reported as a corrupt payload.
        let batch =
            std::panic::catch_unwind(|| read_single_batch(payload)).unwrap_or_else(|panic| {
                let why = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("reader panicked");
                Err(Error::CorruptPayload(format!("malformed Arrow IPC: {why}")))
            })?;
        let batch = conform(&headers, batch)?;
        Ok(Self {
            headers,
            batch,
            position: None,
        })
    }
}

fn read_single_batch(payload: &[u8]) -> Result<RecordBatch> {
    check_framing(payload)?;
    let corrupt = |e: arrow::error::ArrowError| Error::CorruptPayload(e.to_string());
    let mut reader = StreamReader::try_new(payload, None).map_err(corrupt)?;
    let batch = match reader.next() {
        Some(batch) => batch.map_err(corrupt)?,
        None => return Err(Error::CorruptPayload("stream holds no record batch".into())),
    };
    if let Some(extra) = reader.next() {
        extra.map_err(corrupt)?;
        return Err(Error::CorruptPayload(
            "stream holds more than one record batch".into(),
        ));
    }
    Ok(batch)
}

/// Walks the IPC stream's message frames and checks that every declared
/// length fits in the payload, before arrow allocates buffers of the sizes a
/// (possibly damaged) header claims: a flipped bit in a body length must be a
/// corrupt-payload error, not a multi-gigabyte allocation.
fn check_framing(payload: &[u8]) -> Result<()> {
    let corrupt = |detail: String| Error::CorruptPayload(detail);
    let mut at = 0usize;
    loop {
        let word = |at: usize| -> Result<u32> {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| corrupt(format!("stream ends inside a frame header at byte {at}")))
        };
        let mut len = word(at)?;
        at += 4;
        if len == 0xFFFF_FFFF {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            return Ok(()); // end-of-stream marker
        }
        let meta = payload.get(at..at + len as usize).ok_or_else(|| {
            corrupt(format!(
                "message header of {len} bytes runs past the payload"
            ))
        })?;
        let message = arrow::ipc::root_as_message(meta)
            .map_err(|e| corrupt(format!("invalid message header: {e}")))?;
        at += len as usize;
        let body = usize::try_from(message.bodyLength())
            .ok()
            .filter(|body| *body <= payload.len() - at)
            .ok_or_else(|| {
                corrupt(format!(
                    "message body of {} bytes runs past the payload",
                    message.bodyLength()
                ))
            })?;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        if let Some(batch) = batch {
            check_inflation(&batch, &payload[at..at + body])?;
        }
        at += body;
    }
}

/// A compressed batch's buffers each start with the size they inflate to,
/// which arrow allocates before inflating: checks that every buffer lies in
/// the body, that the codec is zstd (the only one written; arrow's LZ4
/// frame reader would inflate past the declared size) and that the sizes
/// together stay under [`MAX_INFLATED_BYTES`].
fn check_inflation(batch: &arrow::ipc::RecordBatch<'_>, body: &[u8]) -> Result<()> {
    let Some(compression) = batch.compression() else {
        return Ok(());
    };
    if compression.codec() != CompressionType::ZSTD {
        return Err(Error::CorruptPayload(format!(
            "compression codec {:?} is not accepted (zstd only)",
            compression.codec()
        )));
    }
    let mut total: u64 = 0;
    for buffer in batch.buffers().into_iter().flatten() {
        let bytes = usize::try_from(buffer.offset())
            .ok()
            .zip(usize::try_from(buffer.length()).ok())
            .and_then(|(offset, length)| body.get(offset..offset.checked_add(length)?))
            .ok_or_else(|| {
                Error::CorruptPayload(format!(
                    "buffer at {} of {} bytes runs past its message body",
                    buffer.offset(),
                    buffer.length()
                ))
            })?;
        // An empty buffer has no prefix; -1 means stored uncompressed.
        let Some(prefix) = bytes.first_chunk::<8>() else {
            continue;
        };
        let declared = i64::from_le_bytes(*prefix);
        if declared == -1 {
            continue;
        }
        total = u64::try_from(declared)
            .ok()
            .and_then(|declared| total.checked_add(declared))
            .filter(|total| *total <= MAX_INFLATED_BYTES)
            .ok_or_else(|| {
                Error::CorruptPayload(format!(
                    "compressed buffers declare more than {MAX_INFLATED_BYTES} bytes (buffer declares {declared})"
                ))
            })?;
    }
    Ok(())
}

/// Brings `batch` to the current schema of the header's kind and checks the
/// per-row invariants. Accepts the same major version only: an older minor is
/// padded with null columns, a newer minor has its extra columns dropped.
fn conform(headers: &EnvelopeHeaders, batch: RecordBatch) -> Result<RecordBatch> {
    let kind = headers.kind;
    let ours = schema::version(kind);
    let expected = schema::schema(kind);
    let theirs = headers.schema_version;
    let mismatch = |detail: String| Error::SchemaMismatch {
        kind,
        version: theirs.to_string(),
        detail,
    };
    if theirs.major != ours.major {
        return Err(mismatch(format!(
            "unsupported major version (this build reads {}.x)",
            ours.major
        )));
    }
    let actual = batch.schema();
    let batch = if actual.fields().len() < expected.fields().len() && theirs.minor < ours.minor {
        // Pad an older minor version: the missing columns must be nullable.
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for field in expected.fields().iter().skip(actual.fields().len()) {
            if !field.is_nullable() {
                return Err(mismatch(format!(
                    "missing non-null column {:?}",
                    field.name()
                )));
            }
            columns.push(new_null_array(field.data_type(), batch.num_rows()));
        }
        RecordBatch::try_new(expected.clone(), columns)?
    } else {
        match schema::fields_match(&expected, &actual) {
            Ok(0) => batch,
            Ok(_) if theirs.minor > ours.minor => {
                batch.project(&(0..expected.fields().len()).collect::<Vec<_>>())?
            }
            Ok(extra) => return Err(mismatch(format!("{extra} unexpected extra column(s)"))),
            Err(detail) => {
                return Err(match schema::kind_of(&actual) {
                    Some(other) if other != kind => Error::WrongKind {
                        header: kind,
                        actual: other.to_string(),
                    },
                    _ => mismatch(detail),
                });
            }
        }
    };
    // Re-attach our schema so field metadata is identical across producers.
    let batch = RecordBatch::try_new(expected, batch.columns().to_vec())?;
    check_rows(headers, &batch)?;
    Ok(batch)
}

fn string_column(batch: &RecordBatch, index: usize) -> Result<&StringArray> {
    batch
        .column(index)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::CorruptPayload(format!("column {index} is not utf8")))
}

fn check_rows(headers: &EnvelopeHeaders, batch: &RecordBatch) -> Result<()> {
    let tenants = string_column(batch, 0)?;
    let tenant = headers.tenant.as_str();
    if let Some(row) =
        (0..tenants.len()).find(|&i| tenants.is_null(i) || tenants.value(i) != tenant)
    {
        return Err(Error::MixedTenants {
            header: tenant.to_string(),
            row,
            found: if tenants.is_null(row) {
                "null".into()
            } else {
                tenants.value(row).chars().take(80).collect()
            },
        });
    }
    let ids = string_column(batch, 3)?;
    let id = headers.batch_id.to_string();
    if let Some(row) = (0..ids.len()).find(|&i| ids.is_null(i) || ids.value(i) != id) {
        return Err(Error::InvalidHeader {
            name: HEADER_BATCH_ID,
            value: format!("{id} (row {row} carries {:?})", ids.value(row)),
        });
    }
    Ok(())
}

/// Helper for producers: a constant string column of `len` rows.
pub fn constant_utf8(value: &str, len: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
        value, len,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogBatchBuilder, LogRecord};

    fn tenant(t: &str) -> TenantId {
        TenantId::new(t).unwrap()
    }

    fn logs(t: &str, n: usize) -> (Uuid, RecordBatch) {
        let id = Uuid::now_v7();
        let mut b = LogBatchBuilder::with_capacity(n);
        for i in 0..n {
            b.append(&LogRecord {
                ts_ms: 1_700_000_000_000 + i as i64,
                message: format!("message {i}"),
                host: Some("web-1".into()),
                ..LogRecord::default()
            });
        }
        (id, b.finish(&tenant(t), id).unwrap())
    }

    fn round_trip(env: &Envelope, compression: PayloadCompression) -> Result<Envelope> {
        let bytes = env.encode(compression)?;
        let pairs = env.headers().to_pairs();
        let headers = EnvelopeHeaders::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_bytes())))?;
        Envelope::decode(headers, &bytes)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// The decoder meets bus bytes from anywhere: arbitrary input and
        /// damaged real payloads are errors, never panics.
        #[test]
        fn decoding_damaged_or_arbitrary_bytes_never_panics(
            garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            flips in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..16),
            cut in proptest::num::usize::ANY,
            zstd in proptest::bool::ANY,
        ) {
            let (id, batch) = logs("acme", 4);
            let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
            let _ = Envelope::decode(env.headers().clone(), &garbage);
            let compression = if zstd { PayloadCompression::Zstd } else { PayloadCompression::None };
            let mut bytes = env.encode(compression).unwrap().to_vec();
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] ^= value | 1;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if let Ok(back) = Envelope::decode(env.headers().clone(), &bytes) {
                // Whatever survives validation still satisfies the contract.
                proptest::prop_assert_eq!(back.tenant(), env.tenant());
            }
        }
    }

    #[test]
    fn round_trips_batch_and_headers() {
        let (id, batch) = logs("acme", 10);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch.clone()).unwrap();
        for compression in [PayloadCompression::None, PayloadCompression::Zstd] {
            let back = round_trip(&env, compression).unwrap();
            assert_eq!(back.headers(), env.headers());
            assert_eq!(back.batch(), &batch);
            assert_eq!(back.num_rows(), 10);
        }
    }

    #[test]
    fn zstd_payloads_are_smaller() {
        let (id, batch) = logs("acme", 2_000);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
        let plain = env.encode(PayloadCompression::None).unwrap().len();
        let zstd = env.encode(PayloadCompression::Zstd).unwrap().len();
        assert!(zstd * 4 < plain, "zstd {zstd} bytes, plain {plain}");
    }

    /// Where each buffer of the stream's record batch starts in `payload`.
    fn buffer_starts(payload: &[u8]) -> Vec<usize> {
        let mut at = 0;
        loop {
            let mut len = u32::from_le_bytes(payload[at..at + 4].try_into().unwrap()) as usize;
            at += 4;
            if len == 0xFFFF_FFFF {
                len = u32::from_le_bytes(payload[at..at + 4].try_into().unwrap()) as usize;
                at += 4;
            }
            let message = arrow::ipc::root_as_message(&payload[at..at + len]).unwrap();
            at += len;
            if let Some(batch) = message.header_as_record_batch() {
                return batch
                    .buffers()
                    .unwrap()
                    .iter()
                    .filter(|b| b.length() >= 8)
                    .map(|b| at + b.offset() as usize)
                    .collect();
            }
            at += message.bodyLength() as usize;
        }
    }

    #[test]
    fn a_buffer_claiming_to_inflate_past_the_bound_is_refused_before_allocating() {
        let (id, batch) = logs("acme", 100);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
        let bytes = env.encode(PayloadCompression::Zstd).unwrap();
        let starts = buffer_starts(&bytes);
        assert!(starts.len() > 3);
        for declared in [i64::MAX, (MAX_INFLATED_BYTES + 1) as i64, -2] {
            let mut damaged = bytes.to_vec();
            damaged[starts[2]..starts[2] + 8].copy_from_slice(&declared.to_le_bytes());
            let err = Envelope::decode(env.headers().clone(), &damaged).unwrap_err();
            assert!(
                err.to_string().contains(&format!(
                    "compressed buffers declare more than {MAX_INFLATED_BYTES} bytes"
                )),
                "{err}"
            );
        }
        // Many buffers each under the bound but over it together.
        let mut damaged = bytes.to_vec();
        for start in &starts {
            damaged[*start..*start + 8]
                .copy_from_slice(&((MAX_INFLATED_BYTES / 2) as i64).to_le_bytes());
        }
        let err = Envelope::decode(env.headers().clone(), &damaged).unwrap_err();
        assert!(
            err.to_string().contains("compressed buffers declare more"),
            "{err}"
        );
    }

    #[test]
    fn lz4_payloads_are_refused_with_the_codec_named() {
        let (id, batch) = logs("acme", 10);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch.clone()).unwrap();
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        let mut out = Vec::new();
        let mut writer =
            StreamWriter::try_new_with_options(&mut out, &batch.schema(), options).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let err = Envelope::decode(env.headers().clone(), &out).unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt envelope payload: compression codec LZ4_FRAME is not accepted (zstd only)"
        );
    }

    #[test]
    fn corrupt_payload_is_a_clear_error() {
        let (id, batch) = logs("acme", 3);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
        let mut bytes = env.encode(PayloadCompression::Zstd).unwrap().to_vec();
        bytes.truncate(bytes.len() / 2);
        let err = Envelope::decode(env.headers().clone(), &bytes).unwrap_err();
        assert!(matches!(err, Error::CorruptPayload(_)), "{err}");
        let err = Envelope::decode(env.headers().clone(), b"not arrow at all").unwrap_err();
        assert!(
            err.to_string().starts_with("corrupt envelope payload"),
            "{err}"
        );
    }

    #[test]
    fn wrong_kind_names_both_kinds() {
        let (id, batch) = logs("acme", 3);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
        let mut headers = env.headers().clone();
        headers.kind = RecordKind::Devices;
        let err =
            Envelope::decode(headers, &env.encode(PayloadCompression::Zstd).unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "envelope says kind devices but the batch has the schema of logs"
        );
    }

    #[test]
    fn schema_mismatch_names_the_column() {
        let (id, batch) = logs("acme", 3);
        // Drop the `message` column: no kind has that shape.
        let idx: Vec<usize> = (0..batch.num_columns())
            .filter(|&i| batch.schema().field(i).name() != "message")
            .collect();
        let broken = batch.project(&idx).unwrap();
        let err = Envelope::new(tenant("acme"), RecordKind::Logs, id, broken).unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            msg,
            "schema mismatch for logs v1.1: missing column \"message\" (19 columns, expected 20)"
        );
    }

    #[test]
    fn a_logs_batch_of_schema_1_0_is_padded_with_the_geoip_columns() {
        let (id, batch) = logs("acme", 3);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch.clone()).unwrap();
        // What a 1.0 producer sent: the columns before `source_country`.
        let old = batch.project(&(0..17).collect::<Vec<_>>()).unwrap();
        let mut out = Vec::new();
        let mut writer = StreamWriter::try_new(&mut out, &old.schema()).unwrap();
        writer.write(&old).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let mut headers = env.headers().clone();
        headers.schema_version = SchemaVersion { major: 1, minor: 0 };
        let decoded = Envelope::decode(headers, &out).unwrap();
        assert_eq!(decoded.batch().num_columns(), 20);
        for name in ["source_country", "source_asn", "source_as_org"] {
            let column = decoded.batch().column_by_name(name).unwrap();
            assert_eq!(column.null_count(), 3, "{name}");
        }
    }

    #[test]
    fn unsupported_major_version_is_refused() {
        let (id, batch) = logs("acme", 1);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
        let mut headers = env.headers().clone();
        headers.schema_version = SchemaVersion { major: 2, minor: 0 };
        let err =
            Envelope::decode(headers, &env.encode(PayloadCompression::Zstd).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("unsupported major version"),
            "{err}"
        );
    }

    #[test]
    fn two_tenants_in_one_batch_are_refused() {
        let (id, a) = logs("acme", 2);
        let mut tenants: Vec<ArrayRef> = a.columns().to_vec();
        tenants[0] = Arc::new(StringArray::from(vec!["acme", "globex"]));
        let mixed = RecordBatch::try_new(a.schema(), tenants).unwrap();
        let err = Envelope::new(tenant("acme"), RecordKind::Logs, id, mixed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "batch belongs to tenant acme but row 1 has tenant \"globex\""
        );
    }

    #[test]
    fn header_errors_name_the_header() {
        let (id, batch) = logs("acme", 1);
        let env = Envelope::new(tenant("acme"), RecordKind::Logs, id, batch).unwrap();
        let pairs = env.headers().to_pairs();
        let missing = EnvelopeHeaders::from_pairs(
            pairs
                .iter()
                .filter(|(k, _)| *k != HEADER_BATCH_ID)
                .map(|(k, v)| (*k, v.as_bytes())),
        )
        .unwrap_err();
        assert_eq!(missing.to_string(), "envelope header batch_id is missing");
        let bad = EnvelopeHeaders::from_pairs(pairs.iter().map(|(k, v)| {
            (
                *k,
                if *k == HEADER_KIND {
                    &b"lawgs"[..]
                } else {
                    v.as_bytes()
                },
            )
        }))
        .unwrap_err();
        assert!(
            bad.to_string().starts_with("unknown record kind \"lawgs\""),
            "{bad}"
        );
    }

    #[test]
    fn batch_id_column_must_match_header() {
        let (_, batch) = logs("acme", 2);
        let err =
            Envelope::new(tenant("acme"), RecordKind::Logs, Uuid::now_v7(), batch).unwrap_err();
        assert!(err.to_string().contains("batch_id"), "{err}");
    }
}
