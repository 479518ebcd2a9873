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

/// Loki's snappy-compressed protobuf push.
pub fn loki_protobuf(data: &[u8]) {
    let _ = crate::http::loki::parse_protobuf(data, 1 << 20, &tenant(), 0, 1 << 16, &mut free);
    // Valid snappy around arbitrary bytes, so the protobuf decoder is
    // reached too.
    if let Ok(block) = snap::raw::Encoder::new().compress_vec(data) {
        let _ =
            crate::http::loki::parse_protobuf(&block, 1 << 20, &tenant(), 0, 1 << 16, &mut free);
    }
}

/// OTLP logs: a protobuf and an OTLP/JSON `ExportLogsServiceRequest`,
/// mapped to records.
pub fn otlp(data: &[u8]) {
    for json in [false, true] {
        if let Ok(request) = crate::otlp::decode(data, json) {
            let _ = crate::otlp::map_request(request, &tenant(), 0, 1 << 16, &mut free);
        }
    }
}

/// GELF: one frame (plain, zlib or gzip JSON), and the bytes as a stream
/// of UDP datagrams (one length byte each) through chunk reassembly.
pub fn gelf(data: &[u8]) {
    let ctx = ParseContext {
        bsd_zone: chrono_tz::Tz::UTC,
        received_ms: 0,
        keep_raw: false,
        source_ip: None,
        input: "fuzz",
    };
    let _ = crate::gelf::parse(data, &ctx, 1 << 16);
    let mut assembler = crate::gelf::Assembler::new(1 << 16);
    let peer = std::net::IpAddr::from([192, 0, 2, 1]);
    let now = std::time::Instant::now();
    let mut rest = data;
    while let [len, tail @ ..] = rest {
        let (datagram, next) = tail.split_at((*len as usize).min(tail.len()));
        if let crate::gelf::Datagram::Complete(message) = assembler.accept(peer, datagram, now) {
            let _ = crate::gelf::parse(&message, &ctx, 1 << 16);
        }
        rest = next;
    }
}

/// Fluent forward: the stream scanned value by value as the server does,
/// each whole value decoded in every event mode and its records rendered.
pub fn fluent(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some(len)) = crate::fluent::value_len(rest) {
        let (value, next) = rest.split_at(len.min(rest.len()));
        if len == 0 {
            break;
        }
        if let Ok(events) = crate::fluent::decode(value, 1 << 16) {
            let tenant = tenant();
            for entry in events.entries {
                let entries = entry.record.entries();
                let size = entry.record.text.len();
                let _ = crate::json::map_entries(&entries, size, &tenant, 0, "fuzz", &[]);
            }
        }
        rest = next;
    }
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
    ("loki_protobuf", loki_protobuf),
    ("otlp", otlp),
    ("gelf", gelf),
    ("fluent", fluent),
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
