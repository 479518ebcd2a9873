//! CPU stages of the ingest path, per ~300-byte NDJSON log object: parsing,
//! batches, bus envelopes, the ClickHouse sink's encoding, and OTLP decoding.

use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::testdata::{Event, Format, GenConfig, Generator};
use schemas::{Envelope, LogBatchBuilder, PayloadCompression, RecordKind, TenantId};
use uuid::Uuid;

/// An Arrow IPC stream of `batch`, zstd level 3 (arrow's default).
fn ipc_zstd3(batch: &RecordBatch) -> Vec<u8> {
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .and_then(|o| o.try_with_compression_level(Some(3)))
        .unwrap();
    let mut out = Vec::new();
    let mut writer =
        StreamWriter::try_new_with_options(&mut out, &batch.schema(), options).unwrap();
    writer.write(batch).unwrap();
    writer.finish().unwrap();
    drop(writer);
    out
}

/// `n` generated log events of one organization.
fn events(n: usize) -> Vec<Event> {
    Generator::new(GenConfig {
        seed: 1,
        tenants: vec![TenantId::new("acme").unwrap()],
        rows: n,
        anomalies: 0,
        start_ms: 1_795_651_200_000,
        duration_ms: 3_600_000,
    })
    .collect()
}

fn lines(n: usize) -> Vec<String> {
    events(n).iter().map(|e| e.render(Format::Ndjson)).collect()
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
    // The baseline of the level choice (`schemas::envelope::ZSTD_LEVEL`):
    // the same batch at zstd's default level 3.
    eprintln!(
        "10k log rows: {} bytes at zstd level {}, {} bytes at level 3",
        encoded.len(),
        schemas::envelope::ZSTD_LEVEL,
        ipc_zstd3(envelope.batch()).len()
    );
    group.bench_function("envelope_encode_zstd3_10k", |b| {
        b.iter(|| ipc_zstd3(envelope.batch()))
    });
    group.bench_function("envelope_encode_uncompressed_10k", |b| {
        b.iter(|| envelope.encode(PayloadCompression::None).unwrap())
    });
    group.bench_function("clickhouse_native_10k", |b| {
        b.iter(|| pipeline::sinks::clickhouse::encode_insert(&envelope).unwrap())
    });
    group.bench_function("envelope_decode_10k", |b| {
        b.iter(|| Envelope::decode(envelope.headers().clone(), &encoded).unwrap())
    });
    group.finish();
}

/// The same 2,000-record export decoded by prost into the generated owned
/// types (from a `BytesMut` as tonic's prost codec did, from `Bytes`, from
/// a slice) and by the receiver's borrowed views (`ingest::otlp::view`,
/// what OTLP/gRPC and OTLP/HTTP use); its OTLP/JSON form decoded by
/// opentelemetry-proto's serde types and by the views; and each form
/// decoded and mapped to records, as the receiver does.
fn otlp_decode(c: &mut Criterion) {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use prost::Message as _;
    let payload = securenet_benches::protocols::encode(
        securenet_benches::protocols::Protocol::OtlpGrpc,
        &events(2_000),
        "",
    )
    .data;
    let mut group = c.benchmark_group("otlp_decode");
    group.throughput(Throughput::Elements(2_000));
    group.bench_function("from_bytes_mut_2k", |b| {
        b.iter_batched(
            || bytes::BytesMut::from(&payload[..]),
            |mut buf| ExportLogsServiceRequest::decode(&mut buf).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("from_bytes_2k", |b| {
        b.iter_batched(
            || bytes::Bytes::copy_from_slice(&payload[..]),
            |buf| ExportLogsServiceRequest::decode(buf).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("from_slice_2k", |b| {
        b.iter_batched(
            || &payload[..],
            |buf| ExportLogsServiceRequest::decode(buf).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("views_from_slice_2k", |b| {
        b.iter(|| ingest::otlp::view::Request::decode(&payload).unwrap())
    });
    let json = securenet_benches::protocols::encode(
        securenet_benches::protocols::Protocol::OtlpJson,
        &events(2_000),
        "",
    )
    .data;
    group.bench_function("json_serde_owned_2k", |b| {
        b.iter(|| serde_json::from_slice::<ExportLogsServiceRequest>(&json).unwrap())
    });
    group.bench_function("json_views_2k", |b| {
        b.iter(|| ingest::otlp::view::Request::from_json(&json).unwrap())
    });
    let tenant = TenantId::new("acme").unwrap();
    for (name, body, is_json) in [
        ("map_protobuf_2k", &payload, false),
        ("map_json_2k", &json, true),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let request = ingest::otlp::decode(body, is_json).unwrap();
                ingest::otlp::map_request(request, &tenant, 0, 1 << 16, &mut |_| Ok(())).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, otlp_decode);
criterion_main!(benches);
