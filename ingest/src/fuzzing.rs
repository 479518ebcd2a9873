//! Entry points for the fuzz targets (`fuzz/`, `scripts/fuzz.sh`): every
//! parser of untrusted input this crate has, with a fixed context. Each
//! takes arbitrary bytes and must neither panic nor hang; what they return
//! does not matter. The unit test below replays every input the fuzzers
//! ever crashed on (`fuzz/regressions/<target>/`), so a fixed crash stays
//! fixed.

use schemas::TenantId;

use crate::syslog::framing::Framer;
use crate::syslog::parse::{ParseContext, parse};

fn tenant() -> TenantId {
    TenantId::new("fuzz").expect("a valid tenant id")
}

fn free(_: &schemas::LogRecord) -> crate::Result<()> {
    Ok(())
}

/// `POST /api/ingest/logs`: NDJSON, and the JSON-array form.
pub fn logs(data: &[u8]) {
    let _ = crate::http::logs::parse(data, true, &tenant(), 0, 1 << 20, &mut free);
    let _ = crate::http::logs::parse(data, false, &tenant(), 0, 1 << 20, &mut free);
}

/// One JSON log object → a record.
pub fn json_record(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::json::parse_record(text, &tenant(), 0, "fuzz");
    }
}

/// Splunk HEC `/services/collector/event`.
pub fn hec(data: &[u8]) {
    let _ = crate::http::hec::parse_events(data, &tenant(), 0, 1 << 20, &mut free);
}

/// Elasticsearch `_bulk`.
pub fn bulk(data: &[u8]) {
    let _ = crate::http::bulk::parse_bulk(data, "logs", &tenant(), 0, 1 << 20, &mut free);
}

/// Loki JSON push.
pub fn loki(data: &[u8]) {
    let _ = crate::http::loki::parse_push(data, &tenant(), 0, 1 << 20, &mut free);
}

/// One syslog message, RFC 5424 or 3164.
pub fn syslog(data: &[u8]) {
    let ctx = ParseContext {
        bsd_zone: chrono_tz::Tz::Europe__Berlin,
        received_ms: 1_795_687_200_000,
        keep_raw: true,
        source_ip: None,
        input: "fuzz",
    };
    let _ = parse(data, &ctx);
}

/// TCP framing (octet counting and newlines), fed in uneven chunks, with
/// every frame parsed.
pub fn syslog_stream(data: &[u8]) {
    let mut framer = Framer::new(256);
    let ctx = ParseContext {
        bsd_zone: chrono_tz::Tz::UTC,
        received_ms: 0,
        keep_raw: false,
        source_ip: None,
        input: "fuzz",
    };
    let step = 1 + data.first().map_or(0, |b| *b as usize % 64);
    for chunk in data.chunks(step) {
        framer.buffer().extend_from_slice(chunk);
        while let Some(f) = framer.next_frame() {
            let _ = parse(&f.bytes, &ctx);
        }
    }
    if let Some(f) = framer.finish() {
        let _ = parse(&f.bytes, &ctx);
    }
}

/// nmap XML (`nmap -oX`).
pub fn nmap(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::scans::nmap::parse(text);
    }
}

/// The JSON scan report and device inventory.
pub fn scan_report(data: &[u8]) {
    let _ = crate::scans::report::parse_report(data);
    let _ = crate::scans::report::parse_inventory(data);
}

/// A fuzz entry point: arbitrary bytes in, nothing out.
pub type Target = fn(&[u8]);

/// Every target, by name (`scripts/fuzz.sh` and the regression test).
pub const TARGETS: &[(&str, Target)] = &[
    ("logs", logs),
    ("json_record", json_record),
    ("hec", hec),
    ("bulk", bulk),
    ("loki", loki),
    ("syslog", syslog),
    ("syslog_stream", syslog_stream),
    ("nmap", nmap),
    ("scan_report", scan_report),
];

#[cfg(test)]
mod tests {
    /// Every input a fuzzer crashed on, replayed (the fixes stay fixed),
    /// and the kept corpus as a smoke run.
    #[test]
    fn fuzz_regressions_and_corpus_do_not_panic() {
        for (name, target) in super::TARGETS {
            for data in schemas::fuzzing::inputs(name) {
                target(&data);
            }
        }
    }
}
