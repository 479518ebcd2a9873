//! The ClickHouse sink against Debian's clickhouse-server 18.16 (started by
//! `scripts/test.sh`): per-tenant counts equal in ClickHouse, in Parquet and
//! to what was sent — also across pipeline crashes on the Kafka bus.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::support::{DEFAULT_KEY, Env, count, ingest, wait_count};

fn body(tenant: &str, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| json!({"message": format!("{tenant} {i}"), "host": "h1", "ts": 1_795_687_200_000i64 + i as i64}).to_string() + "\n")
        .collect()
}

/// Batch `b` of `per_batch` rows for the default tenant, acknowledged.
async fn send_batch(ingest_role: &crate::support::Server, b: usize, per_batch: usize) {
    let (status, answer) = ingest(
        ingest_role,
        DEFAULT_KEY,
        body("default", b * per_batch, per_batch),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// Batches the server's ClickHouse sink dead-lettered.
async fn rejected_batches(server: &crate::support::Server) -> f64 {
    crate::support::metric(
        server,
        r#"securenet_sink_errors_total{sink="clickhouse_rejected"}"#,
    )
    .await
}

async fn wait_clickhouse(
    ch: &crate::support::ClickHouse,
    want: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = ch.counts("logs").await;
        if &got == want || std::time::Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A JSON value as text, so ClickHouse's quoted 64-bit integers and the
/// API's numbers compare (`null` stays `null`).
fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn every_column_reaches_clickhouse_as_parquet_holds_it() {
    every_column_round_trip(None).await;
}

/// The same with the insert bodies in ClickHouse's LZ4-compressed blocks
/// (`pipeline.clickhouse.compression = "lz4"`; uncompressed by default).
#[tokio::test]
async fn every_column_reaches_clickhouse_lz4_compressed_too() {
    every_column_round_trip(Some("lz4")).await;
}

async fn every_column_round_trip(compression: Option<&str>) {
    // Records with every optional field set, with none, with multi-byte
    // text, and with a message longer than a two-byte length prefix: each
    // column of each row must read back from ClickHouse as from Parquet
    // (the inserts are ClickHouse Native blocks: null maps, string lengths
    // and fixed-width values per column).
    let (mut env, ch) = Env::new().clickhouse();
    if let Some(c) = compression {
        env = env.set("SECURENET_PIPELINE__CLICKHOUSE__COMPRESSION", c);
    }
    let server = env.serve();
    let long = "x".repeat(20_000);
    let lines = [
        json!({"message": "a full record", "ts": 1_795_687_200_001i64, "host": "web-1",
               "app": "sshd", "pid": "4242", "severity": "warning", "facility": 4,
               "msg_id": "ID47", "source_ip": "203.0.113.9", "user": "alice", "attempt": 3}),
        json!({"message": "b bare", "ts": 1_795_687_200_002i64}),
        json!({"message": "c ünïcødé ✓ 日本語", "ts": 1_795_687_200_003i64, "host": "ħøšŧ"}),
        json!({"message": format!("d {long}"), "ts": 1_795_687_200_004i64, "severity": 0}),
    ];
    let body: String = lines.iter().map(|l| l.to_string() + "\n").collect();
    let (status, answer) = ingest(&server, DEFAULT_KEY, body).await;
    assert_eq!(status, 200, "{answer}");
    let columns = "received_at, batch_id, host, app, pid, severity, facility, msg_id, \
                   message, source_ip, structured_data, parse_status, input, bytes, \
                   source_country, source_asn, source_as_org";
    let from_parquet = crate::support::rows(
        &server,
        DEFAULT_KEY,
        &format!(
            "SELECT CAST(ts AS BIGINT) AS ts, {}, raw IS NULL AS no_raw FROM logs ORDER BY message",
            columns.replace("received_at", "CAST(received_at AS BIGINT) AS received_at")
        ),
    )
    .await;
    let from_clickhouse = ch
        .rows(&format!(
            "SELECT ts, {columns}, isNull(raw) AS no_raw FROM {{db}}.logs \
             WHERE tenant_id = 'default' ORDER BY message"
        ))
        .await;
    assert_eq!(from_parquet.len(), 4);
    assert_eq!(from_clickhouse.len(), 4);
    let names: Vec<&str> = std::iter::once("ts")
        .chain(columns.split(',').map(str::trim))
        .collect();
    for (p, c) in from_parquet.iter().zip(&from_clickhouse) {
        for name in &names {
            assert_eq!(text(&p[name]), text(&c[name]), "column {name}: {p} / {c}");
        }
        // ClickHouse answers booleans as 0/1.
        assert_eq!(
            text(&c["no_raw"]),
            if p["no_raw"] == true { "1" } else { "0" }
        );
    }
    assert_eq!(text(&from_clickhouse[0]["source_ip"]), "203.0.113.9");
    assert_eq!(text(&from_clickhouse[0]["severity"]), "4");
    assert_eq!(from_clickhouse[1]["host"], serde_json::Value::Null);
    assert_eq!(text(&from_clickhouse[2]["host"]), "ħøšŧ");
    assert_eq!(text(&from_clickhouse[3]["message"]).len(), 20_002);
}

#[tokio::test]
async fn embedded_serve_writes_clickhouse_and_parquet_alike() {
    let (env, ch) = Env::new().clickhouse();
    let acme = env.org_with_key("acme");
    let server = env.serve();
    for (key, tenant, n) in [(DEFAULT_KEY, "default", 700), (acme.as_str(), "acme", 300)] {
        let (status, answer) = ingest(&server, key, body(tenant, 0, n)).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Acknowledged means written to every sink: no waiting needed.
    let want = BTreeMap::from([("acme".to_string(), 300), ("default".to_string(), 700)]);
    assert_eq!(ch.counts("logs").await, want);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 700);
    assert_eq!(count(&server, &acme, "logs").await, 300);
    // Millisecond timestamps survive (Int64 ms: 18.16 has no DateTime64).
    let r = ch
        .rows("SELECT ts, message FROM {db}.logs WHERE tenant_id = 'acme' ORDER BY ts LIMIT 1")
        .await;
    assert_eq!(r[0]["message"], "acme 0");
    assert_eq!(r[0]["ts"].to_string().trim_matches('"'), "1795687200000");
    // The ledger records batches in one insert every 200 ms.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ledger = ch
            .rows("SELECT count() AS n FROM {db}.ingested_batches")
            .await;
        let n: u64 = ledger[0]["n"]
            .to_string()
            .trim_matches('"')
            .parse()
            .unwrap();
        if n >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "{n} batches in the ledger"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn crashing_the_pipeline_role_loses_and_duplicates_nothing() {
    let (env, ch) = Env::new().kafka().clickhouse();
    let env = env
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "5")
        // As under systemd or in a StatefulSet: the restarted process keeps
        // its name and so takes its partitions back at once.
        .set("SECURENET_BUS__KAFKA__GROUP_INSTANCE_ID", "pipeline-0");
    let ingest_role = env.role("ingest");
    let mut pipeline = env.role("pipeline");
    let (batches, per_batch) = (40, 250);
    for b in 0..batches {
        send_batch(&ingest_role, b, per_batch).await;
        if b % 10 == 5 {
            // SIGKILL a member that is consuming (its partitions assigned,
            // the batches so far waiting for it), then restart it.
            crate::support::wait_for_partitions(&pipeline).await;
            pipeline.kill();
            pipeline = env.role("pipeline");
        }
    }
    let total = (batches * per_batch) as u64;
    let want = BTreeMap::from([("default".to_string(), total)]);
    assert_eq!(
        wait_clickhouse(&ch, &want).await,
        want,
        "exactly once in ClickHouse"
    );
    pipeline.stop();
    let api = env.role("query-api");
    assert_eq!(wait_count(&api, DEFAULT_KEY, "logs", total).await, total);
    let distinct = crate::support::rows(
        &api,
        DEFAULT_KEY,
        "SELECT count(DISTINCT message) AS n FROM logs",
    )
    .await;
    assert_eq!(distinct[0]["n"], total, "exactly once in Parquet");
}

#[tokio::test]
async fn a_clickhouse_outage_delays_but_loses_and_duplicates_nothing() {
    let (env, ch) = Env::new().kafka().clickhouse();
    let target: std::net::SocketAddr = ch.url.trim_start_matches("http://").parse().unwrap();
    let proxy = crate::support::Proxy::start(target);
    let env = env
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "5")
        .set(
            "SECURENET_PIPELINE__CLICKHOUSE__URL",
            &format!("http://{}", proxy.addr),
        )
        .set("SECURENET_PIPELINE__CLICKHOUSE__TIMEOUT_MS", "2000");
    let ingest_role = env.role("ingest");
    let pipeline = env.role("pipeline");
    let send = |from: usize| {
        let server = &ingest_role;
        async move {
            let (status, answer) = ingest(server, DEFAULT_KEY, body("default", from, 200)).await;
            assert_eq!(status, 200, "{answer}");
        }
    };
    for b in 0..5 {
        send(b * 200).await;
    }
    proxy.set_down(true);
    // Ingest keeps acknowledging: the records are safe in Kafka.
    for b in 5..15 {
        send(b * 200).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failing = crate::support::metric_sum(&pipeline, "securenet_sink_errors_total").await;
    assert!(
        failing > 0.0,
        "the sink should have failed while ClickHouse was away"
    );
    proxy.set_down(false);
    for b in 15..20 {
        send(b * 200).await;
    }
    let want = BTreeMap::from([("default".to_string(), 4000u64)]);
    assert_eq!(wait_clickhouse(&ch, &want).await, want);
    let api = env.role("query-api");
    assert_eq!(wait_count(&api, DEFAULT_KEY, "logs", 4000).await, 4000);
    let distinct = crate::support::rows(
        &api,
        DEFAULT_KEY,
        "SELECT count(DISTINCT message) AS n FROM logs",
    )
    .await;
    assert_eq!(distinct[0]["n"], 4000);
    pipeline.stop();
}

#[tokio::test]
async fn rows_clickhouse_rejects_go_to_the_dead_letter_table_and_do_not_block_the_stream() {
    let (env, ch) = Env::new().clickhouse();
    let server = env.serve();
    // An operator changes a column ClickHouse-side: our String no longer
    // parses, so ClickHouse rejects the rows (a data error, not an outage).
    ch.rows("ALTER TABLE {db}.logs MODIFY COLUMN message UInt64")
        .await;
    let (status, answer) = ingest(&server, DEFAULT_KEY, body("default", 0, 10)).await;
    // Parquet has them, so the records are acknowledged; ClickHouse's copy
    // waits in dead_letters with the error and the payload to replay.
    assert_eq!(status, 200, "{answer}");
    let dead = ch
        .rows("SELECT tenant_id, kind, rows, error, length(payload) AS size FROM {db}.dead_letters")
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["tenant_id"], "default");
    assert_eq!(dead[0]["kind"], "logs");
    assert_eq!(dead[0]["rows"].to_string().trim_matches('"'), "10");
    assert!(
        dead[0]["error"].as_str().unwrap().contains("Code:"),
        "{dead:?}"
    );
    assert!(
        dead[0]["size"]
            .to_string()
            .trim_matches('"')
            .parse::<u64>()
            .unwrap()
            > 100,
        "{dead:?}"
    );
    assert_eq!(rejected_batches(&server).await, 1.0);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 10);
    // The stream goes on: once the column is fixed, later batches land.
    ch.rows("ALTER TABLE {db}.logs MODIFY COLUMN message String")
        .await;
    let (status, answer) = ingest(&server, DEFAULT_KEY, body("default", 10, 5)).await;
    assert_eq!(status, 200, "{answer}");
    let want = BTreeMap::from([("default".to_string(), 5)]);
    assert_eq!(wait_clickhouse(&ch, &want).await, want);
    server.stop();
}

/// Rows ClickHouse refuses are dead-lettered batch by batch, also when
/// several tenants' batches reach the sink at once (and may share one
/// insert, see the sink's group commit): each letter holds one tenant's
/// batch, never rows of another. (Which batches share an insert depends on
/// timing; the sink's unit tests pin the grouping itself.)
#[tokio::test]
async fn batches_refused_together_are_dead_lettered_one_by_one() {
    let (env, ch) = Env::new().clickhouse();
    let tenants = ["acme", "globex", "initech"];
    let keys: Vec<String> = tenants.iter().map(|t| env.org_with_key(t)).collect();
    let server = env.serve();
    ch.rows("ALTER TABLE {db}.logs MODIFY COLUMN message UInt64")
        .await;
    let sends = tenants.iter().zip(&keys).enumerate().map(|(i, (t, key))| {
        let server = &server;
        async move { ingest(server, key, body(t, 0, 10 * (i + 1))).await }
    });
    for (status, answer) in futures::future::join_all(sends).await {
        assert_eq!(status, 200, "{answer}");
    }
    let dead: BTreeMap<String, String> = ch
        .rows("SELECT tenant_id, toString(sum(rows)) AS rows, toString(count()) AS letters FROM {db}.dead_letters GROUP BY tenant_id")
        .await
        .into_iter()
        .map(|r| {
            (
                r["tenant_id"].as_str().unwrap().to_string(),
                format!("{}/{}", r["rows"].as_str().unwrap(), r["letters"].as_str().unwrap()),
            )
        })
        .collect();
    // One letter per tenant with exactly its rows: a letter for a merged
    // group would hold several tenants' rows under one tenant id.
    assert_eq!(
        dead,
        BTreeMap::from([
            ("acme".to_string(), "10/1".to_string()),
            ("globex".to_string(), "20/1".to_string()),
            ("initech".to_string(), "30/1".to_string()),
        ])
    );
    assert_eq!(rejected_batches(&server).await, 3.0);
    // The stream goes on for every tenant once the column is fixed.
    ch.rows("ALTER TABLE {db}.logs MODIFY COLUMN message String")
        .await;
    for (t, key) in tenants.iter().zip(&keys) {
        let (status, answer) = ingest(&server, key, body(t, 100, 5)).await;
        assert_eq!(status, 200, "{answer}");
    }
    let want: BTreeMap<String, u64> = tenants.iter().map(|t| (t.to_string(), 5)).collect();
    assert_eq!(wait_clickhouse(&ch, &want).await, want);
    server.stop();
}

/// Commits offset 0 for every partition of the environment's topics in its
/// consumer group (no member may be running): the next pipeline process is
/// handed everything again, as after a crash that lost every commit.
fn rewind_consumer_group(env: &Env) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    let var = |name: &str| env.vars[name].clone();
    let prefix = var("SECURENET_BUS__KAFKA__TOPIC_PREFIX");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", var("SECURENET_BUS__KAFKA__BROKERS"))
        .set("group.id", var("SECURENET_BUS__KAFKA__GROUP_ID"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("topic metadata");
    let mut list = rdkafka::TopicPartitionList::new();
    for topic in metadata.topics() {
        if topic.name().starts_with(&format!("{prefix}.")) {
            for p in topic.partitions() {
                list.add_partition_offset(topic.name(), p.id(), rdkafka::Offset::Offset(0))
                    .unwrap();
            }
        }
    }
    assert!(list.count() > 0, "no topics under {prefix}");
    consumer
        .commit(&list, CommitMode::Sync)
        .expect("committing offset 0");
}

#[tokio::test]
async fn first_deliveries_skip_the_ledger_and_replays_are_looked_up_and_not_inserted_twice() {
    let (env, ch) = Env::new().kafka().clickhouse();
    let env = env.set("SECURENET_INGEST__BATCH__LINGER_MS", "5");
    let ingest_role = env.role("ingest");
    let pipeline = env.role("pipeline");
    let (batches, per_batch) = (20, 50);
    for b in 0..batches {
        send_batch(&ingest_role, b, per_batch).await;
    }
    let total = (batches * per_batch) as u64;
    let want = BTreeMap::from([("default".to_string(), total)]);
    assert_eq!(wait_clickhouse(&ch, &want).await, want);
    let lookups = async |server: &crate::support::Server, outcome: &str| {
        crate::support::metric(
            server,
            &format!("securenet_clickhouse_ledger_lookups_total{{outcome=\"{outcome}\"}}"),
        )
        .await
    };
    // One process, never restarted: every delivery was a first one above
    // its partition's reservations, so none was looked up in the ledger.
    assert_eq!(lookups(&pipeline, "looked_up").await, 0.0);
    let first = lookups(&pipeline, "skipped").await;
    assert!(
        first >= batches as f64,
        "{first} batches skipped the lookup"
    );
    pipeline.stop();

    // Every partition delivered again from its start to a new process: all
    // of it lies under the reservations, so every batch is looked up, found
    // in the ledger and not inserted again — no row twice even before
    // ClickHouse merges (no FINAL).
    rewind_consumer_group(&env);
    let pipeline = env.role("pipeline");
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while lookups(&pipeline, "looked_up").await < first {
        assert!(
            std::time::Instant::now() < until,
            "{} of {first} replayed batches looked up after 60 s",
            lookups(&pipeline, "looked_up").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lookups(&pipeline, "skipped").await, 0.0);
    let stored = ch.rows("SELECT count() AS n FROM {db}.logs").await;
    assert_eq!(
        text(&stored[0]["n"]),
        total.to_string(),
        "rows inserted twice"
    );
    pipeline.stop();
}
