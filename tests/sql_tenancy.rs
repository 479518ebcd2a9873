//! Tenancy through `POST /api/sql`: each organization sees exactly its own
//! rows and cannot reach another's by any route SQL offers.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::{Env, client, count, ingest, metric, rows, sql};

/// Messages of a generated NDJSON file, sorted.
fn messages(path: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn two_tenants_round_trip_exactly_their_own_rows() {
    let env = Env::new();
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let (dir, manifest) = env.generate("acme,globex", 3000, 11);
    let server = env.serve();
    for (tenant, key) in [("acme", &acme), ("globex", &globex)] {
        let body = std::fs::read(dir.join(format!("{tenant}.ndjson"))).unwrap();
        let (status, answer) = ingest(&server, key, body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["rejected"], 0);
        assert_eq!(answer["accepted"], manifest["rows_per_tenant"][tenant]);
    }
    for (tenant, key) in [("acme", &acme), ("globex", &globex)] {
        let expected = manifest["rows_per_tenant"][tenant].as_u64().unwrap();
        assert!(expected > 1000);
        assert_eq!(count(&server, key, "logs").await, expected, "{tenant}");
        let other = if tenant == "acme" { "globex" } else { "acme" };
        assert_eq!(
            count(&server, key, &format!("logs WHERE tenant_id = '{other}'")).await,
            0
        );
        let tenants = rows(&server, key, "SELECT DISTINCT tenant_id FROM logs").await;
        assert_eq!(tenants, [serde_json::json!({ "tenant_id": tenant })]);
        // Contents, not just counts: the multiset of messages is identical.
        let got = rows(&server, key, "SELECT message FROM logs ORDER BY message").await;
        let got: Vec<String> = got
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            messages(&dir.join(format!("{tenant}.ndjson"))),
            "{tenant}"
        );
    }
    // Columns round-trip with their types.
    let r = rows(
        &server,
        &acme,
        "SELECT app, count(*) AS n, min(severity) AS s FROM logs WHERE app = 'sshd' GROUP BY app",
    )
    .await;
    assert_eq!(r[0]["app"], "sshd");
    assert!(r[0]["s"].as_u64().unwrap() <= 6);
    // A lookup of a rare address that reads a wide column is read with the
    // filter evaluated while decoding (under the API's row limit); it
    // answers as the same filter on an expression, which reads every row
    // whole. Its own day (two days ago: within any retention, apart from
    // the generated rows of this hour), so its object is the one the plan
    // is judged on.
    let two_days_ago = schemas::time::now_ms() - 2 * 86_400_000;
    let day_of = |ms: i64| schemas::time::to_rfc3339(ms)[..10].to_string();
    let (first, next) = (day_of(two_days_ago), day_of(two_days_ago + 86_400_000));
    let lines: String = (0..6000)
        .map(|i| {
            let ip = match i % 50 {
                7 => "10.9.9.7".to_string(),
                _ => format!("172.16.{}.{}", i / 256, i % 256),
            };
            let row = serde_json::json!({
                "ts": format!("{first}T09:{:02}:{:02}Z", i / 60 % 60, i % 60),
                "host": format!("web-0{}", i % 3),
                "src_ip": ip,
                "message": format!("probe {i:05} {}", "x".repeat(150 + i % 40)),
            });
            format!("{row}\n")
        })
        .collect();
    let (status, answer) = ingest(&server, &acme, lines).await;
    assert_eq!(status, 200, "{answer}");
    let day = format!("ts >= TIMESTAMP '{first}T00:00:00Z' AND ts < TIMESTAMP '{next}T00:00:00Z'");
    let sql = |ip: &str, order: &str| {
        format!(
            "SELECT ts, host, message FROM logs WHERE {day} AND {ip} = '10.9.9.7' ORDER BY {order}"
        )
    };
    let plan = rows(
        &server,
        &acme,
        &format!("EXPLAIN {}", sql("source_ip", "message LIMIT 5")),
    )
    .await;
    assert!(
        plan.iter().any(|r| r["plan"]
            .as_str()
            .is_some_and(|p| p.contains("CompactViewsExec"))),
        "{plan:?}"
    );
    for order in ["message LIMIT 5", "ts DESC LIMIT 5", "ts, host, message"] {
        let got = rows(&server, &acme, &sql("source_ip", order)).await;
        assert_eq!(
            got.len(),
            if order.contains("LIMIT") { 5 } else { 120 },
            "{order}"
        );
        assert_eq!(
            got,
            rows(&server, &acme, &sql("source_ip || ''", order)).await,
            "{order}"
        );
    }
    // A distinct count over a small input aggregates both of its levels in
    // one pass each, after one repartition by the outer key, and counts
    // what the rows written above hold: each host a third of the rows, each
    // row its own address but the rare one's.
    let distinct = format!(
        "SELECT host, count(DISTINCT source_ip) AS ips, count(*) AS n FROM logs \
         WHERE {day} GROUP BY host ORDER BY host"
    );
    let plan = rows(&server, &acme, &format!("EXPLAIN {distinct}")).await;
    let physical = plan
        .iter()
        .filter_map(|r| r["plan"].as_str())
        .find(|p| p.contains("DataSourceExec"))
        .unwrap_or_default();
    assert_eq!(
        physical.matches("mode=SinglePartitioned").count(),
        2,
        "{physical}"
    );
    let expected: Vec<(String, u64, u64)> = (0..3)
        .map(|h| {
            let own = (0..6000).filter(|i| i % 3 == h && i % 50 != 7).count() as u64;
            (format!("web-0{h}"), own + 1, 2000)
        })
        .collect();
    let got: Vec<(String, u64, u64)> = rows(&server, &acme, &distinct)
        .await
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            (r["host"].as_str().unwrap().to_string(), n("ips"), n("n"))
        })
        .collect();
    assert_eq!(got, expected);
    // Those queries read the same small objects again and again: each was
    // fetched whole once (on S3 one GET), later reads came from memory.
    let fetches = metric(&server, "securenet_sql_object_cache_fetches_total").await;
    let hits = metric(&server, "securenet_sql_object_cache_hits_total").await;
    assert!(fetches >= 2.0, "at least an object per tenant: {fetches}");
    assert!(hits > fetches, "hits {hits}, fetches {fetches}");
    assert!(metric(&server, "securenet_sql_object_cache_bytes").await > 0.0);
}

#[tokio::test]
async fn a_tenant_cannot_reach_another_tenants_data_through_sql() {
    let env = Env::new();
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let server = env.serve();
    let secret = "globex-secret-marker";
    let (status, _) = ingest(&server, &globex, format!("{{\"message\":\"{secret}\"}}")).await;
    assert_eq!(status, 200);
    let (status, _) = ingest(&server, &acme, "{\"message\":\"acme row\"}").await;
    assert_eq!(status, 200);
    // The lake's root as a path and as a URL: a directory, or (with
    // SECURENET_TEST_LAKE=s3) `s3://bucket/prefix` for both.
    let (root, root_url) = match env.vars.get("SECURENET_PIPELINE__LAKE_URL") {
        Some(url) => (url.clone(), url.clone()),
        None => {
            let dir = std::fs::canonicalize(env.path().join("lake")).unwrap();
            (
                dir.display().to_string(),
                format!("file://{}", dir.display()),
            )
        }
    };
    let globex_dir = format!("{root}/logs/tenant_id=globex");
    let object = env.lake_objects("logs/tenant_id=globex")[0].clone();
    let (file, file_url) = (format!("{root}/{object}"), format!("{root_url}/{object}"));

    let attempts: BTreeMap<&str, String> = BTreeMap::from([
        ("path as table", format!("SELECT * FROM '{globex_dir}/'")),
        ("file as table", format!("SELECT * FROM '{file}'")),
        ("url as table", format!("SELECT * FROM '{file_url}'")),
        ("hive dir name", "SELECT * FROM \"tenant_id=globex\"".into()),
        ("other schema", "SELECT * FROM globex.logs".into()),
        (
            "default catalog",
            "SELECT * FROM datafusion.public.logs".into(),
        ),
        (
            "create external",
            format!("CREATE EXTERNAL TABLE g STORED AS PARQUET LOCATION '{globex_dir}/'"),
        ),
        (
            "copy out",
            format!("COPY (SELECT * FROM logs) TO '{root}/stolen.parquet'"),
        ),
        ("copy in", format!("COPY logs TO '{root}/x.csv'")),
        (
            "insert",
            "INSERT INTO logs (message) VALUES ('forged')".into(),
        ),
        ("create table", "CREATE TABLE t AS SELECT 1".into()),
        ("drop", "DROP TABLE logs".into()),
        (
            "set option",
            "SET datafusion.catalog.information_schema = true".into(),
        ),
        (
            "information_schema",
            "SELECT * FROM information_schema.tables".into(),
        ),
        ("show tables", "SHOW TABLES".into()),
        (
            "explain insert",
            "EXPLAIN INSERT INTO logs (message) VALUES ('x')".into(),
        ),
        (
            "two statements",
            "SELECT 1; SELECT * FROM globex.logs".into(),
        ),
    ]);
    for (what, query) in &attempts {
        let (status, body) = sql(&server, &acme, query).await;
        assert!(
            status == 400 || status == 403,
            "{what}: {query} answered {status}: {body}"
        );
        assert!(!body.to_string().contains(secret), "{what} leaked: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    }
    for (what, status) in [
        ("create external", 403),
        ("copy out", 403),
        ("insert", 403),
        ("set option", 403),
    ] {
        assert_eq!(
            sql(&server, &acme, &attempts[what]).await.0,
            status,
            "{what}"
        );
    }
    // Nothing was written by any attempt.
    assert!(
        env.lake_objects("")
            .iter()
            .all(|p| !p.contains("stolen") && !p.ends_with("x.csv"))
    );
    assert_eq!(count(&server, &acme, "logs").await, 1);
    assert_eq!(count(&server, &globex, "logs").await, 1);
    // The legitimate route still works, and only ever shows acme's row.
    let all = rows(
        &server,
        &acme,
        "SELECT message FROM logs UNION ALL SELECT message FROM logs",
    )
    .await;
    assert!(all.iter().all(|r| r["message"] == "acme row"));
}

#[tokio::test]
async fn results_come_as_json_csv_or_arrow() {
    let env = Env::new();
    let server = env.serve();
    let key = crate::support::DEFAULT_KEY;
    ingest(
        &server,
        key,
        "{\"message\":\"a\",\"host\":\"h1\"}\n{\"message\":\"b\",\"host\":\"h2\"}",
    )
    .await;
    let q =
        serde_json::json!({"sql": "SELECT host, message FROM logs ORDER BY host", "format": "csv"});
    let r = client()
        .post(server.url("/api/sql"))
        .header("x-api-key", key)
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert_eq!(r.text().await.unwrap(), "host,message\nh1,a\nh2,b\n");

    let r = client()
        .post(server.url("/api/sql?format=arrow"))
        .header("x-api-key", key)
        .header("content-type", "text/plain")
        .body("SELECT host FROM logs")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = r.bytes().await.unwrap();
    assert!(
        bytes.len() > 100 && bytes.starts_with(&[0xff, 0xff, 0xff, 0xff]),
        "IPC stream continuation marker"
    );

    let (status, body) = sql(&server, key, "SELECT nope FROM logs").await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("nope"), "{body}");
}

#[tokio::test]
async fn the_sql_cli_answers_like_the_api_for_one_organization() {
    let env = Env::new();
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let server = env.serve();
    for (key, n) in [(&acme, 7), (&globex, 3)] {
        let body: String = (0..n)
            .map(|i| {
                serde_json::json!({"message": format!("m{i}"), "host": "h"}).to_string() + "\n"
            })
            .collect();
        let (status, answer) = ingest(&server, key, body).await;
        assert_eq!(status, 200, "{answer}");
    }
    server.stop();
    let out = env.cli(&["sql", "--org", "acme", "SELECT count(*) AS n FROM logs"]);
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rows"][0]["n"], 7, "{json}");
    let csv = env.cli(&[
        "sql",
        "--org",
        "globex",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM logs",
    ]);
    assert_eq!(csv.trim(), "n\n3");
    // The query from standard input.
    let mut child = env
        .command(&["sql", "--org", "acme", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT count(DISTINCT message) AS d FROM logs")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "d\n7");
    // Read-only, and only known organizations.
    for (args, expected) in [
        (
            vec!["sql", "--org", "acme", "DROP TABLE logs"],
            "not allowed",
        ),
        (vec!["sql", "--org", "nobody", "SELECT 1"], "not found"),
        (
            vec!["sql", "--org", "acme", "--format", "xml", "SELECT 1"],
            "possible values: json, csv, arrow",
        ),
    ] {
        let out = env.command(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn api_calls_over_an_organizations_rate_get_429_with_retry_after_and_are_not_billed() {
    let env = Env::new()
        .set("SECURENET_API__RATE_LIMIT_PER_SEC", "1")
        .set("SECURENET_API__RATE_LIMIT_BURST", "3");
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let server = env.serve();
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let r = client()
            .post(server.url("/api/sql"))
            .header("x-api-key", &acme)
            .json(&serde_json::json!({"sql": "SELECT 1 AS one"}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
        }
    }
    assert_eq!(&statuses[..3], [200, 200, 200], "{statuses:?}");
    assert_eq!(statuses[3..], [429, 429], "{statuses:?}");
    let retry: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another organization has its own budget.
    let (status, _) = sql(&server, &globex, "SELECT 1 AS one").await;
    assert_eq!(status, 200);
    server.stop();
    // Only the three answered calls of acme were billed.
    let server = env.serve();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let billed = rows(&server, &acme, "SELECT count(*) AS n FROM api_requests").await;
    assert_eq!(billed[0]["n"], 3);
}

/// `[api.sql.plans]`: an organization's SQL limits follow its plan, read
/// at every query, so an upgrade applies to the next one; and one
/// organization's heavy queries, on their own lane, leave another's
/// answering at once.
#[tokio::test]
async fn sql_limits_follow_the_plan_and_heavy_queries_keep_to_their_lane() {
    use std::time::{Duration, Instant};
    let env = Env::new()
        .set("SECURENET_API__SQL__TIMEOUT_MS", "4000")
        .set("SECURENET_API__SQL__MAX_QUEUED_QUERIES_PER_ORG", "0")
        .set("SECURENET_API__SQL__PLANS__STARTER__MAX_RESULT_ROWS", "5");
    let small = env.org_on_plan("smallco", "starter", &[]);
    let big = env.org_on_plan("bigco", "enterprise", &[]);
    let light = env.org_with_key("lightco");
    let server = env.serve();

    let hundred = "SELECT value FROM generate_series(1, 100)";
    let (status, body) = sql(&server, &small, hundred).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["row_count"].as_u64(), body["truncated"].as_bool()),
        (Some(5), Some(true))
    );
    let (status, body) = sql(&server, &big, hundred).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["row_count"].as_u64(), body["truncated"].as_bool()),
        (Some(100), Some(false))
    );

    // Runs until the 4 s limit, keeping its lane's threads busy.
    let heavy = |key: &str| {
        let (url, key) = (server.url("/api/sql"), key.to_string());
        tokio::spawn(async move {
            let r = client()
                .post(url)
                .header("x-api-key", key)
                .json(&serde_json::json!({"sql": "SELECT count(*) FROM generate_series(1,1000000) a, generate_series(1,1000000) b"}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        })
    };
    // Starter runs one query at a time (and may queue none here): its
    // second is refused while the first runs; enterprise runs both.
    let first = heavy(&small);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = sql(&server, &small, "SELECT 1 AS one").await;
    assert_eq!(status, 429, "{body}");
    let big_queries = [heavy(&big), heavy(&big)];
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Three heavy queries hold both cores; another organization's scans
    // still answer promptly, each on its own lane.
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = sql(
            &server,
            &light,
            "SELECT count(*) AS n FROM generate_series(1, 200000) WHERE value % 7 = 0",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["rows"][0]["n"], 28_571);
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "lightco's scan took {:?} beside three heavy queries",
            started.elapsed()
        );
    }
    assert_eq!(
        first.await.unwrap(),
        422,
        "the starter's query ran to its time limit"
    );
    for q in big_queries {
        assert_eq!(
            q.await.unwrap(),
            422,
            "both enterprise queries ran to their time limit"
        );
    }

    // An upgrade takes effect at the next query: professional follows
    // [api.sql] (100,000 rows, two at a time).
    let r = crate::support::post_json(
        &server,
        "/api/billing/upgrade",
        &small,
        &serde_json::json!({"plan": "professional"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let (status, body) = sql(&server, &small, hundred).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["row_count"], 100);
}
