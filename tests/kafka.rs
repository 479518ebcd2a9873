//! The roles on Kafka (Tansu, started by `scripts/test.sh`): `ingest`,
//! `pipeline` and `query-api` as separate processes sharing one data
//! directory (metadata store and lake).

use serde_json::json;

use crate::support::{DEFAULT_KEY, Env, ingest, wait_count};

pub(crate) fn logger(port: u16, message: &str) {
    logger_at("127.0.0.1", port, message);
}

/// util-linux `logger` over TCP (RFC 5424) to `host:port`.
pub(crate) fn logger_at(host: &str, port: u16, message: &str) {
    crate::support::run(
        "logger",
        &[
            "-n",
            host,
            "-P",
            &port.to_string(),
            "-T",
            "--rfc5424",
            "-t",
            "kafka-e2e",
            message,
        ],
    );
}

#[tokio::test]
async fn http_and_syslog_flow_through_kafka_to_parquet_and_clickhouse_per_tenant() {
    let (env, ch) = Env::new().kafka().clickhouse();
    let acme = env.org_with_key("acme");
    let ingest_role = env.role("ingest");
    let pipeline = env.role("pipeline");
    let api = env.role("query-api");

    let mut sent = std::collections::BTreeMap::new();
    for (key, tenant, n) in [(DEFAULT_KEY, "default", 300), (acme.as_str(), "acme", 200)] {
        let body: String = (0..n)
            .map(|i| {
                json!({"message": format!("{tenant} event {i}"), "host": "h1"}).to_string() + "\n"
            })
            .collect();
        let (status, answer) = ingest(&ingest_role, key, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["accepted"], n);
        sent.insert(tenant, n as u64);
    }
    for i in 0..50 {
        logger(ingest_role.syslog_port("tcp"), &format!("syslog line {i}"));
    }
    *sent.get_mut("default").unwrap() += 50;

    assert_eq!(
        wait_count(&api, DEFAULT_KEY, "logs", sent["default"]).await,
        sent["default"]
    );
    assert_eq!(
        wait_count(&api, &acme, "logs", sent["acme"]).await,
        sent["acme"]
    );
    assert_eq!(
        wait_count(&api, DEFAULT_KEY, "logs WHERE input = 'syslog_tcp'", 50).await,
        50
    );
    // ClickHouse holds the same per-tenant counts as Parquet and as sent
    // (the pipeline confirms a batch only once both sinks have it).
    let want: std::collections::BTreeMap<String, u64> =
        sent.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ch.counts("logs").await != want && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(ch.counts("logs").await, want);
    let syslog = ch
        .rows("SELECT count() AS n FROM {db}.logs FINAL WHERE input = 'syslog_tcp'")
        .await;
    assert_eq!(syslog[0]["n"].to_string().trim_matches('"'), "50");
    // The pipeline exports its consumer lag per record kind (librdkafka
    // statistics, every 5 s): caught up, it is 0 — once a statistics
    // report after the last commit is in (an earlier one may still say 1).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let lag = loop {
        let text = crate::support::exposition(&pipeline).await;
        let sample = text
            .lines()
            .find(|l| l.starts_with("securenet_bus_consumer_lag_messages{topic=\"logs\"}"))
            .map(str::to_string);
        if sample.as_deref().is_some_and(|s| s.ends_with(" 0")) || std::time::Instant::now() > until
        {
            break sample;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let lag = lag.expect("no consumer lag series for logs");
    assert!(lag.ends_with(" 0"), "{lag}");
    // First deliveries of one process: none looked up in the ClickHouse
    // ledger (their bus offsets lie above every reservation), and no row
    // is in ClickHouse twice even before merges.
    let looked_up = crate::support::metric(
        &pipeline,
        r#"securenet_clickhouse_ledger_lookups_total{outcome="looked_up"}"#,
    )
    .await;
    assert_eq!(looked_up, 0.0);
    let plain = ch.rows("SELECT count() AS n FROM {db}.logs").await;
    assert_eq!(
        plain[0]["n"].to_string().trim_matches('"'),
        (sent["default"] + sent["acme"]).to_string()
    );
    // Clean shutdown of every role.
    ingest_role.stop();
    pipeline.stop();
    api.stop();
}

#[tokio::test]
async fn ingest_and_pipeline_refuse_to_run_on_the_embedded_bus() {
    let env = Env::new();
    for role in ["ingest", "pipeline"] {
        let out = env.command(&[role]).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bus.kind = \"kafka\""), "{role}: {err}");
    }
}

#[tokio::test]
async fn two_pipeline_processes_share_the_partitions_of_one_group() {
    let env = Env::new().kafka();
    let tenants: Vec<(String, String)> = (0..6)
        .map(|i| {
            let id = format!("t{i}");
            let key = env.org_with_key(&id);
            (id, key)
        })
        .collect();
    let ingest_role = env.role("ingest");
    let first = env.role("pipeline");
    let second = env.role("pipeline");
    // Keep sending until both members have written something: the group
    // needs a moment to rebalance after the second one joins.
    let mut sent = 0u64;
    let sink_rows = "securenet_sink_rows_total";
    for round in 0..60 {
        for (tenant, key) in &tenants {
            let body = format!("{}\n", json!({"message": format!("{tenant} {round}")}));
            let (status, answer) = ingest(&ingest_role, key, body).await;
            assert_eq!(status, 200, "{answer}");
        }
        sent += 1;
        let a = crate::support::metric_sum(&first, sink_rows).await;
        let b = crate::support::metric_sum(&second, sink_rows).await;
        if a > 0.0 && b > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let a = crate::support::metric_sum(&first, sink_rows).await;
    let b = crate::support::metric_sum(&second, sink_rows).await;
    assert!(a > 0.0 && b > 0.0, "both members consume: {a} and {b} rows");
    let api = env.role("query-api");
    for (_, key) in &tenants {
        assert_eq!(wait_count(&api, key, "logs", sent).await, sent);
    }
    first.stop();
    second.stop();
}

fn numbered_body(b: usize) -> String {
    (0..50)
        .map(|i| json!({"message": format!("batch {b} row {i}")}).to_string() + "\n")
        .collect()
}

/// Sends batches `0..batches`, calling `outage(true)` before `gone.start`
/// and `outage(false)` before `gone.end`; returns (acknowledged, refused).
async fn send_through_an_outage(
    ingest_role: &crate::support::Server,
    batches: usize,
    gone: std::ops::Range<usize>,
    outage: impl Fn(bool),
) -> (Vec<usize>, Vec<usize>) {
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for b in 0..batches {
        if b == gone.start {
            outage(true);
        }
        if b == gone.end {
            outage(false);
        }
        let (status, answer) = ingest(ingest_role, DEFAULT_KEY, numbered_body(b)).await;
        match status {
            200 => acknowledged.push(b),
            503 => refused.push(b),
            other => panic!("batch {b}: {other} {answer}"),
        }
    }
    assert!(
        gone.clone().all(|b| refused.contains(&b)),
        "every request while the broker was gone is refused: {refused:?}"
    );
    assert!(
        (0..gone.start).all(|b| acknowledged.contains(&b)),
        "{acknowledged:?}"
    );
    (acknowledged, refused)
}

/// Every record of `batches` arrives; only refused batches may appear twice.
async fn assert_nothing_lost_nothing_acknowledged_duplicated(
    api: &crate::support::Server,
    batches: &[usize],
    refused: &[usize],
) {
    let want = (batches.len() * 50) as u64;
    let distinct = "SELECT count(DISTINCT message) AS n FROM logs";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = crate::support::rows(api, DEFAULT_KEY, distinct).await[0]["n"].as_u64();
        if n == Some(want) {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "{n:?} of {want} records arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // A refused request may have reached the broker before its delivery
    // timed out (Kafka's "possibly persisted"); the client's retry then adds
    // a second copy: at least once for refused requests, exactly once for
    // acknowledged ones.
    let duplicated = crate::support::rows(
        api,
        DEFAULT_KEY,
        "SELECT message FROM logs GROUP BY message HAVING count(*) > 1",
    )
    .await;
    for row in duplicated {
        let message = row["message"].as_str().unwrap();
        let b: usize = message.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(
            refused.contains(&b),
            "acknowledged record duplicated: {message}"
        );
    }
}

#[tokio::test]
async fn while_the_broker_is_unreachable_ingest_answers_503_and_loses_nothing_it_acknowledged() {
    let env = Env::new();
    let broker_dir = env.path().join("broker");
    std::fs::create_dir_all(&broker_dir).unwrap();
    // Every connection to the real broker goes through a proxy the test
    // takes down: refused and cut connections.
    let (_broker, proxy) = crate::support::Tansu::behind_proxy(&broker_dir);
    let env = env
        .kafka_at(&proxy.addr.to_string())
        .set("SECURENET_BUS__KAFKA__DELIVERY_TIMEOUT_MS", "3000")
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "5");
    let ingest_role = env.role("ingest");
    let pipeline = env.role("pipeline");
    let api = env.role("query-api");
    for b in 0..4 {
        let (status, answer) = ingest(&ingest_role, DEFAULT_KEY, numbered_body(b)).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(wait_count(&api, DEFAULT_KEY, "logs", 200).await, 200);
    proxy.set_down(true);
    for b in 4..8 {
        let (status, answer) = ingest(&ingest_role, DEFAULT_KEY, numbered_body(b)).await;
        assert_eq!(
            status, 503,
            "batch {b} while the broker is unreachable: {answer}"
        );
    }
    // What was acknowledged is stored exactly once; nothing refused is.
    assert_nothing_lost_nothing_acknowledged_duplicated(&api, &[0, 1, 2, 3], &[]).await;
    // The broker's return is tested against librdkafka's mock cluster below:
    // Tansu 0.6.0 cannot resume an idempotent producer after delivery
    // timeouts (its storage panics with "more or less than one row" on the
    // producer's epoch bump), which Apache Kafka handles.
    pipeline.kill();
    ingest_role.kill();
}

#[tokio::test]
async fn after_a_broker_outage_refused_records_are_retried_and_nothing_is_lost_or_duplicated() {
    use rdkafka::mocking::MockCluster;
    let mock = MockCluster::new(1).unwrap();
    let env = Env::new()
        .kafka_at(&mock.bootstrap_servers())
        .set("SECURENET_BUS__KAFKA__PARTITIONS", "1")
        .set("SECURENET_BUS__KAFKA__DELIVERY_TIMEOUT_MS", "3000")
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "5");
    let prefix = env.vars["SECURENET_BUS__KAFKA__TOPIC_PREFIX"].clone();
    for kind in [
        "logs",
        "devices",
        "scans",
        "findings",
        "anomalies",
        "usage",
        "api_requests",
        "detections",
    ] {
        mock.create_topic(&format!("{prefix}.{kind}.v1"), 1, 1)
            .unwrap();
    }
    mock.create_topic(&format!("{prefix}.deadletter.v1"), 1, 1)
        .unwrap();
    let ingest_role = env.role("ingest");
    let pipeline = env.role("pipeline");
    let batches = 14;
    let (_, refused) = send_through_an_outage(&ingest_role, batches, 4..8, |down| {
        if down {
            mock.broker_down(1).unwrap();
        } else {
            mock.broker_up(1).unwrap();
        }
    })
    .await;
    // The client retries what was refused, as HTTP clients do after a 503.
    for b in &refused {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (status, answer) = ingest(&ingest_role, DEFAULT_KEY, numbered_body(*b)).await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 503, "{answer}");
            assert!(
                std::time::Instant::now() < until,
                "batch {b} never accepted"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    let api = env.role("query-api");
    let all: Vec<usize> = (0..batches).collect();
    assert_nothing_lost_nothing_acknowledged_duplicated(&api, &all, &refused).await;
    pipeline.stop();
    ingest_role.stop();
}

/// Two pipeline processes on one consumer group: each organization's rule
/// matches once per matching row whichever process consumes its partition,
/// and a scheduled SQL alert runs once per schedule, not once per process.
#[tokio::test]
async fn rules_and_scheduled_alerts_with_two_pipeline_processes() {
    let env = Env::new()
        .kafka()
        .set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200")
        .set("SECURENET_PIPELINE__ALERTS__TICK_MS", "100")
        .set("SECURENET_API__DETECTIONS__MIN_ALERT_INTERVAL_MS", "1000");
    let tenants: Vec<(String, String)> = (0..4)
        .map(|i| {
            let id = format!("k{i}");
            let key = env.org_with_key(&id);
            (id, key)
        })
        .collect();
    let api = env.role("query-api");
    let rule = "title: Failed password\nid: failed-password\nlevel: medium\nlogsource: {product: linux}\n\
                detection:\n  sel:\n    message|contains: 'Failed password'\n  condition: sel\n";
    for (_, key) in &tenants {
        let r =
            crate::support::post_json(&api, "/api/detections/rules", key, &json!({"yaml": rule}));
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = crate::support::post_json(
        &api,
        "/api/detections/alerts",
        &tenants[0].1,
        &json!({"name": "always", "sql": "SELECT 1", "every": "1s", "condition": {"op": "gte", "value": 1}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let ingest_role = env.role("ingest");
    let first = env.role("pipeline");
    let second = env.role("pipeline");
    for p in [&first, &second] {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while crate::support::metric(p, "securenet_rules_loaded").await < 4.0 {
            assert!(std::time::Instant::now() < until, "rules not loaded");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let sink_rows = "securenet_sink_rows_total";
    let mut sent = 0u64;
    for round in 0..60 {
        for (tenant, key) in &tenants {
            let body = format!(
                "{}\n{}\n",
                json!({"message": format!("Failed password for root ({tenant} {round})")}),
                json!({"message": format!("Accepted publickey ({tenant} {round})")})
            );
            let (status, answer) = ingest(&ingest_role, key, body).await;
            assert_eq!(status, 200, "{answer}");
        }
        sent += 1;
        let a = crate::support::metric_sum(&first, sink_rows).await;
        let b = crate::support::metric_sum(&second, sink_rows).await;
        if a > 0.0 && b > 0.0 && round >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for (_, key) in &tenants {
        assert_eq!(wait_count(&api, key, "logs", sent * 2).await, sent * 2);
        assert_eq!(
            wait_count(
                &api,
                key,
                "detections WHERE rule_id = 'failed-password'",
                sent
            )
            .await,
            sent,
            "one detection per matching row"
        );
    }
    // The alert ran about once a second for the whole test; two processes
    // running each slot would put runs milliseconds apart.
    let runs = crate::support::rows(
        &api,
        &tenants[0].1,
        "SELECT CAST(ts AS BIGINT) AS at FROM detections WHERE source_kind = 'sql_alert' ORDER BY at",
    )
    .await;
    let at: Vec<i64> = runs.iter().map(|r| r["at"].as_i64().unwrap()).collect();
    assert!(at.len() >= 2, "the alert ran: {at:?}");
    let closest = at.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(closest >= 500, "two runs {closest} ms apart: {at:?}");
    first.stop();
    second.stop();
}
