//! GeoIP enrichment on one core: `logs` batches of 8,192 rows through
//! `pipeline::geoip::GeoIp::enrich_batch` (country and ASN databases),
//! beside the floor of any enrichment — parsing every `source_ip` — in the
//! same run. Two address mixes: a pool of 50,000 addresses (sources repeat
//! across batches, as in real logs: after the first run they come from the
//! stage's cache), and every row a different address (nothing repeats: a
//! database lookup per row, the worst case). Prints one JSON object:
//! medians over RUNS, and the first run's rate (cold cache).
//!
//!   geoip_bench ROWS RUNS DIR   # DIR: country.mmdb, asn.mmdb, addresses.txt
//!                               # (scripts/geoip_testdb.py DIR NETWORKS)

use std::path::PathBuf;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use pipeline::geoip::{GeoIp, GeoIpConfig};
use schemas::{LogBatchBuilder, LogRecord, TenantId};

const BATCH: usize = 8192;

fn batches(addresses: &[String], rows: usize, unique: bool) -> Vec<RecordBatch> {
    let tenant = TenantId::new("bench").expect("tenant");
    let mut out = Vec::new();
    let mut b = LogBatchBuilder::with_capacity(BATCH);
    for i in 0..rows {
        let ip = if unique {
            // Same /24 as a pool address, a different host per row.
            let base = &addresses[i % addresses.len()];
            let prefix = &base[..base.rfind('.').unwrap_or(base.len())];
            format!("{prefix}.{}", (i / addresses.len()) % 254 + 1)
        } else {
            addresses[(i.wrapping_mul(2_654_435_761)) % addresses.len()].clone()
        };
        b.append(&LogRecord {
            message: "m".into(),
            source_ip: Some(ip),
            input: "bench",
            ..Default::default()
        });
        if b.len() == BATCH {
            let full = std::mem::replace(&mut b, LogBatchBuilder::with_capacity(BATCH));
            out.push(full.finish(&tenant, uuid::Uuid::nil()).expect("batch"));
        }
    }
    if !b.is_empty() {
        out.push(b.finish(&tenant, uuid::Uuid::nil()).expect("batch"));
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Rows per second of `f` over `batches`: the median of `runs` and the
/// first run's; and what `f` counted (kept so the work is not optimised
/// away).
fn measure(
    runs: usize,
    batches: &[RecordBatch],
    f: impl Fn(&RecordBatch) -> usize,
) -> (f64, f64, usize) {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut rates = Vec::new();
    let mut counted = 0;
    for _ in 0..runs {
        let start = Instant::now();
        counted = batches.iter().map(&f).sum();
        rates.push(rows as f64 / start.elapsed().as_secs_f64());
    }
    (median(rates.clone()), rates[0], counted)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: geoip_bench ROWS RUNS DIR");
    let rows: usize = args[1].parse()?;
    let runs: usize = args[2].parse()?;
    let dir = PathBuf::from(&args[3]);
    let addresses: Vec<String> = std::fs::read_to_string(dir.join("addresses.txt"))?
        .lines()
        .map(str::to_string)
        .collect();
    let config = GeoIpConfig {
        country_db: Some(dir.join("country.mmdb")),
        asn_db: Some(dir.join("asn.mmdb")),
    };
    let scan = |batch: &RecordBatch| {
        let ips = batch
            .column_by_name("source_ip")
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
        ips.map_or(0, |ips| {
            ips.iter()
                .flatten()
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok())
                .count()
        })
    };
    let mut report = serde_json::json!({"rows": rows, "batch_rows": BATCH, "runs": runs});
    for (name, unique) in [("pool_50000", false), ("every_row_distinct", true)] {
        // A stage of its own per mix: its first run starts with an empty
        // cache (cold); later runs find the addresses they share (warm).
        // Opening the databases builds their IPv4 indexes: timed apart.
        let loading = Instant::now();
        let geoip = GeoIp::start(&config, &prometheus::Registry::new())?
            .ok_or_else(|| anyhow::anyhow!("no database"))?;
        let load_ms = loading.elapsed().as_secs_f64() * 1e3;
        let enrich = |batch: &RecordBatch| {
            let out = geoip.enrich_batch(batch).expect("enrich");
            let located = out.column_by_name("source_country").expect("column");
            located.len() - located.null_count()
        };
        let data = batches(&addresses, rows, unique);
        let (floor, _, parsed) = measure(runs, &data, scan);
        let (rate, cold, located) = measure(runs, &data, enrich);
        report[name] = serde_json::json!({
            "parse_floor_rows_per_s": floor.round(),
            "geoip_rows_per_s": rate.round(),
            "geoip_first_run_rows_per_s": cold.round(),
            "geoip_ns_per_row": (1e9 / rate).round(),
            "ratio_to_floor": (rate / floor * 1000.0).round() / 1000.0,
            "rows_parsed": parsed,
            "rows_located": located,
            "load_ms": load_ms.round(),
        });
    }
    println!("{report}");
    Ok(())
}
