//! End-to-end load generator for `POST /api/ingest/logs`.
//!
//! `loadgen http` pre-renders NDJSON bodies with the seeded generator, sends
//! them with bounded concurrency, and reports acknowledged rows per second
//! (only 2xx answers count; SecureNet answers once rows are in Parquet).
//! `loadgen null-server` is the baseline: an HTTP server that reads and
//! discards bodies, i.e. the ceiling of HTTP + client on this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use ingest::testdata::{Format, GenConfig, Generator};
use schemas::TenantId;
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send generated NDJSON to a SecureNet (or the null server).
    Http {
        /// Base URL, e.g. http://127.0.0.1:8080
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "none")]
        key: String,
        /// Rows per run.
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
        /// Rows per request.
        #[arg(long, default_value_t = 2_000)]
        batch: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Measured runs after one warm-up run; 0: a single measured run
        /// without warm-up.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Accept and discard request bodies (baseline).
    NullServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Http {
            url,
            key,
            rows,
            batch,
            concurrency,
            runs,
            seed,
        } => http(&url, &key, rows, batch, concurrency, runs, seed).await,
        Cmd::NullServer { listen } => null_server(listen).await,
    }
}

fn bodies(rows: usize, batch: usize, seed: u64) -> (Vec<bytes_body::Body>, usize) {
    let generator = Generator::new(GenConfig {
        seed,
        tenants: vec![TenantId::new("default").expect("valid id")],
        rows,
        anomalies: 0,
        start_ms: 1_795_651_200_000,
        duration_ms: 3_600_000,
    });
    let mut out = Vec::new();
    let mut current = String::new();
    let mut n = 0;
    let mut total_bytes = 0;
    for event in generator {
        // The generator's tenant is the key's; the tenant_id field is dropped
        // so the same bodies work for any key.
        let mut line = event.render(Format::Ndjson);
        line = line.replacen(",\"tenant_id\":\"default\"", "", 1);
        total_bytes += line.len() + 1;
        current.push_str(&line);
        current.push('\n');
        n += 1;
        if n == batch {
            out.push(bytes_body::Body {
                rows: n,
                data: std::mem::take(&mut current).into(),
            });
            n = 0;
        }
    }
    if n > 0 {
        out.push(bytes_body::Body {
            rows: n,
            data: current.into(),
        });
    }
    (out, total_bytes)
}

mod bytes_body {
    pub struct Body {
        pub rows: usize,
        pub data: bytes::Bytes,
    }
}

async fn http(
    url: &str,
    key: &str,
    rows: usize,
    batch: usize,
    concurrency: usize,
    runs: usize,
    seed: u64,
) -> anyhow::Result<()> {
    let (bodies, total_bytes) = bodies(rows, batch, seed);
    let bodies = Arc::new(bodies);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let endpoint = format!("{url}/api/ingest/logs");
    let mut rates = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        let results: Vec<anyhow::Result<(usize, u16)>> = futures::stream::iter(0..bodies.len())
            .map(|i| {
                let client = client.clone();
                let endpoint = endpoint.clone();
                let bodies = bodies.clone();
                async move {
                    let b = &bodies[i];
                    let status = client
                        .post(&endpoint)
                        .bearer_auth(key)
                        .header("content-type", "application/x-ndjson")
                        .body(b.data.clone())
                        .send()
                        .await
                        .context("request")?
                        .status()
                        .as_u16();
                    Ok((b.rows, status))
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut acked = 0;
        let mut refused = 0;
        for r in results {
            let (n, status) = r?;
            if (200..300).contains(&status) {
                acked += n;
            } else {
                refused += n;
            }
        }
        let rate = acked as f64 / elapsed;
        let warmup = run == 0 && runs > 0;
        let label = if warmup { "warmup" } else { "run" };
        eprintln!(
            "{label} {run}: {acked} rows acknowledged, {refused} refused, {elapsed:.2}s, {rate:.0} rows/s, {:.1} MB/s",
            total_bytes as f64 / elapsed / 1e6
        );
        if !warmup {
            rates.push(rate);
        }
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "{}",
        json!({
            "rows_per_run": rows,
            "bytes_per_row": total_bytes / rows.max(1),
            "batch": batch,
            "concurrency": concurrency,
            "runs": rates,
            "median_rows_per_s": median.round(),
            "median_mb_per_s": (median * total_bytes as f64 / rows as f64 / 1e6 * 10.0).round() / 10.0,
        })
    );
    Ok(())
}

async fn null_server(listen: SocketAddr) -> anyhow::Result<()> {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/api/ingest/logs",
            post(|body: axum::body::Bytes| async move {
                // Count lines so the body is really read.
                let n = body.iter().filter(|b| **b == b'\n').count();
                axum::Json(json!({ "accepted": n }))
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("null-server ready http={}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
