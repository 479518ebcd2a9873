//! GeoIP: the country and AS of `source_ip` in every stored log — SQL,
//! ClickHouse, Sigma rules — from MaxMind-format databases this test writes
//! with mmdb-writer (scripts/geoip_testdb.py); and lake files written before
//! the columns existed (schema 1.0) still read.

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, ingest, python, rows, run, wait_count};

/// Writes the test databases into `dir`: country.mmdb and asn.mmdb.
fn databases(dir: &std::path::Path) {
    let script = crate::support::repo_path("scripts/geoip_testdb.py");
    run(&python(), &[&script, dir.to_str().unwrap()]);
}

const FROM_GERMANY: &str = r#"title: Login from Germany
id: login-from-de
level: medium
logsource:
  product: linux
detection:
  sel:
    source_country: DE
    message|contains: 'Accepted'
  condition: sel
"#;

#[tokio::test]
async fn every_log_gets_the_country_and_as_of_its_source_address() {
    let (env, ch) = Env::new().clickhouse();
    databases(env.path());
    let country = env.path().join("country.mmdb");
    let asn = env.path().join("asn.mmdb");
    let env = env
        .set(
            "SECURENET_PIPELINE__GEOIP__COUNTRY_DB",
            country.to_str().unwrap(),
        )
        .set("SECURENET_PIPELINE__GEOIP__ASN_DB", asn.to_str().unwrap())
        .set("SECURENET_PIPELINE__RULES__REFRESH_MS", "200");
    let server = env.serve();
    let r = crate::support::post_json(
        &server,
        "/api/detections/rules",
        DEFAULT_KEY,
        &json!({"yaml": FROM_GERMANY}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let lines = [
        ("de", json!("198.51.100.7")),
        // No located country: the registered one.
        ("jp", json!("203.0.113.9")),
        ("fr", json!("2001:db8:1::5")),
        ("mapped", json!("::ffff:198.51.100.8")),
        ("unknown", json!("192.0.2.1")),
        ("private", json!("10.0.0.1")),
        ("garbage", json!("not-an-ip")),
        ("none", Value::Null),
    ];
    let body: String = lines
        .iter()
        .map(|(name, ip)| {
            let mut line =
                json!({"message": format!("Accepted publickey ({name})"), "host": "bastion-1"});
            if !ip.is_null() {
                line["source_ip"] = ip.clone();
            }
            format!("{line}\n")
        })
        .collect();
    let (status, answer) = ingest(&server, DEFAULT_KEY, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", 8).await, 8);

    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, source_country, source_asn, source_as_org FROM logs ORDER BY message",
    )
    .await;
    let row = |name: &str, country: Value, asn: Value, org: Value| json!({"message": format!("Accepted publickey ({name})"), "source_country": country, "source_asn": asn, "source_as_org": org});
    let n = Value::Null;
    assert_eq!(
        got,
        [
            row(
                "de",
                json!("DE"),
                json!(64500),
                json!("Example Transit GmbH")
            ),
            row("fr", json!("FR"), json!(64502), json!("Exemple SA")),
            row("garbage", n.clone(), n.clone(), n.clone()),
            row("jp", json!("JP"), json!(64501), json!("Beispiel K.K.")),
            row(
                "mapped",
                json!("DE"),
                json!(64500),
                json!("Example Transit GmbH")
            ),
            row("none", n.clone(), n.clone(), n.clone()),
            row("private", n.clone(), n.clone(), n.clone()),
            row("unknown", n.clone(), n.clone(), n.clone()),
        ]
    );
    // A rule on the new column: the two German addresses.
    assert_eq!(wait_count(&server, DEFAULT_KEY, "detections", 2).await, 2);
    // ClickHouse has the columns (added to its table) and the values.
    let in_ch = ch
        .rows("SELECT source_country AS c, count() AS n FROM {db}.logs FINAL WHERE source_country IS NOT NULL GROUP BY c ORDER BY c")
        .await;
    let in_ch: Vec<(String, u64)> = in_ch
        .iter()
        .map(|r| {
            let n = match &r["n"] {
                Value::String(s) => s.parse().unwrap(),
                v => v.as_u64().unwrap(),
            };
            (r["c"].as_str().unwrap().to_string(), n)
        })
        .collect();
    assert_eq!(
        in_ch,
        [("DE".into(), 2), ("FR".into(), 1), ("JP".into(), 1)]
    );
    let metrics = crate::support::exposition(&server).await;
    assert!(
        metrics.contains(r#"securenet_geoip_rows_total{database="country",result="found"} 4"#),
        "{metrics}"
    );
    server.stop();

    // A lake file as schema 1.0 wrote it (no GeoIP columns): rewritten
    // with pyarrow without them, it still reads, the columns null.
    let lake = env.path().join("lake");
    let files: Vec<String> = env
        .lake_objects("logs/")
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    assert!(!files.is_empty());
    let rewrite = r#"
import sys
import pyarrow.parquet as pq
for path in sys.argv[1:]:
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["source_country", "source_asn", "source_as_org"]), path)
"#;
    let paths: Vec<String> = files
        .iter()
        .map(|f| lake.join(f).to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["-c", rewrite];
    args.extend(paths.iter().map(String::as_str));
    run(&python(), &args);
    let server = env.serve();
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT count(*) AS n, count(source_country) AS located FROM logs",
    )
    .await;
    assert_eq!(got, [json!({"n": 8, "located": 0})]);
    server.stop();
}
