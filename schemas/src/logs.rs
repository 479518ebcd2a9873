//! The typed log record every receiver produces, and its Arrow builder.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt8Builder,
    UInt32Builder, new_null_array,
};
use arrow::datatypes::DataType;
use uuid::Uuid;

use crate::envelope::constant_utf8;
use crate::error::Result;
use crate::kind::RecordKind;
use crate::schema;
use crate::tenant::TenantId;

/// How well a record was understood. Records are never dropped for being
/// unparseable: they are stored with their raw bytes and this status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParseStatus {
    #[default]
    Ok,
    /// Longer than the receiver's maximum: kept, cut at the limit.
    Truncated,
    /// Not valid UTF-8: the text is lossy, `raw` holds the exact bytes.
    InvalidUtf8,
    /// Not understood at all: `message` is the lossy text, `raw` the bytes.
    Error,
}

impl ParseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ParseStatus::Ok => "ok",
            ParseStatus::Truncated => "truncated",
            ParseStatus::InvalidUtf8 => "invalid_utf8",
            ParseStatus::Error => "error",
        }
    }
}

impl fmt::Display for ParseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One log event, as produced by any receiver.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRecord {
    /// Event time, ms since the epoch (UTC).
    pub ts_ms: i64,
    /// When the receiver got it, ms since the epoch (UTC).
    pub received_ms: i64,
    pub host: Option<String>,
    pub app: Option<String>,
    pub pid: Option<String>,
    /// Syslog severity 0 (emergency) ..= 7 (debug).
    pub severity: Option<u8>,
    /// Syslog facility 0..=23.
    pub facility: Option<u8>,
    pub msg_id: Option<String>,
    pub message: String,
    pub source_ip: Option<String>,
    /// A JSON object, serialized.
    pub structured_data: Option<String>,
    pub raw: Option<Vec<u8>>,
    pub parse_status: ParseStatus,
    /// The receiver: `http`, `syslog_udp`, `syslog_tcp`, `hec`, `bulk`...
    pub input: &'static str,
    /// Size as received, in bytes.
    pub bytes: u32,
}

impl LogRecord {
    /// In-memory size: the struct itself plus what its fields hold on the
    /// heap — what the ingest budget reserves for it. (A `{}` object of 3
    /// bytes costs about 240 here, not the 64 once estimated: a 10 KB gzip
    /// body of them inflates to 3.5 M records.)
    pub fn approx_size(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        std::mem::size_of::<Self>()
            + self.message.capacity()
            + opt(&self.host)
            + opt(&self.app)
            + opt(&self.pid)
            + opt(&self.msg_id)
            + opt(&self.source_ip)
            + opt(&self.structured_data)
            + self.raw.as_ref().map_or(0, Vec::capacity)
    }
}

/// Severity names by number (RFC 5424 §6.2.1 keywords).
pub const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Facility names by number (RFC 5424 §6.2.1, the usual keywords).
pub const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

/// Maps a facility name (`auth`, `LOCAL0`...) to its number.
pub fn facility_from_name(name: &str) -> Option<u8> {
    let name = name.trim();
    FACILITY_NAMES
        .iter()
        .position(|f| f.eq_ignore_ascii_case(name))
        .map(|i| i as u8)
}

/// Maps a severity given as text (`err`, `warning`, `INFO`...) or digit to
/// the syslog number.
pub fn severity_from_name(name: &str) -> Option<u8> {
    let lower = name.trim().to_ascii_lowercase();
    Some(match lower.as_str() {
        "emerg" | "emergency" | "panic" | "0" => 0,
        "alert" | "1" => 1,
        "crit" | "critical" | "fatal" | "2" => 2,
        "err" | "error" | "3" => 3,
        "warn" | "warning" | "4" => 4,
        "notice" | "5" => 5,
        "info" | "informational" | "information" | "6" => 6,
        "debug" | "trace" | "7" => 7,
        _ => return None,
    })
}

/// Column-wise builder for a `logs` batch of one tenant.
pub struct LogBatchBuilder {
    ts: TimestampMillisecondBuilder,
    received: TimestampMillisecondBuilder,
    host: StringBuilder,
    app: StringBuilder,
    pid: StringBuilder,
    severity: UInt8Builder,
    facility: UInt8Builder,
    msg_id: StringBuilder,
    message: StringBuilder,
    source_ip: StringBuilder,
    structured_data: StringBuilder,
    raw: BinaryBuilder,
    parse_status: StringBuilder,
    input: StringBuilder,
    bytes: UInt32Builder,
    len: usize,
}

impl LogBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        let s = || StringBuilder::with_capacity(rows, rows * 8);
        Self {
            ts: TimestampMillisecondBuilder::with_capacity(rows),
            received: TimestampMillisecondBuilder::with_capacity(rows),
            host: s(),
            app: s(),
            pid: s(),
            severity: UInt8Builder::with_capacity(rows),
            facility: UInt8Builder::with_capacity(rows),
            msg_id: s(),
            message: StringBuilder::with_capacity(rows, rows * 128),
            source_ip: s(),
            structured_data: s(),
            raw: BinaryBuilder::with_capacity(rows, 0),
            parse_status: s(),
            input: s(),
            bytes: UInt32Builder::with_capacity(rows),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append(&mut self, r: &LogRecord) {
        self.ts.append_value(r.ts_ms);
        self.received.append_value(r.received_ms);
        self.host.append_option(r.host.as_deref());
        self.app.append_option(r.app.as_deref());
        self.pid.append_option(r.pid.as_deref());
        self.severity.append_option(r.severity);
        self.facility.append_option(r.facility);
        self.msg_id.append_option(r.msg_id.as_deref());
        self.message.append_value(&r.message);
        self.source_ip.append_option(r.source_ip.as_deref());
        self.structured_data
            .append_option(r.structured_data.as_deref());
        self.raw.append_option(r.raw.as_deref());
        self.parse_status.append_value(r.parse_status.as_str());
        self.input.append_value(r.input);
        self.bytes.append_value(r.bytes);
        self.len += 1;
    }

    /// Finishes the batch, stamping tenant and batch id on every row.
    pub fn finish(mut self, tenant: &TenantId, batch_id: Uuid) -> Result<RecordBatch> {
        let n = self.len;
        let utc = "UTC";
        let columns: Vec<ArrayRef> = vec![
            constant_utf8(tenant.as_str(), n),
            Arc::new(self.ts.finish().with_timezone(utc)),
            Arc::new(self.received.finish().with_timezone(utc)),
            constant_utf8(&batch_id.to_string(), n),
            Arc::new(self.host.finish()),
            Arc::new(self.app.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.facility.finish()),
            Arc::new(self.msg_id.finish()),
            Arc::new(self.message.finish()),
            Arc::new(self.source_ip.finish()),
            Arc::new(self.structured_data.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.parse_status.finish()),
            Arc::new(self.input.finish()),
            Arc::new(self.bytes.finish()),
            // GeoIP columns: the pipeline fills them (crate pipeline::geoip).
            new_null_array(&DataType::Utf8, n),
            new_null_array(&DataType::UInt32, n),
            new_null_array(&DataType::Utf8, n),
        ];
        Ok(RecordBatch::try_new(
            schema::schema(RecordKind::Logs),
            columns,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_batch_with_the_logs_schema() {
        let mut b = LogBatchBuilder::with_capacity(2);
        b.append(&LogRecord {
            ts_ms: 1,
            received_ms: 2,
            message: "hello".into(),
            severity: Some(3),
            raw: Some(vec![0xff]),
            parse_status: ParseStatus::InvalidUtf8,
            input: "http",
            bytes: 5,
            ..Default::default()
        });
        b.append(&LogRecord {
            message: "x".into(),
            input: "http",
            ..Default::default()
        });
        let t = TenantId::new("acme").unwrap();
        let batch = b.finish(&t, Uuid::nil()).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema::schema(RecordKind::Logs));
    }

    #[test]
    fn severity_names() {
        assert_eq!(severity_from_name("ERROR"), Some(3));
        assert_eq!(severity_from_name("warning"), Some(4));
        assert_eq!(severity_from_name("6"), Some(6));
        assert_eq!(severity_from_name("loud"), None);
    }
}
