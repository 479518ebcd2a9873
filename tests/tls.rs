//! HTTPS on the HTTP listener (`http.tls`), and TLS with the same
//! certificate on the gRPC listeners: curl, the OpenTelemetry SDK's
//! OTLP/HTTP and OTLP/gRPC exporters, ADBC's Flight SQL driver; the
//! certificate reloaded on SIGHUP while open connections keep working.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, TestCa, curl, forwarder_client_with, python, signal};

/// A certificate for localhost and 127.0.0.1, subject `CN=cn`, signed by a
/// CA of its own, written to `cert`/`key` (overwriting them: that is how
/// operators renew). Returns the CA's certificate, what clients trust.
fn certificate(cert: &Path, key: &Path, cn: &str) -> PathBuf {
    let ca = TestCa::new(cert.parent().unwrap(), cn);
    ca.issue(
        &format!("/CN={cn}"),
        cert,
        key,
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    );
    ca.cert
}

fn client_trusting(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn count_logs(client: &reqwest::Client, base: &str) -> u64 {
    let answer: Value = client
        .post(format!("{base}/api/sql"))
        .bearer_auth(DEFAULT_KEY)
        .json(&json!({"sql": "SELECT count(*) AS n FROM logs"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["rows"][0]["n"].as_u64().unwrap()
}

/// `SELECT count(*) FROM logs` through ADBC's Flight SQL driver over TLS,
/// trusting `ca`; the driver's error when it fails.
fn flight_count(addr: &str, ca: &Path) -> Result<u64, String> {
    let script = r#"
import sys
import adbc_driver_flightsql.dbapi as flight_sql
uri, key, ca = sys.argv[1:4]
options = {
    "adbc.flight.sql.authorization_header": f"Bearer {key}",
    "adbc.flight.sql.client_option.tls_root_certs": open(ca).read(),
}
with flight_sql.connect(uri, db_kwargs=options) as conn, conn.cursor() as cur:
    cur.execute("SELECT count(*) FROM logs")
    print(cur.fetchall()[0][0])
"#;
    let out = std::process::Command::new(python())
        .args(["-c", script, &format!("grpc+tls://{addr}"), DEFAULT_KEY])
        .arg(ca)
        .output()
        .expect("run ADBC");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))
}

#[tokio::test]
async fn https_serves_ingest_and_the_api_and_reloads_its_certificate_on_sighup() {
    let env = Env::new();
    let (cert, key): (PathBuf, PathBuf) = (env.path().join("tls.crt"), env.path().join("tls.key"));
    let first = certificate(&cert, &key, "first");
    let env = env
        .set("SECURENET_HTTP__TLS__CERT_PATH", cert.to_str().unwrap())
        .set("SECURENET_HTTP__TLS__KEY_PATH", key.to_str().unwrap())
        .set("SECURENET_INGEST__OTLP__GRPC_LISTEN", "127.0.0.1:0")
        .set("SECURENET_API__FLIGHT_SQL__LISTEN", "127.0.0.1:0");
    let server = env.serve();
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let base = format!("https://localhost:{port}");

    // curl trusting the certificate's CA: ingest.
    let r = curl(&[
        &format!("{base}/api/ingest/logs"),
        "--cacert",
        first.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {DEFAULT_KEY}"),
        "-H",
        "Content-Type: application/x-ndjson",
        "-d",
        "{\"message\": \"over https\", \"host\": \"web-1\"}",
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    // The OpenTelemetry SDK's exporter, told to trust the CA.
    let report = forwarder_client_with(
        "otlp-http",
        &format!("{base}/v1/logs"),
        DEFAULT_KEY,
        "tls",
        3,
        &[(
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
            first.to_str().unwrap(),
        )],
    );
    assert_eq!(
        report["results"],
        json!(["SUCCESS", "SUCCESS", "SUCCESS"]),
        "{report}"
    );
    // Plain HTTP on the TLS port gets no answer it could mistake for one.
    let plain = std::process::Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            &format!("http://127.0.0.1:{port}/api/metrics/health"),
        ])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("\"ok\""));

    // The gRPC listeners serve TLS with the same certificate: the SDK's
    // OTLP/gRPC exporter, and ADBC's Flight SQL driver.
    let grpc = server
        .listener("otlp_grpc")
        .replace("127.0.0.1", "localhost");
    let report = forwarder_client_with(
        "otlp-grpc",
        &format!("https://{grpc}"),
        DEFAULT_KEY,
        "tls",
        3,
        &[(
            "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
            first.to_str().unwrap(),
        )],
    );
    assert_eq!(
        report["results"],
        json!(["SUCCESS", "SUCCESS", "SUCCESS"]),
        "{report}"
    );
    let flight = server
        .listener("flight_sql")
        .replace("127.0.0.1", "localhost");
    assert_eq!(flight_count(&flight, &first), Ok(7));

    let old = client_trusting(&first);
    assert_eq!(count_logs(&old, &base).await, 7);

    // Renewal: new files, SIGHUP. The open (pooled) connection goes on;
    // new connections get the new certificate.
    let second = certificate(&cert, &key, "second");
    signal(server.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count_logs(&old, &base).await, 7, "open connection kept");
    let new = client_trusting(&second);
    assert_eq!(count_logs(&new, &base).await, 7);
    assert_eq!(flight_count(&flight, &second), Ok(7));
    assert!(
        flight_count(&flight, &first).is_err(),
        "a new gRPC connection must present the renewed certificate"
    );
    let stale = client_trusting(&first);
    assert!(
        stale
            .get(format!("{base}/api/metrics/health"))
            .send()
            .await
            .is_err(),
        "a new connection must present the renewed certificate"
    );

    // A broken renewal keeps the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    signal(server.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = client_trusting(&second);
    assert_eq!(count_logs(&after, &base).await, 7);
    drop(server);
}

#[test]
fn a_missing_certificate_stops_the_server_with_its_path() {
    let env = Env::new()
        .set(
            "SECURENET_HTTP__TLS__CERT_PATH",
            "/nonexistent/securenet.crt",
        )
        .set(
            "SECURENET_HTTP__TLS__KEY_PATH",
            "/nonexistent/securenet.key",
        );
    let out = env.command(&["serve"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tls") && err.contains("/nonexistent/securenet.crt"),
        "{err}"
    );
}
