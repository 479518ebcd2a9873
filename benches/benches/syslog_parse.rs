//! Syslog parse rate per core for ~300-byte lines (RFC 5424 and RFC 3164),
//! and TCP framing of the same lines. One thread: the figure is per core.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::syslog::framing::Framer;
use ingest::syslog::parse::{ParseContext, parse};
use ingest::testdata::{Format, GenConfig, Generator};
use schemas::TenantId;

const LINES: usize = 10_000;
const TARGET: usize = 300;

/// Realistic generated lines, padded with key=value context (as web and
/// firewall logs carry) to about 300 bytes each.
fn lines(format: Format) -> Vec<Vec<u8>> {
    Generator::new(GenConfig {
        seed: 7,
        tenants: vec![TenantId::new("acme").unwrap()],
        rows: LINES,
        anomalies: 0,
        start_ms: 1_795_651_200_000,
        duration_ms: 3_600_000,
    })
    .enumerate()
    .map(|(i, e)| {
        let mut line = e.render(format);
        let mut k = 0;
        while line.len() < TARGET {
            line.push_str(&format!(" req{k}={:08x}", i * 31 + k));
            k += 1;
        }
        line.into_bytes()
    })
    .collect()
}

fn bench(c: &mut Criterion) {
    let ctx = ParseContext {
        bsd_zone: chrono_tz::UTC,
        received_ms: 1_795_651_200_000,
        keep_raw: false,
        source_ip: Some("10.0.0.1".into()),
        input: "syslog_tcp",
    };
    let mut group = c.benchmark_group("syslog_parse");
    group.throughput(Throughput::Elements(LINES as u64));
    for (name, format) in [
        ("rfc5424_300B", Format::Rfc5424),
        ("rfc3164_300B", Format::Rfc3164),
    ] {
        let lines = lines(format);
        let avg = lines.iter().map(Vec::len).sum::<usize>() / lines.len();
        eprintln!("{name}: {} lines, {avg} bytes on average", lines.len());
        // Every line must parse cleanly, or the figure would flatter errors.
        assert!(
            lines
                .iter()
                .all(|l| parse(l, &ctx).record.parse_status == schemas::ParseStatus::Ok)
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut bytes = 0usize;
                for line in &lines {
                    bytes += parse(line, &ctx).record.message.len();
                }
                bytes
            })
        });
    }
    // Framing of the RFC 5424 stream in 64 KiB reads: octet-counted (RFC
    // 6587), newline-terminated (its non-transparent framing) and
    // NUL-terminated (GELF over TCP).
    let framed = |frame: &dyn Fn(&[u8]) -> Vec<u8>| -> Vec<u8> {
        lines(Format::Rfc5424)
            .iter()
            .flat_map(|l| frame(l))
            .collect()
    };
    let counted = framed(&|l| [format!("{} ", l.len()).as_bytes(), l].concat());
    let newline = framed(&|l| [l, b"\n"].concat());
    let nul = framed(&|l| [l, b"\0"].concat());
    for (name, stream, framer) in [
        (
            "frame_octet_counted_300B",
            &counted,
            Framer::new as fn(usize) -> Framer,
        ),
        ("frame_newline_300B", &newline, Framer::new),
        ("frame_nul_300B", &nul, Framer::nul_delimited),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = framer(8192);
                let mut n = 0;
                for chunk in stream.chunks(64 * 1024) {
                    framer.buffer().extend_from_slice(chunk);
                    while framer.next_frame().is_some() {
                        n += 1;
                    }
                }
                assert_eq!(n, LINES);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
