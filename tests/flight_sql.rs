//! Arrow Flight SQL (`api.flight_sql.listen`) with the clients analysts'
//! tools use: the ADBC Flight SQL driver and pyarrow.flight, from PyPI
//! (scripts/flight_sql_client.py), against the same answers `POST /api/sql`
//! gives.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Env, count, ingest, python, rows};

#[tokio::test]
async fn bi_clients_see_their_own_tables_with_the_api_keys_and_limits() {
    let env = Env::new()
        .set("SECURENET_API__FLIGHT_SQL__LISTEN", "127.0.0.1:0")
        // Below one organization's rows: a full listing is over the limit.
        .set("SECURENET_API__SQL__MAX_RESULT_ROWS", "1000");
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let (dir, manifest) = env.generate("acme,globex", 3000, 5);
    let server = env.serve();
    for (tenant, key) in [("acme", &acme), ("globex", &globex)] {
        let body = std::fs::read(dir.join(format!("{tenant}.ndjson"))).unwrap();
        let (status, answer) = ingest(&server, key, body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let acme_rows = manifest["rows_per_tenant"]["acme"].as_u64().unwrap();
    assert!(acme_rows > 1000);
    assert_eq!(count(&server, &acme, "logs").await, acme_rows);
    let sshd = count(&server, &acme, "logs WHERE app = 'sshd'").await;
    assert!(sshd > 0);
    let by_app = "SELECT app, count(*) AS n FROM logs GROUP BY app ORDER BY app";
    let acme_apps = rows(&server, &acme, by_app).await;
    let globex_apps = rows(&server, &globex, by_app).await;
    assert_ne!(acme_apps, globex_apps, "the two organizations' data differ");

    let uri = format!("grpc://{}", server.listener("flight_sql"));
    let script = crate::support::repo_path("scripts/flight_sql_client.py");
    let out = std::process::Command::new(python())
        .args([&script, &uri, &acme, &globex])
        .output()
        .expect("run the Flight SQL clients");
    assert!(
        out.status.success(),
        "flight_sql_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON from the clients");

    // ADBC with the API key as a bearer token, and as the password of a
    // Basic handshake: the organization's rows, nobody else's.
    assert_eq!(
        got["adbc_bearer"],
        json!({"count": acme_rows, "tenants": ["acme"], "other_tenant_rows": 0}),
        "{got}"
    );
    assert_eq!(got["adbc_basic"], json!(acme_rows), "{got}");
    // Prepared statements with a bound parameter, bound again.
    assert_eq!(
        got["prepared"],
        json!({"sshd": sshd, "again": sshd, "none": 0}),
        "{got}"
    );
    // Browsing: the tenant's tables in catalog securenet, schema tenant.
    let tables = got["metadata"]["tables"]
        .as_object()
        .unwrap_or_else(|| panic!("{got}"));
    for table in [
        "logs",
        "devices",
        "scans",
        "findings",
        "anomalies",
        "usage",
        "api_requests",
        "detections",
    ] {
        assert!(
            tables.contains_key(&format!("securenet.tenant.{table}")),
            "{table} not listed: {tables:?}"
        );
    }
    let log_columns = &tables["securenet.tenant.logs"];
    for column in ["tenant_id", "ts", "message", "source_ip", "date"] {
        assert!(
            log_columns.as_array().unwrap().contains(&json!(column)),
            "{column}: {log_columns}"
        );
    }
    assert_eq!(got["metadata"]["vendor_name"], "SecureNet", "{got}");
    // Anything but a query is refused, as over HTTP; an unknown key too.
    let forbidden = got["forbidden"]["message"].as_str().unwrap_or_default();
    assert!(
        forbidden.contains("DROP is not allowed") || forbidden.contains("not allowed"),
        "{got}"
    );
    let bad_key = got["bad_key"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(bad_key.contains("unauthenticated"), "{got}");
    // pyarrow.flight with a hand-built command: the same answer as the
    // API, with its types; the other organization presenting this ticket
    // gets its own rows.
    let flight = &got["pyarrow_flight"];
    assert_eq!(flight["schema"], json!(["app:string", "n:int64"]), "{got}");
    assert_eq!(flight["rows"], json!(acme_apps), "{got}");
    assert_eq!(flight["replayed_by_other"], json!(globex_apps), "{got}");
    // Over the result limit: refused, not cut.
    let over = got["over_limit"]["message"].as_str().unwrap_or_default();
    assert!(
        over.contains("max_result_rows") && over.to_lowercase().contains("resource"),
        "{got}"
    );

    // Bad input, each with an error that says what was wrong, and the same
    // connection then answers an ordinary query.
    let bad = &got["bad_input"];
    for (case, says) in [
        ("garbage_ticket", "DecodeError"),
        ("unknown_command", "evil.Command"),
        ("not_utf8", "not UTF-8"),
        ("syntax", "Expected: an SQL statement"),
        ("oversized", "message length too large"),
    ] {
        let message = bad[case]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{case} was not refused: {bad}"));
        assert!(message.contains(says), "{case}: {message}");
    }
    assert_eq!(bad["then"], json!([{ "n": acme_rows }]), "{bad}");

    // Flight SQL calls are metered like API calls.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = count(&server, &acme, "api_requests WHERE method = 'GRPC'").await;
        if n > 0 {
            break;
        }
        assert!(Instant::now() < until, "no Flight SQL call metered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
