//! Billing-grade usage: counted from every batch by the pipeline, stored as
//! `usage` records in Parquet and ClickHouse, replay-safe, and reconciled
//! against the raw records by `securenet usage reconcile`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, Server, curl, ingest, rows, wait_count};

/// The current UTC month, as the records are received now.
fn this_month() -> String {
    chrono::Utc::now().format("%Y-%m").to_string()
}

fn logs_body(tenant: &str, from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            json!({"message": format!("{tenant} event {i} {}", "x".repeat(i % 17)), "host": "h1"})
                .to_string()
                + "\n"
        })
        .collect()
}

fn scan_report(scan_id: &str, ips: &[&str]) -> String {
    let hosts: Vec<Value> = ips
        .iter()
        .map(|ip| {
            json!({"ip": ip, "status": "up", "findings": [
                {"port": 22, "protocol": "tcp", "service": "ssh", "title": "ssh open", "severity": "low"},
                {"port": 80, "protocol": "tcp", "service": "http", "title": "http open", "cvss": 5.3}
            ]})
        })
        .collect();
    json!({"scan_id": scan_id, "scanner": "nmap 7.93", "target": "10.0.0.0/24",
           "status": "completed", "hosts": hosts})
    .to_string()
}

fn post_scan(server: &Server, key: &str, body: &str) {
    let reply = curl(&[
        &server.url("/api/ingest/scans"),
        "-H",
        &format!("Authorization: Bearer {key}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        body,
    ]);
    assert_eq!(reply.status, 201, "{}", reply.body);
}

/// The month's usage as the `usage` table holds it: additive metrics
/// summed, devices distinct.
async fn recorded_usage(api: &Server, key: &str) -> BTreeMap<String, u64> {
    // (api_requests are left out: the polling calls themselves are billed.)
    let sql = "SELECT metric, CASE WHEN metric = 'devices' THEN CAST(count(DISTINCT subject) AS BIGINT) \
               ELSE CAST(sum(value) AS BIGINT) END AS v FROM usage \
               WHERE metric <> 'api_requests' GROUP BY metric ORDER BY metric";
    rows(api, key, sql)
        .await
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap().to_string(),
                r["v"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn reconcile(env: &Env, tenant: &str) -> (bool, Value, String) {
    let out = env
        .command(&[
            "usage",
            "reconcile",
            "--org",
            tenant,
            "--month",
            &this_month(),
            "--settle-secs",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    // 0: no difference; 2: differences found; anything else: it failed.
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 2)),
        "reconcile failed: {code:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success(),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn usage_is_exact_after_pipeline_crashes_and_replays_and_reconciles_with_the_raw_data() {
    let (env, ch) = Env::new().kafka().clickhouse();
    let env = env
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "5")
        // The restarted process keeps its name (static membership), as under
        // systemd or in a StatefulSet, and takes its partitions back at once.
        .set("SECURENET_BUS__KAFKA__GROUP_INSTANCE_ID", "pipeline-0");
    let acme = env.org_with_key("acme");
    let ingest_role = env.role("ingest");
    let mut pipeline = env.role("pipeline");
    let (batches, per_batch) = (24, 100);
    for b in 0..batches {
        for (key, tenant) in [(DEFAULT_KEY, "default"), (acme.as_str(), "acme")] {
            let (status, answer) = ingest(
                &ingest_role,
                key,
                logs_body(tenant, b * per_batch, per_batch),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
        }
        if b % 8 == 3 {
            // SIGKILL mid-stream: uncommitted batches are replayed by the
            // next process of the group, usage included.
            crate::support::wait_for_partitions(&pipeline).await;
            pipeline.kill();
            pipeline = env.role("pipeline");
        }
    }
    // Two scans of overlapping hosts: 3 distinct devices, 2 scans, 10 findings.
    post_scan(
        &ingest_role,
        &acme,
        &scan_report("s-1", &["10.0.0.1", "10.0.0.2"]),
    );
    post_scan(
        &ingest_role,
        &acme,
        &scan_report("s-2", &["10.0.0.2", "10.0.0.3", "10.0.0.1"]),
    );

    let api = env.role("query-api");
    let total = (batches * per_batch) as u64;
    let until = Instant::now() + Duration::from_secs(90);
    while crate::support::count(&api, &acme, "logs").await < total && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(wait_count(&api, &acme, "logs", total).await, total);
    assert_eq!(wait_count(&api, DEFAULT_KEY, "logs", total).await, total);
    assert_eq!(wait_count(&api, &acme, "findings", 10).await, 10);
    let bytes = rows(&api, &acme, "SELECT sum(bytes) AS b FROM logs").await[0]["b"]
        .as_u64()
        .unwrap();

    // The pipeline writes usage with (and before acknowledging) each batch.
    let want = BTreeMap::from([
        ("devices".to_string(), 3),
        ("findings".to_string(), 10),
        ("log_bytes".to_string(), bytes),
        ("log_events".to_string(), total),
        ("scans".to_string(), 2),
    ]);
    let until = Instant::now() + Duration::from_secs(60);
    let mut got = recorded_usage(&api, &acme).await;
    while got != want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = recorded_usage(&api, &acme).await;
    }
    assert_eq!(got, want, "usage in Parquet counts every record once");

    // ClickHouse holds the same figures (de-duplicated by batch id).
    let ch_usage = ch
        .rows(
            "SELECT metric, if(metric = 'devices', uniqExact(subject), sum(value)) AS v \
             FROM {db}.usage FINAL WHERE tenant_id = 'acme' AND metric != 'api_requests' \
             GROUP BY metric ORDER BY metric",
        )
        .await;
    let ch_usage: BTreeMap<String, u64> = ch_usage
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap().to_string(),
                r["v"].to_string().trim_matches('"').parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(ch_usage, want, "usage in ClickHouse");

    // Zero difference against the raw records, for both tenants.
    pipeline.stop();
    for tenant in ["acme", "default"] {
        let (ok, report, stderr) = reconcile(&env, tenant);
        assert!(ok, "{tenant}: {report} {stderr}");
        assert_eq!(report["differences"], json!([]), "{report}");
        assert_eq!(report["month_totals"]["log_events"], total, "{report}");
    }
    let (_, report, _) = reconcile(&env, "acme");
    assert_eq!(report["month_totals"]["devices"], 3, "{report}");
    assert_eq!(report["month_totals"]["log_bytes"], bytes, "{report}");

    // The daily rollup for billing: sums, and distinct devices per day.
    env.cli(&["maintain"]);
    let daily = ch
        .rows(
            "SELECT metric, sum(value) AS v FROM {db}.usage_daily \
             WHERE tenant_id = 'acme' AND metric != 'api_requests' GROUP BY metric ORDER BY metric",
        )
        .await;
    let daily: BTreeMap<String, u64> = daily
        .iter()
        .map(|r| {
            (
                r["metric"].as_str().unwrap().to_string(),
                r["v"].to_string().trim_matches('"').parse().unwrap(),
            )
        })
        .collect();
    // Devices are distinct per day: 3, unless the run crossed UTC midnight
    // between the two scans (the month figure above is the exact one).
    let mut want_daily = want.clone();
    if daily.get("devices").is_some_and(|d| *d > 3 && *d <= 6) {
        want_daily.insert("devices".into(), daily["devices"]);
    }
    assert_eq!(daily, want_daily, "usage_daily");
}

#[tokio::test]
async fn a_replayed_batch_counts_once_and_reconcile_reports_what_is_missing() {
    // No compaction: the test removes one batch's usage file below.
    let env = Env::new().set("SECURENET_PIPELINE__MAINTENANCE__ENABLED", "false");
    let server = env.serve();
    for b in 0..3 {
        let (status, answer) = ingest(&server, DEFAULT_KEY, logs_body("default", b * 10, 10)).await;
        assert_eq!(status, 200, "{answer}");
    }
    // Acknowledged means stored with its usage: no waiting.
    let got = recorded_usage(&server, DEFAULT_KEY).await;
    assert_eq!(got["log_events"], 30, "{got:?}");
    // The usage objects of log batches (their ids name the objects).
    let log_usage: Vec<String> = rows(
        &server,
        DEFAULT_KEY,
        "SELECT DISTINCT batch_id FROM usage WHERE metric = 'log_events'",
    )
    .await
    .iter()
    .map(|r| r["batch_id"].as_str().unwrap().to_string())
    .collect();
    assert_eq!(log_usage.len(), 3, "{log_usage:?}");

    // Billing reads the same figures: JSON, and CSV / JSON / Parquet exports.
    let month = this_month();
    let billing = curl(&[
        &server.url(&format!("/api/billing/usage?month={month}")),
        "-H",
        &format!("Authorization: Bearer {DEFAULT_KEY}"),
    ]);
    assert_eq!(billing.status, 200, "{}", billing.body);
    let billing = billing.json();
    assert_eq!(billing["totals"]["log_events"], 30, "{billing}");
    let daily_events: u64 = billing["daily"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["metric"] == "log_events")
        .map(|d| d["value"].as_u64().unwrap())
        .sum();
    assert_eq!(daily_events, 30);
    let export = |format: &str| {
        curl(&[
            &server.url(&format!(
                "/api/metrics/usage/export?month={month}&format={format}"
            )),
            "-H",
            &format!("Authorization: Bearer {DEFAULT_KEY}"),
        ])
    };
    let csv = export("csv");
    assert_eq!(csv.status, 200);
    assert!(csv.body.starts_with("day,metric,value\n"), "{}", csv.body);
    assert!(csv.body.contains(",log_events,30\n"), "{}", csv.body);
    assert!(csv.headers["content-disposition"].contains(".csv"));
    let json = export("json");
    assert!(
        json.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["metric"] == "log_bytes")
    );
    let parquet = export("parquet");
    assert_eq!(parquet.status, 200);
    assert_eq!(
        parquet.headers["content-type"],
        "application/vnd.apache.parquet"
    );
    assert_eq!(export("xml").status, 400);
    let bad = curl(&[
        &server.url("/api/billing/usage?month=2026-13"),
        "-H",
        &format!("Authorization: Bearer {DEFAULT_KEY}"),
    ]);
    assert_eq!(bad.status, 400);
    server.stop();
    let (ok, report, stderr) = reconcile(&env, "default");
    assert!(ok, "{report} {stderr}");
    assert!(report["checked"].as_u64().unwrap() >= 4, "{report}");

    // Lose one usage file (as if a writer had been bypassed): reconcile
    // names the figures that differ and fails.
    let usage_dir = env.path().join("lake/usage/tenant_id=default");
    let file = walk(&usage_dir)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == format!("{}.parquet", log_usage[0]))
        .expect("the usage object of a log batch");
    std::fs::remove_file(&file).unwrap();
    let (ok, report, stderr) = reconcile(&env, "default");
    assert!(!ok, "{report}");
    assert!(stderr.contains("differs from the raw data"), "{stderr}");
    let diffs = report["differences"].as_array().unwrap();
    let events = diffs
        .iter()
        .find(|d| d["metric"] == "log_events" && d["day"].is_null())
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(events["raw"], 30);
    assert_eq!(events["recorded"], 20);

    // Bad arguments are clear errors.
    let out = env
        .command(&[
            "usage",
            "reconcile",
            "--tenant",
            "default",
            "--month",
            "2026-13",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed check is 1, not 2");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected YYYY-MM"));
}

/// On a live system, reconcile compares only batches older than the
/// watermark, so what it says does not change once the system stops.
#[tokio::test]
async fn reconcile_gives_the_same_answer_on_a_live_system() {
    let env = Env::new();
    let server = env.serve();
    for i in 0..3 {
        let body: String = (0..10)
            .map(|j| format!("{{\"message\":\"m {i} {j}\"}}\n"))
            .collect();
        assert_eq!(ingest(&server, DEFAULT_KEY, body).await.0, 200);
    }
    let live = |settle: &str| {
        let out = env
            .command(&[
                "usage",
                "reconcile",
                "--org",
                "default",
                "--month",
                &this_month(),
                "--settle-secs",
                settle,
                "--json",
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    // Everything is younger than five minutes: nothing compared yet, and
    // nothing reported while batches and their usage may still be landing.
    let fresh = live("300");
    assert_eq!(fresh["batches_compared"], 0, "{fresh}");
    assert!(
        fresh["batches_too_recent"].as_u64().unwrap() >= 3,
        "{fresh}"
    );
    // Ingest keeps going; batches older than a second are compared, and the
    // answer for them holds while the server runs and after it stops.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let writer = {
        let (url, key) = (server.url("/api/ingest/logs"), DEFAULT_KEY.to_string());
        tokio::spawn(async move {
            for i in 0..20 {
                let _ = crate::support::client()
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/x-ndjson")
                    .body(format!("{{\"message\":\"late {i}\"}}\n"))
                    .send()
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
    };
    let during = live("1");
    assert_eq!(during["differences"], json!([]), "{during}");
    assert!(
        during["month_totals"]["log_events"].as_u64().unwrap() >= 30,
        "{during}"
    );
    writer.await.unwrap();
    server.stop();
    let after = live("0");
    assert_eq!(after["differences"], json!([]), "{after}");
    assert_eq!(after["month_totals"]["log_events"], 50, "{after}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn every_authenticated_api_call_is_metered_and_billed_once() {
    let env = Env::new();
    let server = env.serve();
    for _ in 0..5 {
        rows(&server, DEFAULT_KEY, "SELECT 1 AS one").await;
    }
    for _ in 0..2 {
        assert_eq!(curl_get(&server, "/api/insights/models", DEFAULT_KEY), 200);
    }
    // Unauthenticated: not billed. A 404 from a real route: billed.
    assert_eq!(curl_get(&server, "/api/insights/models", "wrong-key"), 401);
    let reply = curl(&[
        "-X",
        "POST",
        &server.url("/api/insights/models/nope/predict"),
        "-H",
        &format!("Authorization: Bearer {DEFAULT_KEY}"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        r#"{"rows": [[1]]}"#,
    ]);
    assert_eq!(reply.status, 404);
    // Stopping flushes the meter before the bus closes.
    server.stop();

    let server = env.serve();
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT method, route, status, count(*) AS n FROM api_requests \
         GROUP BY method, route, status ORDER BY route, status",
    )
    .await;
    let got: Vec<String> = got
        .iter()
        .map(|r| {
            format!("{} {} {} {}", r["method"], r["route"], r["status"], r["n"]).replace('"', "")
        })
        .collect();
    assert_eq!(
        got,
        [
            "GET /api/insights/models 200 2",
            "POST /api/insights/models/{id}/predict 404 1",
            "POST /api/sql 200 5",
        ]
    );
    server.stop();
    // 8 calls, plus the query above: billed, and reconciled with the raw
    // api_requests records.
    let (ok, report, stderr) = reconcile(&env, "default");
    assert!(ok, "{report} {stderr}");
    assert_eq!(report["month_totals"]["api_requests"], 9, "{report}");
}

fn curl_get(server: &Server, path: &str, key: &str) -> u16 {
    curl(&[
        &server.url(path),
        "-H",
        &format!("Authorization: Bearer {key}"),
    ])
    .status
}
