//! Maintenance through the CLI against a running server: compaction that
//! is killed at random moments while analysts query, retention per plan in
//! Parquet and ClickHouse, and deleting an organization with all its data.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, count, ingest, rows, signal};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn lines(tenant: &str, from: usize, n: usize, ts: i64) -> String {
    (from..from + n)
        .map(|i| {
            json!({"message": format!("{tenant} {i}"), "host": "h1", "ts": ts + i as i64})
                .to_string()
                + "\n"
        })
        .collect()
}

async fn exact_count(server: &crate::support::Server, key: &str) -> (u64, u64) {
    let r = rows(
        server,
        key,
        "SELECT count(*) AS n, count(DISTINCT message) AS d FROM logs",
    )
    .await;
    (r[0]["n"].as_u64().unwrap(), r[0]["d"].as_u64().unwrap())
}

/// Scheduled maintenance off; a `maintain` pass compacts at once (no
/// minimum age, two objects suffice, no grace period).
fn compacting_env() -> Env {
    Env::new()
        .set("SECURENET_PIPELINE__MAINTENANCE__ENABLED", "false")
        .set(
            "SECURENET_PIPELINE__MAINTENANCE__COMPACTION__MIN_AGE_SECS",
            "0",
        )
        .set(
            "SECURENET_PIPELINE__MAINTENANCE__COMPACTION__MIN_FILES",
            "2",
        )
        .set(
            "SECURENET_PIPELINE__MAINTENANCE__COMPACTION__GRACE_SECS",
            "0",
        )
}

/// `requests` sequential acknowledged requests of `per` rows of tenant
/// `default` (one small object each); the rows sent.
async fn ingest_requests(server: &crate::support::Server, requests: usize, per: usize) -> u64 {
    for r in 0..requests {
        let (status, answer) = ingest(
            server,
            DEFAULT_KEY,
            lines("default", r * per, per, 1_795_687_200_000),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
    }
    (requests * per) as u64
}

#[tokio::test]
async fn compaction_killed_at_random_moments_never_shows_a_row_twice_or_loses_one() {
    let env = compacting_env()
        .set("SECURENET_PIPELINE__MAINTENANCE__LEASE_TTL_SECS", "1")
        // Several merges per directory, so kills land between them too.
        .set(
            "SECURENET_PIPELINE__MAINTENANCE__COMPACTION__TARGET_BYTES",
            "40000",
        );
    let server = env.serve();
    let (requests, per) = (60, 50);
    let total = ingest_requests(&server, requests, per).await;
    let before = env.lake_file_names("logs").len();
    assert!(before >= requests / 2, "{before} objects");
    assert_eq!(exact_count(&server, DEFAULT_KEY).await, (total, total));

    for delay_ms in [1u64, 5, 15, 30, 50, 80, 120, 200] {
        let mut child = env.command(&["maintain"]).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        signal(child.id(), "KILL");
        let _ = child.wait();
        assert_eq!(
            exact_count(&server, DEFAULT_KEY).await,
            (total, total),
            "after a kill at {delay_ms} ms"
        );
        // The killed pass's lease expires after a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // Queries running while a full pass completes stay exact.
    let query_server = server.base.clone();
    let querying = tokio::spawn(async move {
        let mut seen = Vec::new();
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let r = crate::support::client()
                .post(format!("{query_server}/api/sql"))
                .header("X-API-Key", DEFAULT_KEY)
                .json(
                    &json!({"sql": "SELECT count(*) AS n, count(DISTINCT message) AS d FROM logs"}),
                )
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            seen.push((v["rows"][0]["n"].as_u64(), v["rows"][0]["d"].as_u64()));
        }
        seen
    });
    let report: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
    assert!(report["skipped"].is_null(), "{report}");
    // Past each grace period the next pass deletes what the merges replaced
    // (and may merge merged objects again) until there is nothing left to do.
    let mut settled = false;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let report: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
        let c = &report["compaction"];
        if c["objects_written"] == 0 && c["recovered"] == 0 {
            settled = true;
            break;
        }
    }
    assert!(settled, "compaction did not settle");
    for seen in querying.await.unwrap() {
        assert_eq!(seen, (Some(total), Some(total)));
    }
    let after = env.lake_file_names("logs");
    assert!(
        after
            .iter()
            .all(|n| n.starts_with("c-") && n.ends_with(".parquet")),
        "leftovers after a full pass: {after:?}"
    );
    assert!(after.len() * 4 <= before, "{before} objects → {after:?}");
    assert_eq!(exact_count(&server, DEFAULT_KEY).await, (total, total));
    server.stop();
}

async fn wait_clickhouse(
    ch: &crate::support::ClickHouse,
    want: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let got = ch.counts("logs").await;
        if &got == want || Instant::now() > until {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until ClickHouse has applied every mutation of the test database.
async fn wait_mutations(ch: &crate::support::ClickHouse) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let pending = ch
            .rows(
                "SELECT count() AS n FROM system.mutations WHERE database = '{db}' AND is_done = 0",
            )
            .await;
        if pending[0]["n"].to_string().trim_matches('"') == "0" {
            return;
        }
        assert!(Instant::now() < until, "mutations still pending after 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn retention_follows_each_plan_and_deleting_an_org_removes_its_data_everywhere() {
    let (env, ch) = Env::new()
        .set("SECURENET_PIPELINE__MAINTENANCE__ENABLED", "false")
        .clickhouse();
    let short = env.org_on_plan("short", "starter", &[]); // 30 days
    let long = env.org_on_plan("long", "enterprise", &[]); // 1 year
    let server = env.serve();
    let now = now_ms();
    for (key, tenant) in [(&short, "short"), (&long, "long")] {
        for (i, age_days) in [0i64, 40, 400].into_iter().enumerate() {
            let (status, answer) = ingest(
                &server,
                key,
                lines(tenant, i * 10, 10, now - age_days * DAY_MS - 60_000),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    let all = BTreeMap::from([("long".to_string(), 30), ("short".to_string(), 30)]);
    assert_eq!(ch.counts("logs").await, all);

    let report: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
    assert_eq!(report["lake_retention"]["date_dirs_dropped"], 3, "{report}");
    assert!(
        report["clickhouse_retention"]["partitions_dropped"]
            .as_u64()
            .unwrap()
            >= 1,
        "{report}"
    );
    assert_eq!(count(&server, &short, "logs").await, 10);
    assert_eq!(count(&server, &long, "logs").await, 20);
    let kept = BTreeMap::from([("long".to_string(), 20), ("short".to_string(), 10)]);
    assert_eq!(wait_clickhouse(&ch, &kept).await, kept);
    // What is kept is the recent data.
    assert_eq!(
        count(&server, &short, "logs WHERE ts < now() - INTERVAL '2 days'").await,
        0
    );

    let out = env
        .command(&["orgs", "delete", "--id", "long"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _) = crate::support::sql(&server, &long, "SELECT count(*) FROM logs").await;
    assert_eq!(status, 401);
    assert_eq!(
        env.lake_objects("logs/tenant_id=long"),
        Vec::<String>::new()
    );
    let left = BTreeMap::from([("short".to_string(), 10)]);
    assert_eq!(wait_clickhouse(&ch, &left).await, left);
    // Records of `long` still in flight at the delete (the metering of its
    // last API calls is up to a second behind) land afterwards; every later
    // pass purges them, until one finds nothing left anywhere.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        // Deletes are mutations, applied table by table in the background.
        wait_mutations(&ch).await;
        let pass: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
        assert_eq!(pass["lake_retention"]["date_dirs_dropped"], 0, "{pass}");
        wait_mutations(&ch).await;
        let rest = ch
            .rows(
                "SELECT (SELECT count() FROM {db}.ingested_batches WHERE tenant_id = 'long') \
                 + (SELECT count() FROM {db}.api_requests WHERE tenant_id = 'long') \
                 + (SELECT count() FROM {db}.usage WHERE tenant_id = 'long') AS n",
            )
            .await;
        if pass["purged_tenants"] == json!([]) && rest[0]["n"].to_string().trim_matches('"') == "0"
        {
            break;
        }
        assert!(
            Instant::now() < until,
            "`long` still has data after 60 s: {pass} {rest:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The other tenant is untouched.
    assert_eq!(count(&server, &short, "logs").await, 10);
    // Deleting twice is a clear error.
    let out = env
        .command(&["orgs", "delete", "--id", "long"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    server.stop();
}

/// A usage envelope as the detectors emit it: one row per metric of a day.
fn usage_envelope(tenant: &str, day: &str, metrics: &[(&str, u64)]) -> schemas::Envelope {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Date32Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
    };
    let id = uuid::Uuid::now_v7();
    let tenant_id = schemas::TenantId::new(tenant).unwrap();
    let day = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    let days = (day - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
    let ts = i64::from(days) * DAY_MS;
    let n = metrics.len();
    let schema = schemas::schema::schema(schemas::RecordKind::Usage);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![tenant; n])),
        Arc::new(TimestampMillisecondArray::from(vec![ts; n]).with_timezone("UTC")),
        Arc::new(TimestampMillisecondArray::from(vec![now_ms(); n]).with_timezone("UTC")),
        Arc::new(StringArray::from(vec![id.to_string(); n])),
        Arc::new(Date32Array::from(vec![days; n])),
        Arc::new(StringArray::from(
            metrics.iter().map(|m| m.0).collect::<Vec<_>>(),
        )),
        Arc::new(UInt64Array::from(
            metrics.iter().map(|m| m.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec![None::<&str>; n])),
    ];
    let batch = RecordBatch::try_new(schema, columns).unwrap();
    schemas::Envelope::new(tenant_id, schemas::RecordKind::Usage, id, batch).unwrap()
}

#[tokio::test]
async fn the_usage_rollup_counts_a_replayed_batch_once() {
    use pipeline::BusProducer;
    let (env, ch) = Env::new()
        .set("SECURENET_PIPELINE__MAINTENANCE__ENABLED", "false")
        .kafka()
        .clickhouse();
    let pipeline = env.role("pipeline");
    let config = pipeline::bus::kafka::KafkaConfig {
        brokers: env.vars["SECURENET_BUS__KAFKA__BROKERS"].clone(),
        topic_prefix: env.vars["SECURENET_BUS__KAFKA__TOPIC_PREFIX"].clone(),
        ..Default::default()
    };
    let producer = pipeline::bus::kafka::KafkaProducer::new(&config).unwrap();
    let first = usage_envelope("acme", "2026-11-26", &[("log_events", 10), ("scans", 1)]);
    producer.publish(first.clone()).await.unwrap();
    producer
        .publish(usage_envelope("acme", "2026-11-26", &[("log_events", 20)]))
        .await
        .unwrap();
    producer
        .publish(usage_envelope("globex", "2026-10-31", &[("log_events", 7)]))
        .await
        .unwrap();
    // A replay of the first batch (same batch id), as after a crash.
    producer.publish(first).await.unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while ch.counts("usage").await.values().sum::<u64>() < 4 {
        assert!(Instant::now() < until, "usage rows did not arrive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let report: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
    assert_eq!(
        report["usage_rollup"]["months_rebuilt"],
        json!(["202610", "202611"]),
        "{report}"
    );
    let rollup = ch
        .rows(
            "SELECT tenant_id, toString(day) AS day, metric, sum(value) AS v FROM {db}.usage_daily \
             GROUP BY tenant_id, day, metric ORDER BY tenant_id, day, metric",
        )
        .await;
    let got: Vec<String> = rollup
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["tenant_id"].as_str().unwrap(),
                r["day"].as_str().unwrap(),
                r["metric"].as_str().unwrap(),
                r["v"].to_string().trim_matches('"')
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            "acme 2026-11-26 log_events 30",
            "acme 2026-11-26 scans 1",
            "globex 2026-10-31 log_events 7"
        ]
    );
    // Rebuilding is idempotent (a pass may rebuild again when `usage` parts
    // merged meanwhile: change detection is by part modification time).
    env.cli(&["maintain"]);
    let total = ch
        .rows("SELECT sum(value) AS v FROM {db}.usage_daily WHERE tenant_id = 'acme'")
        .await;
    assert_eq!(total[0]["v"].to_string().trim_matches('"'), "31");
    // New usage: its month is rebuilt.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    producer
        .publish(usage_envelope("acme", "2026-11-27", &[("log_events", 5)]))
        .await
        .unwrap();
    while ch.counts("usage").await.values().sum::<u64>() < 5 {
        assert!(Instant::now() < until, "usage rows did not arrive");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let third: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
    let rebuilt = third["usage_rollup"]["months_rebuilt"].as_array().unwrap();
    assert!(rebuilt.contains(&json!("202611")), "{third}");
    let total = ch
        .rows("SELECT sum(value) AS v FROM {db}.usage_daily WHERE tenant_id = 'acme'")
        .await;
    assert_eq!(total[0]["v"].to_string().trim_matches('"'), "36");
    pipeline.stop();
}

/// Objects over the part size go up as multipart uploads (S3 caps a single
/// PUT and retries parts, not objects) and read back whole — against the
/// S3 server with `SECURENET_TEST_LAKE=s3`, the local store otherwise.
#[tokio::test]
async fn large_lake_objects_go_up_in_parts_and_read_back_whole() {
    use object_store::ObjectStoreExt;
    let env = Env::new();
    let lake = env.this_lake();
    let path = lake.root().clone().join("big").join("object.bin");
    let body: Vec<u8> = (0..pipeline::lake::MULTIPART_PART_BYTES * 2 + 4_321)
        .map(|i| (i % 251) as u8)
        .collect();
    lake.put(&path, body.clone()).await.unwrap();
    let back = lake
        .store()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back.len(), body.len());
    assert!(back == body, "the object read back differs");
    assert_eq!(env.lake_objects("big"), ["big/object.bin"]);
}

/// `pipeline.parquet.compression`: the sink writes the codec asked for,
/// compaction keeps it, and both SecureNet and pyarrow read the objects
/// back (on either lake).
#[tokio::test]
async fn lake_objects_take_the_configured_codec_and_compaction_keeps_it() {
    use object_store::ObjectStoreExt;
    let env = compacting_env().set("SECURENET_PIPELINE__PARQUET__COMPRESSION", "lz4_raw");
    let server = env.serve();
    let (requests, per) = (4, 100);
    let total = ingest_requests(&server, requests, per).await;
    assert_eq!(exact_count(&server, DEFAULT_KEY).await, (total, total));
    assert!(env.lake_file_names("logs").len() >= 2);

    // What a Parquet reader of the ecosystem sees in each object: the
    // codec of every column chunk, and the rows.
    let codecs = |env: &Env| -> Value {
        let lake = env.this_lake();
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = env
            .lake_objects("logs")
            .into_iter()
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        let mut paths = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let location = name
                .split('/')
                .fold(lake.root().clone(), |p, part| p.join(part));
            let bytes = std::thread::scope(|s| {
                s.spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(async { lake.store().get(&location).await?.bytes().await })
                })
                .join()
                .unwrap()
            })
            .unwrap();
            let path = dir.path().join(format!("{i}.parquet"));
            std::fs::write(&path, &bytes).unwrap();
            paths.push(path.to_string_lossy().into_owned());
        }
        let script = r#"
import json, sys
import pyarrow.parquet as pq
codecs, rows = set(), 0
for path in sys.argv[1:]:
    meta = pq.ParquetFile(path).metadata
    rows += meta.num_rows
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            codecs.add(meta.row_group(g).column(c).compression)
print(json.dumps({"codecs": sorted(codecs), "rows": rows, "objects": len(sys.argv) - 1}))
"#;
        let mut args = vec!["-c", script];
        args.extend(paths.iter().map(String::as_str));
        let out = crate::support::run(&crate::support::python(), &args);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Arrow C++ (pyarrow) names Parquet's LZ4_RAW "LZ4" (and the legacy
    // Hadoop framing "LZ4_HADOOP").
    let written = codecs(&env);
    assert_eq!(written["codecs"], json!(["LZ4"]), "{written}");
    assert_eq!(written["rows"], json!(total), "{written}");

    for _ in 0..2 {
        let report: Value = serde_json::from_str(&env.cli(&["maintain"])).unwrap();
        assert!(report["skipped"].is_null(), "{report}");
    }
    let names = env.lake_file_names("logs");
    assert!(
        names.iter().all(|n| n.starts_with("c-")),
        "not compacted: {names:?}"
    );
    let compacted = codecs(&env);
    assert_eq!(compacted["codecs"], json!(["LZ4"]), "{compacted}");
    assert_eq!(compacted["rows"], json!(total), "{compacted}");
    assert_eq!(exact_count(&server, DEFAULT_KEY).await, (total, total));
    server.stop();
}
