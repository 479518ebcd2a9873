//! Scale-out benchmarks with a baseline in the same run.
//!
//! - `scaleout kafka`: envelopes of log rows published through the bus's
//!   `KafkaProducer` (Arrow IPC encode + headers + delivery awaited) and read
//!   back through `KafkaConsumer` (fetch + decode + offset tracking), against
//!   the same bytes sent and read by a bare librdkafka producer/consumer with
//!   the same settings.
//! - `scaleout clickhouse`: envelopes written through `ClickHouseSink`
//!   (ledger check, Native encoding, insert, ledger row) against the
//!   same Native bytes inserted bare. The envelopes carry bus positions as
//!   the Kafka consumer's do (one partition, offsets in order, one
//!   assignment), so the sink looks up only what may be a replay; with
//!   `--no-positions` it looks every batch up, as for the embedded bus.
//!
//! Each prints one JSON line with medians (rows/s, MB/s of envelope
//! payload) over the measured runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use pipeline::bus::kafka::{KafkaConfig, KafkaConsumer, KafkaProducer, ensure_topics};
use pipeline::sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
use pipeline::{BusConsumer, BusProducer, PipelineMetrics, Sink};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use schemas::PayloadCompression;
use schemas::{BusPosition, Envelope, LogBatchBuilder, LogRecord, RecordKind, TenantId};
use serde_json::json;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Kafka {
        #[arg(long)]
        brokers: String,
        /// Envelopes per run.
        #[arg(long, default_value_t = 100)]
        envelopes: usize,
        /// Rows per envelope.
        #[arg(long, default_value_t = 2_000)]
        rows: usize,
        /// Publishes in flight.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    Clickhouse {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 20)]
        envelopes: usize,
        #[arg(long, default_value_t = 10_000)]
        rows: usize,
        /// Writes in flight, through the sink and bare alike (the pipeline
        /// drives its sinks with `pipeline.consumer.max_in_flight`, 4).
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The sink's `pipeline.clickhouse.max_inserts_per_table` (its
        /// default when unset).
        #[arg(long)]
        max_inserts_per_table: Option<usize>,
        /// Envelopes without bus positions (as the embedded bus delivers
        /// them): the sink looks every batch up in its ledger.
        #[arg(long)]
        no_positions: bool,
        /// `pipeline.clickhouse.compression` (`lz4` or `none`), for the
        /// sink and the bare inserts alike (the sink's default when unset).
        #[arg(long)]
        compression: Option<String>,
    },
}

/// The median of some durations, in whole milliseconds.
fn median_ms(took: &mut [Duration]) -> u128 {
    took.sort();
    took.get(took.len() / 2).map_or(0, Duration::as_millis)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Kafka {
            brokers,
            envelopes,
            rows,
            concurrency,
            runs,
        } => kafka(&brokers, envelopes, rows, concurrency, runs).await,
        Cmd::Clickhouse {
            url,
            envelopes,
            rows,
            concurrency,
            runs,
            max_inserts_per_table,
            no_positions,
            compression,
        } => {
            let mut config = ClickHouseConfig {
                url,
                ..ClickHouseConfig::default()
            };
            if let Some(n) = max_inserts_per_table {
                config.max_inserts_per_table = n;
            }
            if let Some(c) = compression {
                config.compression = serde_json::from_value(json!(c))?;
            }
            clickhouse(config, envelopes, rows, concurrency, runs, !no_positions).await
        }
    }
}

/// Log envelopes shaped like syslog traffic: ~200-byte messages, host,
/// program, pid, severity, source IP, across five tenants.
fn envelopes(n: usize, rows: usize, run: usize) -> Vec<Envelope> {
    let programs = ["sshd", "sudo", "kernel", "nginx", "cron"];
    (0..n)
        .map(|e| {
            let tenant = TenantId::new(&format!("tenant-{}", e % 5)).unwrap();
            let id = uuid::Uuid::now_v7();
            let mut b = LogBatchBuilder::with_capacity(rows);
            for i in 0..rows {
                let ts = 1_795_651_200_000 + ((run * n + e) * rows + i) as i64;
                let program = programs[i % programs.len()];
                let message = format!(
                    "{program}[{}]: session {i} for user u{} from 10.{}.{}.{} port {} \
                     ssh2: accepted publickey RSA SHA256:Zk{e}x{i}q0c3lW5pUoQ8mWv2d9kTfYrN0bH",
                    1000 + i % 300,
                    i % 97,
                    i % 256,
                    e % 256,
                    (i * 7) % 256,
                    1024 + i % 60000
                );
                b.append(&LogRecord {
                    ts_ms: ts,
                    received_ms: ts + 3,
                    host: Some(format!("host-{:03}", i % 200)),
                    app: Some(program.to_string()),
                    pid: Some((1000 + i % 300).to_string()),
                    severity: Some((i % 8) as u8),
                    facility: Some(4),
                    source_ip: Some(format!("10.0.{}.{}", e % 256, i % 256)),
                    bytes: message.len() as u32,
                    message,
                    input: "bench",
                    ..Default::default()
                });
            }
            let batch = b.finish(&tenant, id).unwrap();
            Envelope::new(tenant, RecordKind::Logs, id, batch).unwrap()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Rates {
    rows: Vec<f64>,
    mb: Vec<f64>,
}

impl Rates {
    fn new() -> Self {
        Self {
            rows: vec![],
            mb: vec![],
        }
    }
    fn push(&mut self, label: &str, run: usize, rows: usize, bytes: usize, took: Duration) {
        let s = took.as_secs_f64();
        eprintln!(
            "{label} run {run}: {rows} rows, {:.1} MB in {s:.2}s = {:.0} rows/s, {:.1} MB/s",
            bytes as f64 / 1e6,
            rows as f64 / s,
            bytes as f64 / s / 1e6
        );
        if run > 0 {
            self.rows.push(rows as f64 / s);
            self.mb.push(bytes as f64 / s / 1e6);
        }
    }
    fn json(&self) -> serde_json::Value {
        json!({
            "median_rows_per_s": median(self.rows.clone()).round(),
            "median_mb_per_s": (median(self.mb.clone()) * 10.0).round() / 10.0,
            "runs_rows_per_s": self.rows.iter().map(|r| r.round()).collect::<Vec<_>>(),
        })
    }
}

async fn kafka(
    brokers: &str,
    n: usize,
    rows: usize,
    concurrency: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let metrics = PipelineMetrics::new(&prometheus::Registry::new())?;
    let (mut ours_p, mut base_p, mut ours_c, mut base_c) =
        (Rates::new(), Rates::new(), Rates::new(), Rates::new());
    // Subscribe to first message, per consumer (warm-up run included).
    let (mut base_first, mut ours_first) = (Vec::new(), Vec::new());
    let (mut payload_bytes, mut wire_bytes) = (0, 0);
    for run in 0..=runs {
        let prefix = format!("bench{}r{run}", std::process::id());
        let config = KafkaConfig {
            brokers: brokers.to_string(),
            topic_prefix: prefix.clone(),
            group_id: format!("{prefix}-ours"),
            partitions: 3,
            ..KafkaConfig::default()
        };
        ensure_topics(&config).await?;
        let batch = envelopes(n, rows, run);
        let encoded: Vec<_> = batch
            .iter()
            .map(|e| {
                e.encode(config.compression)
                    .map(|b| (e.tenant().to_string(), b))
            })
            .collect::<Result<_, _>>()?;
        // MB/s count the rows' Arrow IPC bytes uncompressed (what the
        // figures before payload compression counted); the bytes on the
        // wire are reported beside them.
        wire_bytes = encoded.iter().map(|(_, b)| b.len()).sum::<usize>();
        payload_bytes = batch
            .iter()
            .map(|e| e.encode(PayloadCompression::None).map(|b| b.len()))
            .sum::<Result<usize, _>>()?;
        let total_rows = n * rows;

        // Baseline produce: the encoded bytes through a bare producer with
        // the bus's settings, to a topic of its own.
        let raw = config.producer()?;
        let base_config = KafkaConfig {
            topic_prefix: format!("{prefix}base"),
            ..config.clone()
        };
        ensure_topics(&base_config).await?;
        let raw_topic_name = base_config.topic(RecordKind::Logs);
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(encoded.iter())
            .map(|(key, bytes)| {
                let raw = raw.clone();
                let topic = raw_topic_name.clone();
                async move {
                    raw.send(
                        FutureRecord::to(&topic)
                            .key(key.as_str())
                            .payload(bytes.as_ref()),
                        Duration::from_secs(30),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            r?;
        }
        base_p.push(
            "baseline produce",
            run,
            total_rows,
            payload_bytes,
            started.elapsed(),
        );

        // Ours: KafkaProducer::publish (encode + headers + delivery).
        let producer = Arc::new(KafkaProducer::new(&config)?);
        let started = Instant::now();
        let results: Vec<_> = futures::stream::iter(batch)
            .map(|e| {
                let p = producer.clone();
                async move { p.publish(e).await }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        for r in results {
            r?;
        }
        ours_p.push(
            "securenet publish",
            run,
            total_rows,
            payload_bytes,
            started.elapsed(),
        );

        // Baseline consume: bare consumer, payload bytes only.
        let consumer: StreamConsumer = {
            let mut c = config.client();
            c.set("group.id", format!("{prefix}-raw"))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("fetch.message.max.bytes", (64 << 20).to_string())
                // The same fetch pacing as the bus's consumer.
                .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string());
            c.create()?
        };
        consumer.subscribe(&[&raw_topic_name])?;
        // Each consumer's clock starts at its first message: the group join
        // and the first fetch before it (Tansu 0.6.0 answers a fetch no
        // sooner than about half of `fetch.wait.max.ms`) are reported apart.
        let subscribed = Instant::now();
        let mut started = subscribed;
        let mut got = 0;
        let mut bytes = 0;
        while got < n {
            let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                .await
                .context("baseline consumer stalled")??;
            if got == 0 {
                started = Instant::now();
                base_first.push(started - subscribed);
            } else {
                bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            }
            got += 1;
        }
        let after_first = (n - 1) * rows;
        base_c.push(
            "baseline consume",
            run,
            after_first,
            bytes,
            started.elapsed(),
        );

        // Ours: KafkaConsumer (fetch, decode, validate, track offsets).
        let stop = tokio_util::sync::CancellationToken::new();
        let mut bus = KafkaConsumer::new(&config, stop.clone(), metrics.clone())?;
        let subscribed = Instant::now();
        let mut started = subscribed;
        let mut got_rows = 0;
        let mut first_rows = 0;
        while got_rows < total_rows {
            let d = tokio::time::timeout(Duration::from_secs(60), bus.next())
                .await
                .context("consumer stalled")?
                .context("consumer closed")?;
            if got_rows == 0 {
                started = Instant::now();
                ours_first.push(started - subscribed);
                first_rows = d.envelope.num_rows();
            }
            got_rows += d.envelope.num_rows();
            d.ack.settle(Ok(()));
        }
        ours_c.push(
            "securenet consume",
            run,
            total_rows - first_rows,
            payload_bytes * (total_rows - first_rows) / total_rows,
            started.elapsed(),
        );
        stop.cancel();
    }
    println!(
        "{}",
        json!({
            "bench": "kafka",
            "brokers": brokers,
            "envelopes_per_run": n,
            "rows_per_envelope": rows,
            "payload_bytes_per_run": payload_bytes,
            "wire_bytes_per_run": wire_bytes,
            "concurrency": concurrency,
            "baseline_produce": base_p.json(),
            "securenet_publish": ours_p.json(),
            "baseline_consume": base_c.json(),
            "securenet_consume": ours_c.json(),
            "consume_clock": "from the first message to the last (the rows after the first)",
            "baseline_join_and_first_fetch_ms": median_ms(&mut base_first),
            "securenet_join_and_first_fetch_ms": median_ms(&mut ours_first),
        })
    );
    Ok(())
}

/// Waits until ClickHouse merges no part of `database` (at most 60 s).
async fn quiet(client: &clickhouse::Client, database: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let merging: u64 = client
            .query("SELECT count() FROM system.merges WHERE database = ?")
            .bind(database)
            .fetch_one()
            .await?;
        if merging == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn clickhouse(
    config: ClickHouseConfig,
    n: usize,
    rows: usize,
    concurrency: usize,
    runs: usize,
    positions: bool,
) -> anyhow::Result<()> {
    let concurrency = concurrency.max(1);
    let metrics = PipelineMetrics::new(&prometheus::Registry::new())?;
    let database = format!("bench_{}", std::process::id());
    let config = ClickHouseConfig {
        database: database.clone(),
        ..config
    };
    let sink = ClickHouseSink::connect(&config, metrics.clone()).await?;
    let client = clickhouse::Client::default()
        .with_url(&config.url)
        .with_compression(config.compression.into())
        .with_validation(false);
    client
        .query(&format!(
            "CREATE TABLE {database}.logs_raw AS {database}.logs"
        ))
        .execute()
        .await?;
    let (mut ours, mut base, mut encoding) = (Rates::new(), Rates::new(), Rates::new());
    let mut payload = 0;
    for run in 0..=runs {
        let mut batch = envelopes(n, rows, run);
        if positions {
            let topic: Arc<str> = "bench.logs.v1".into();
            batch = batch
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    e.with_position(Some(BusPosition {
                        topic: topic.clone(),
                        partition: 0,
                        offset: (run * n + i) as i64,
                        epoch: 1,
                        redelivery: false,
                    }))
                })
                .collect();
        }
        payload = batch
            .iter()
            .map(|e| e.encode(PayloadCompression::None).map(|b| b.len()))
            .sum::<Result<usize, _>>()?;
        // Baseline: the same rows, pre-encoded (Native), inserted bare.
        let mut bodies = Vec::new();
        let started = Instant::now();
        for e in &batch {
            bodies.push(pipeline::sinks::clickhouse::encode_insert(e)?);
        }
        encoding.push("encoding only", run, n * rows, payload, started.elapsed());
        // Each run starts with the other one, and each half starts once
        // ClickHouse has finished merging the parts of everything before
        // it: the merges a half's inserts cause land on that half only
        // (without the wait, the sink/bare ratio of one build moved
        // 0.63-0.91 between sittings).
        let bare = async {
            quiet(&client, &database).await?;
            let started = Instant::now();
            futures::stream::iter(bodies)
                .map(|(columns, data)| {
                    let mut insert = client.insert_formatted_with(format!(
                        "INSERT INTO {database}.logs_raw ({columns}) FORMAT {}",
                        pipeline::sinks::clickhouse::INSERT_FORMAT
                    ));
                    async move {
                        insert.send(bytes::Bytes::from(data)).await?;
                        insert.end().await
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
            anyhow::Ok(started.elapsed())
        };
        let through_sink = async {
            quiet(&client, &database).await?;
            let started = Instant::now();
            futures::stream::iter(&batch)
                .map(|e| sink.write(e))
                .buffer_unordered(concurrency)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
            anyhow::Ok(started.elapsed())
        };
        let (bare_took, sink_took) = if run % 2 == 0 {
            let b = bare.await?;
            (b, through_sink.await?)
        } else {
            let s = through_sink.await?;
            (bare.await?, s)
        };
        base.push("baseline insert", run, n * rows, payload, bare_took);
        ours.push("securenet sink", run, n * rows, payload, sink_took);
    }
    let stored: u64 = client
        .query(&format!("SELECT count() FROM {database}.logs FINAL"))
        .fetch_one()
        .await?;
    let version: String = client.query("SELECT version()").fetch_one().await?;
    client
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await?;
    anyhow::ensure!(
        stored == ((runs + 1) * n * rows) as u64,
        "ClickHouse holds {stored} rows"
    );
    println!(
        "{}",
        json!({
            "bench": "clickhouse",
            "clickhouse_version": version,
            "envelopes_per_run": n,
            "writes_in_flight": concurrency,
            "max_inserts_per_table": config.max_inserts_per_table,
            "bus_positions": positions,
            "compression": config.compression,
            "rows_per_envelope": rows,
            "payload_bytes_per_run": payload,
            "baseline_insert": base.json(),
            "securenet_sink": ours.json(),
            "encoding_only": encoding.json(),
            // Each run's sink and bare inserts ran back to back, so their
            // ratio is less exposed to the machine's noise between runs.
            "median_ratio_of_runs": (median(
                ours.rows.iter().zip(&base.rows).map(|(o, b)| o / b).collect()
            ) * 1000.0)
                .round()
                / 1000.0,
            "rows_stored": stored,
            // Each insert is a part for ClickHouse to write and merge: the
            // bare inserts make one per envelope, the sink fewer when group
            // commit joins envelopes.
            "inserts": {
                "baseline_insert": (runs + 1) * n,
                "securenet_sink": metrics
                    .sink_inserts
                    .with_label_values(&["clickhouse", "logs"])
                    .get(),
            },
        })
    );
    Ok(())
}
