//! Streaming detector throughput: generated multi-tenant log batches (the
//! `securenet gen` generator, anomalies included) through the pipeline's
//! inline detectors, single thread, medians over runs, as JSON.
//!
//! Measured in the same run:
//! - `baseline_scan`: reading every column the detectors read (the floor:
//!   what touching the data costs).
//! - `usage`: billing-grade usage counting (one usage envelope per batch).
//! - `windows_and_scoring`: feature windows per tenant/host/minute, closing
//!   them as event time advances and scoring every closed window with the
//!   tenant's isolation forest (trained beforehand on the first pass, so
//!   this measures steady state, not the cold start).
//!
//!     detector_bench ROWS TENANTS RUNS

use std::time::Instant;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{TimestampMillisecondType, UInt8Type, UInt32Type};
use detectors::Detector;
use detectors::streaming::{ModelConfig, StreamingDetector};
use detectors::usage::UsageCounter;
use detectors::windows::WindowConfig;
use ingest::testdata::{GenConfig, Generator};
use schemas::{Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};

const BATCH: usize = 4096;

fn batches(rows: usize, tenants: usize) -> anyhow::Result<Vec<Envelope>> {
    let ids: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(&format!("tenant-{i}")))
        .collect::<Result<_, _>>()?;
    let generator = Generator::new(GenConfig {
        seed: 7,
        tenants: ids.clone(),
        rows,
        anomalies: rows / 20_000,
        start_ms: 1_795_651_200_000,
        // ~100 events per host-minute.
        duration_ms: (rows as i64 / tenants as i64 / 6 / 100).max(1) * 60_000,
    });
    let mut builders: std::collections::HashMap<TenantId, LogBatchBuilder> = Default::default();
    let mut out = Vec::new();
    let mut flush = |tenant: &TenantId, b: LogBatchBuilder| -> anyhow::Result<()> {
        let id = uuid::Uuid::now_v7();
        let batch = b.finish(tenant, id)?;
        out.push(Envelope::new(tenant.clone(), RecordKind::Logs, id, batch)?);
        Ok(())
    };
    for e in generator {
        let b = builders
            .entry(e.tenant.clone())
            .or_insert_with(|| LogBatchBuilder::with_capacity(BATCH));
        let bytes = e.message.len() as u32 + 40;
        b.append(&LogRecord {
            ts_ms: e.ts_ms,
            received_ms: e.ts_ms,
            host: Some(e.host),
            app: Some(e.app.to_string()),
            pid: Some(e.pid.to_string()),
            severity: Some(e.severity),
            facility: Some(e.facility),
            message: e.message,
            source_ip: e.source_ip,
            input: "http",
            bytes,
            ..Default::default()
        });
        if b.len() == BATCH {
            let full = builders
                .remove(&e.tenant)
                .unwrap_or_else(|| LogBatchBuilder::with_capacity(0));
            flush(&e.tenant, full)?;
        }
    }
    for (t, b) in builders {
        if !b.is_empty() {
            flush(&t, b)?;
        }
    }
    Ok(out)
}

/// Reads every column the detectors read; returns a checksum so the work
/// is not optimised away.
fn scan(envelopes: &[Envelope]) -> u64 {
    let mut sum = 0u64;
    for e in envelopes {
        let b = e.batch();
        let col = |n: &str| b.column_by_name(n).expect("column");
        let ts = col("ts").as_primitive::<TimestampMillisecondType>();
        let rcv = col("received_at").as_primitive::<TimestampMillisecondType>();
        let sev = col("severity").as_primitive::<UInt8Type>();
        let bytes = col("bytes").as_primitive::<UInt32Type>();
        let host = col("host").as_string::<i32>();
        let app = col("app").as_string::<i32>();
        let src = col("source_ip").as_string::<i32>();
        let msg = col("message").as_string::<i32>();
        for i in 0..b.num_rows() {
            sum = sum
                .wrapping_add(ts.value(i) as u64 ^ rcv.value(i) as u64)
                .wrapping_add(u64::from(sev.value(i)) + u64::from(bytes.value(i)))
                .wrapping_add(host.value(i).len() as u64 + app.value(i).len() as u64)
                .wrapping_add(msg.value(i).len() as u64);
            if src.is_valid(i) {
                sum = sum.wrapping_add(src.value(i).len() as u64);
            }
        }
    }
    sum
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: detector_bench ROWS TENANTS RUNS");
    let rows: usize = args[1].parse()?;
    let tenants: usize = args[2].parse()?;
    let runs: usize = args[3].parse()?;
    let envelopes = batches(rows, tenants)?;
    let total: usize = envelopes.iter().map(Envelope::num_rows).sum();
    let last_ts = envelopes
        .iter()
        .map(|e| {
            let ts = e
                .batch()
                .column(1)
                .as_primitive::<TimestampMillisecondType>();
            (0..ts.len()).map(|i| ts.value(i)).max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0);

    // Train every tenant's model on a first pass (steady state after).
    let models = ModelConfig {
        min_windows: 100,
        retrain_after_windows: usize::MAX,
        retrain_interval_ms: i64::MAX,
        ..Default::default()
    };
    let mut warm = StreamingDetector::new(WindowConfig::default(), models.clone());
    for e in &envelopes {
        warm.process_batch(e)?;
        warm.on_tick(0)?;
    }
    warm.on_shutdown()?;
    let until = Instant::now() + std::time::Duration::from_secs(60);
    while warm.training() && Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(10));
        warm.on_tick(0)?;
    }
    let trained: Vec<_> = (0..tenants)
        .filter_map(|i| warm.model(&TenantId::new(&format!("tenant-{i}")).ok()?))
        .collect();
    anyhow::ensure!(
        trained.len() == tenants,
        "only {} of {tenants} tenants trained",
        trained.len()
    );

    let (mut base, mut usage, mut windows) = (vec![], vec![], vec![]);
    let (mut scored, mut anomalies) = (0, 0);
    for run in 0..runs {
        let started = Instant::now();
        let check = scan(&envelopes);
        base.push(total as f64 / started.elapsed().as_secs_f64());

        let mut counter = UsageCounter;
        let started = Instant::now();
        let mut usage_rows = 0;
        for e in &envelopes {
            usage_rows += counter
                .process_batch(e)?
                .iter()
                .map(Envelope::num_rows)
                .sum::<usize>();
        }
        usage.push(total as f64 / started.elapsed().as_secs_f64());

        let mut d = StreamingDetector::new(WindowConfig::default(), models.clone());
        for m in &trained {
            d.restore((**m).clone());
        }
        let started = Instant::now();
        let mut emitted = 0;
        for (i, e) in envelopes.iter().enumerate() {
            d.process_batch(e)?;
            // A tick per 16 batches, as the pipeline ticks once a second.
            if i % 16 == 15 {
                emitted += d.on_tick(0)?.iter().map(Envelope::num_rows).sum::<usize>();
            }
        }
        emitted += d
            .on_shutdown()?
            .iter()
            .map(Envelope::num_rows)
            .sum::<usize>();
        windows.push(total as f64 / started.elapsed().as_secs_f64());
        scored = d.stats().windows_scored;
        anomalies = emitted;
        eprintln!(
            "run {run}: scan {:.0} rows/s (check {check}), usage {:.0} rows/s ({usage_rows} usage rows), windows+scoring {:.0} rows/s ({scored} windows, {emitted} anomalies)",
            base[run], usage[run], windows[run]
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "detectors",
            "rows": total,
            "tenants": tenants,
            "batch_rows": BATCH,
            "last_event_ms": last_ts,
            "windows_scored": scored,
            "anomalies": anomalies,
            "median_baseline_scan_rows_per_s": median(base).round(),
            "median_usage_rows_per_s": median(usage).round(),
            "median_windows_and_scoring_rows_per_s": median(windows).round(),
        })
    );
    Ok(())
}
