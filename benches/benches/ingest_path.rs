//! CPU stages of the ingest path, per ~300-byte NDJSON log object.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::testdata::{Format, GenConfig, Generator};
use schemas::{Envelope, LogBatchBuilder, PayloadCompression, RecordKind, TenantId};
use uuid::Uuid;

fn lines(n: usize) -> Vec<String> {
    Generator::new(GenConfig {
        seed: 1,
        tenants: vec![TenantId::new("acme").unwrap()],
        rows: n,
        anomalies: 0,
        start_ms: 1_795_651_200_000,
        duration_ms: 3_600_000,
    })
    .map(|e| e.render(Format::Ndjson))
    .collect()
}

fn bench(c: &mut Criterion) {
    let tenant = TenantId::new("acme").unwrap();
    let rows = 10_000;
    let lines = lines(rows);
    let body = lines.join("\n");
    let mut group = c.benchmark_group("ingest_path");
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("parse_ndjson_10k", |b| {
        b.iter(|| {
            let mut n = 0;
            for line in body.lines() {
                n += ingest::json::parse_record(line, &tenant, 0, "http").is_ok() as usize;
            }
            assert_eq!(n, rows);
        })
    });
    let records: Vec<_> = body
        .lines()
        .map(|l| ingest::json::parse_record(l, &tenant, 0, "http").unwrap())
        .collect();
    group.bench_function("build_batch_10k", |b| {
        b.iter(|| {
            let mut builder = LogBatchBuilder::with_capacity(rows);
            for r in &records {
                builder.append(r);
            }
            builder.finish(&tenant, Uuid::nil()).unwrap()
        })
    });
    let id = Uuid::now_v7();
    let mut builder = LogBatchBuilder::with_capacity(rows);
    records.iter().for_each(|r| builder.append(r));
    let envelope = Envelope::new(
        tenant.clone(),
        RecordKind::Logs,
        id,
        builder.finish(&tenant, id).unwrap(),
    )
    .unwrap();
    let encoded = envelope.encode(PayloadCompression::Zstd).unwrap();
    group.bench_function("envelope_encode_10k", |b| {
        b.iter(|| envelope.encode(PayloadCompression::Zstd).unwrap())
    });
    group.bench_function("envelope_encode_uncompressed_10k", |b| {
        b.iter(|| envelope.encode(PayloadCompression::None).unwrap())
    });
    group.bench_function("envelope_decode_10k", |b| {
        b.iter(|| Envelope::decode(envelope.headers().clone(), &encoded).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
