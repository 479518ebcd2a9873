//! The roles on Kafka (Tansu, started by `scripts/test.sh`): `ingest`,
//! `pipeline` and `query-api` as separate processes sharing one data
//! directory (metadata store and lake).

use serde_json::json;

use crate::support::{DEFAULT_KEY, Env, ingest, wait_count};

fn logger(port: u16, message: &str) {
    crate::support::run(
        "logger",
        &[
            "-n",
            "127.0.0.1",
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
async fn http_and_syslog_flow_through_kafka_to_parquet_per_tenant() {
    let env = Env::new().kafka();
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
