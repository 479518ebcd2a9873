//! End-to-end load generator for SecureNet's receivers.
//!
//! `loadgen http` pre-renders bodies with the seeded generator — NDJSON for
//! `POST /api/ingest/logs`, or the same records in another forwarder
//! protocol (`--protocol`, securenet_benches::protocols) — sends them with
//! bounded concurrency, and reports acknowledged rows per second (only 2xx
//! answers, gRPC successes and Fluent acks count; SecureNet acknowledges
//! once rows are in Parquet). GELF over TCP has no acknowledgement: a run
//! ends when the server's Parquet sink has written all its rows (its
//! `securenet_sink_rows_total`, or `SELECT count(*)` without one).
//! `loadgen null-server` is the baseline: an HTTP server that reads and
//! discards bodies, i.e. the ceiling of HTTP + client on this machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use ingest::testdata::{Event, GenConfig, Generator};
use schemas::TenantId;
use securenet_benches::protocols::{self, Payload, Protocol};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send generated records to a SecureNet (or the null server).
    Http(Load),
    /// Accept and discard request bodies (baseline).
    NullServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Http(load) => http(&load).await,
        Cmd::NullServer { listen } => null_server(listen).await,
    }
}

/// One `loadgen http` invocation.
#[derive(clap::Args)]
struct Load {
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
    /// What to send (the same records in each).
    #[arg(long, value_enum, default_value = "ndjson")]
    protocol: Protocol,
    /// host:port of the OTLP/gRPC, GELF TCP or Fluent listener.
    #[arg(long)]
    target: Option<String>,
}

fn bodies(load: &Load) -> (Vec<Payload>, usize) {
    let generator = Generator::new(GenConfig {
        seed: load.seed,
        tenants: vec![TenantId::new("default").expect("valid id")],
        rows: load.rows,
        anomalies: 0,
        start_ms: 1_795_651_200_000,
        duration_ms: 3_600_000,
    });
    let events: Vec<Event> = generator.collect();
    let payloads: Vec<Payload> = events
        .chunks(load.batch.max(1))
        .enumerate()
        .map(|(i, batch)| protocols::encode(load.protocol, batch, &format!("chunk-{i}")))
        .collect();
    let total_bytes = payloads.iter().map(|p| p.data.len()).sum();
    (payloads, total_bytes)
}

/// Log rows the server's Parquet sink has written (its
/// `securenet_sink_rows_total{sink="parquet",kind="logs"}`), for protocols
/// without acks: the sink counts a batch once its file is in the lake, so
/// this is "stored" without a SQL query per poll — `SELECT count(*)` over a
/// lake of thousands of small files cost ~200 ms of the server's CPU each
/// time and was measured into the protocol. Falls back to the SQL count
/// when the server exports no such series (no Parquet sink).
async fn stored_rows(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<u64> {
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let written = metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("securenet_sink_rows_total{")?;
        let (labels, value) = rest.split_once("} ")?;
        (labels.contains("sink=\"parquet\"") && labels.contains("kind=\"logs\""))
            .then(|| value.trim().parse::<f64>().ok())?
    });
    if let Some(rows) = written {
        return Ok(rows as u64);
    }
    sql_rows(client, url, key).await
}

/// Rows the organization of `key` holds, by SQL.
async fn sql_rows(client: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<u64> {
    let answer: serde_json::Value = client
        .post(format!("{url}/api/sql"))
        .bearer_auth(key)
        .json(&json!({"sql": "SELECT count(*) AS n FROM logs"}))
        .send()
        .await?
        .json()
        .await?;
    answer["rows"][0]["n"]
        .as_u64()
        .context("count(*) in the SQL answer")
}

/// Sends every payload once; (acknowledged rows, refused rows).
async fn send_all(
    load: &Load,
    payloads: &Arc<Vec<Payload>>,
    client: &reqwest::Client,
) -> anyhow::Result<(usize, usize)> {
    let concurrency = load.concurrency;
    let target = || load.target.clone().context("--target host:port is needed");
    let outcomes: Vec<anyhow::Result<(usize, bool)>> = match load.protocol {
        Protocol::OtlpGrpc => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", target()?))?
                .initial_stream_window_size(4 << 20)
                .initial_connection_window_size(8 << 20)
                .connect()
                .await?;
            let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {}", load.key).parse()?;
            futures::stream::iter(0..payloads.len())
                .map(|i| {
                    let mut grpc = tonic::client::Grpc::new(channel.clone());
                    let payloads = payloads.clone();
                    let auth = auth.clone();
                    async move {
                        let p = &payloads[i];
                        // The pre-encoded message, as the other protocols
                        // send pre-rendered bodies (no clone + encode in
                        // the generator's share of the CPU).
                        let mut request = tonic::Request::new(p.data.clone());
                        request.metadata_mut().insert("authorization", auth);
                        grpc.ready().await?;
                        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                        );
                        Ok((p.rows, grpc.unary(request, path, raw::Codec).await.is_ok()))
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await
        }
        Protocol::Fluent | Protocol::GelfTcp => {
            // One connection per in-flight slot, each taking the next
            // payload; Fluent waits for each chunk's ack before the next.
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let addr = target()?;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..concurrency {
                let (next, payloads, addr) = (next.clone(), payloads.clone(), addr.clone());
                let fluent = load.protocol == Protocol::Fluent;
                tasks.spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
                    stream.set_nodelay(true)?;
                    let mut done = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(p) = payloads.get(i) else { break };
                        stream.write_all(&p.data).await?;
                        if fluent {
                            // {"ack": "chunk-N"}: a fixmap of one entry.
                            let n = stream.read(&mut buf).await?;
                            done.push((p.rows, n > 0 && buf[..n].starts_with(&[0x81])));
                        } else {
                            done.push((p.rows, true));
                        }
                    }
                    stream.shutdown().await?;
                    anyhow::Ok(done)
                });
            }
            let mut all = Vec::new();
            while let Some(r) = tasks.join_next().await {
                all.extend(r??.into_iter().map(Ok));
            }
            all
        }
        protocol => {
            let (path, media) = protocol.http().context("an HTTP protocol")?;
            let endpoint = format!("{}{path}", load.url);
            futures::stream::iter(0..payloads.len())
                .map(|i| {
                    let client = client.clone();
                    let endpoint = endpoint.clone();
                    let payloads = payloads.clone();
                    let key = load.key.clone();
                    async move {
                        let p = &payloads[i];
                        let status = client
                            .post(&endpoint)
                            .bearer_auth(&key)
                            .header("content-type", media)
                            .body(p.data.clone())
                            .send()
                            .await
                            .context("request")?
                            .status();
                        Ok((p.rows, status.is_success()))
                    }
                })
                .buffer_unordered(concurrency)
                .collect()
                .await
        }
    };
    let mut acked = 0;
    let mut refused = 0;
    for outcome in outcomes {
        match outcome? {
            (n, true) => acked += n,
            (n, false) => refused += n,
        }
    }
    Ok((acked, refused))
}

async fn http(load: &Load) -> anyhow::Result<()> {
    let (payloads, total_bytes) = bodies(load);
    let rows = load.rows;
    let payloads = Arc::new(payloads);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(load.concurrency)
        .build()?;
    let runs = load.runs;
    let mut rates = Vec::new();
    let mut total_acked = 0;
    let mut started_unix = 0.0;
    for run in 0..=runs {
        let before = match load.protocol {
            Protocol::GelfTcp => stored_rows(&client, &load.url, &load.key).await?,
            _ => 0,
        };
        let started = Instant::now();
        started_unix = unix_now();
        let (mut acked, refused) = send_all(load, &payloads, &client).await?;
        if load.protocol == Protocol::GelfTcp {
            // No acks: the run ends when every row is stored in the lake.
            let until = Instant::now() + std::time::Duration::from_secs(120);
            let mut seen = 0;
            while Instant::now() < until {
                seen = stored_rows(&client, &load.url, &load.key).await? - before;
                if seen >= acked as u64 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            acked = seen as usize;
        }
        let elapsed = started.elapsed().as_secs_f64();
        total_acked += acked;
        let rate = acked as f64 / elapsed;
        let warmup = run == 0 && runs > 0;
        let label = if warmup { "warmup" } else { "run" };
        eprintln!(
            "{label} {run} {:?}: {acked} rows acknowledged, {refused} refused, {elapsed:.2}s, {rate:.0} rows/s, {:.1} MB/s",
            load.protocol,
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
            "protocol": format!("{:?}", load.protocol),
            "rows_per_run": rows,
            "acknowledged": total_acked,
            "bytes_per_row": total_bytes / rows.max(1),
            "batch": load.batch,
            "concurrency": load.concurrency,
            "runs": rates,
            "median_rows_per_s": median.round(),
            "median_mb_per_s": (median * total_bytes as f64 / rows as f64 / 1e6 * 10.0).round() / 10.0,
            // When the last run's first request went out (after the bodies
            // were generated), for scripts that time a run to its end
            // elsewhere (scaleout.sh: until the sinks wrote every row).
            "last_run_started_unix_s": started_unix,
        })
    );
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A gRPC codec that sends pre-encoded messages and ignores answers.
mod raw {
    use bytes::{Buf, BufMut, Bytes};
    use tonic::Status;
    use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    pub struct Codec;

    pub struct Raw;

    impl Encoder for Raw {
        type Item = Bytes;
        type Error = Status;
        fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put(item);
            Ok(())
        }
    }

    impl Decoder for Raw {
        type Item = ();
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
            src.advance(src.remaining());
            Ok(Some(()))
        }
    }

    impl tonic::codec::Codec for Codec {
        type Encode = Bytes;
        type Decode = ();
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
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
