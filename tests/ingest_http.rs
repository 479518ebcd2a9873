//! `POST /api/ingest/logs` through HTTP: acknowledgements, per-record
//! errors, and one test per kind of bad input showing its status and that
//! nothing else was lost.

use std::io::Write;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::support::{DEFAULT_KEY, Env, client, count, ingest, rows};

fn line(msg: &str) -> String {
    json!({ "ts": "2026-11-26T09:00:00Z", "host": "web-01", "app": "sshd", "message": msg })
        .to_string()
}

fn gzip_with(data: &[u8], level: Compression) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), level);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_with(data, Compression::fast())
}

fn gzip_best(data: &[u8]) -> Vec<u8> {
    gzip_with(data, Compression::best())
}

#[tokio::test]
async fn malformed_lines_get_errors_and_valid_lines_are_stored() {
    let env = Env::new();
    let server = env.serve();
    let body = [
        line("first"),
        "{not json".to_string(),
        line("second"),
        "[1,2,3]".to_string(),
        json!({"message": "wrong type", "ts": true}).to_string(),
        json!({"message": "someone else's", "tenant_id": "globex"}).to_string(),
        line("third"),
    ]
    .join("\n");
    let (status, answer) = ingest(&server, DEFAULT_KEY, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], 3);
    assert_eq!(answer["rejected"], 4);
    let errors = answer["errors"].as_array().unwrap();
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 4, 5, 6]);
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON")
    );
    assert!(
        errors[1]["error"]
            .as_str()
            .unwrap()
            .contains("expected a JSON object")
    );
    assert!(errors[2]["error"].as_str().unwrap().starts_with("field ts"));
    assert!(
        errors[3]["error"]
            .as_str()
            .unwrap()
            .contains("does not match the organization")
    );

    let stored = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message FROM logs ORDER BY message",
    )
    .await;
    let messages: Vec<&str> = stored
        .iter()
        .map(|r| r["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["first", "second", "third"]);
}

#[tokio::test]
async fn a_request_with_only_bad_lines_is_400_and_stores_nothing() {
    let env = Env::new();
    let server = env.serve();
    let (status, answer) = ingest(&server, DEFAULT_KEY, "{oops\n{\"ts\": []}\n").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(0), Some(2))
    );
    let (status, answer) = ingest(&server, DEFAULT_KEY, "  \n").await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("empty"),
        "{answer}"
    );
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}

#[tokio::test]
async fn invalid_utf8_is_rejected_for_that_line_only() {
    let env = Env::new();
    let server = env.serve();
    let mut body = line("before").into_bytes();
    body.extend_from_slice(b"\n{\"message\": \"caf\xe9\"}\n");
    body.extend_from_slice(line("after").as_bytes());
    let (status, answer) = ingest(&server, DEFAULT_KEY, body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errors"][0]["line"], 2);
    assert!(
        answer["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("not valid UTF-8")
    );
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 2);
}

#[tokio::test]
async fn gzip_bodies_and_json_arrays_are_accepted() {
    let env = Env::new();
    let server = env.serve();
    let ndjson = (0..500)
        .map(|i| line(&format!("gz {i}")))
        .collect::<Vec<_>>()
        .join("\n");
    let r = client()
        .post(server.url("/api/ingest/logs"))
        .bearer_auth(DEFAULT_KEY)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gzip(ndjson.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let array = json!([{"message": "a1"}, {"message": "a2", "level": "error"}]);
    let r = client()
        .post(server.url("/api/ingest/logs"))
        .header("x-api-key", DEFAULT_KEY)
        .json(&array)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        count(&server, DEFAULT_KEY, "logs WHERE message LIKE 'gz %'").await,
        500
    );
    assert_eq!(
        count(&server, DEFAULT_KEY, "logs WHERE message IN ('a1', 'a2')").await,
        2
    );
    assert_eq!(
        count(
            &server,
            DEFAULT_KEY,
            "logs WHERE message = 'a2' AND severity = 3"
        )
        .await,
        1
    );

    // Bad gzip: 400, nothing stored.
    let r = client()
        .post(server.url("/api/ingest/logs"))
        .bearer_auth(DEFAULT_KEY)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body("definitely not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("gzip"), "{body}");
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 502);
}

#[tokio::test]
async fn oversized_bodies_are_413_before_and_after_decompression() {
    let env = Env::new().set("SECURENET_INGEST__HTTP__MAX_BODY_BYTES", "65536");
    let server = env.serve();
    let big = (0..1000)
        .map(|i| line(&format!("big {i}")))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(big.len() > 65536);
    let (status, answer) = ingest(&server, DEFAULT_KEY, big.clone()).await;
    assert_eq!(status, 413, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("limit of 65536 bytes"),
        "{answer}"
    );

    // A small gzip body that inflates past the limit (a zip bomb) is refused too.
    let bomb = gzip_best(&vec![b' '; 10 << 20]);
    assert!(bomb.len() < 65536);
    let r = client()
        .post(server.url("/api/ingest/logs"))
        .bearer_auth(DEFAULT_KEY)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // Nothing of the refused bodies was stored; a body within the limit is.
    let (status, _) = ingest(&server, DEFAULT_KEY, line("fits")).await;
    assert_eq!(status, 200);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 1);
}

#[tokio::test]
async fn unknown_missing_and_revoked_keys_are_401() {
    let env = Env::new();
    let key = env.org_with_key("acme");
    let server = env.serve();
    let (status, answer) = ingest(&server, "sn_0123456789abcdef_nope", line("x")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "invalid or revoked API key");

    let r = client()
        .post(server.url("/api/ingest/logs"))
        .header("content-type", "application/x-ndjson")
        .body(line("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));

    let (status, _) = ingest(&server, &key, line("while valid")).await;
    assert_eq!(status, 200);
    // Revoke from the CLI (another process) while the server runs: its
    // requests fail within its key cache's documented bound — at once on
    // SQLite, within control::auth::SHARED_KEY_CACHE_TTL on PostgreSQL.
    let id = key.split('_').nth(1).unwrap();
    env.cli(&["keys", "revoke", "--org", "acme", id]);
    let bound = if env.vars.contains_key("SECURENET_CONTROL__DATABASE") {
        control::auth::SHARED_KEY_CACHE_TTL
    } else {
        Duration::ZERO
    };
    let revoked_at = std::time::Instant::now();
    let mut accepted_after = 0;
    loop {
        let sent_after = revoked_at.elapsed();
        let (status, answer) = ingest(&server, &key, line("after revoke")).await;
        if status == 401 {
            break;
        }
        assert!(
            status == 200 && sent_after < bound,
            "{status} {answer} {sent_after:?} after the revocation (bound {bound:?})"
        );
        accepted_after += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = crate::support::sql(&server, &key, "SELECT 1").await;
    assert_eq!(status, 401);
    // What was accepted before the revocation stays (and, on PostgreSQL,
    // what was accepted while the revocation travelled).
    let admin = env
        .cli(&["keys", "create", "--org", "acme"])
        .trim()
        .to_string();
    assert_eq!(count(&server, &admin, "logs").await, 1 + accepted_after);
}

#[tokio::test]
async fn wrong_content_type_or_encoding_is_415() {
    let env = Env::new();
    let server = env.serve();
    for (ctype, encoding) in [
        ("application/x-www-form-urlencoded", None),
        ("text/plain", None),
        ("application/x-ndjson", Some("br")),
    ] {
        let mut req = client()
            .post(server.url("/api/ingest/logs"))
            .bearer_auth(DEFAULT_KEY)
            .header("content-type", ctype)
            .body(line("x"));
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 415, "{ctype} {encoding:?}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("unsupported content"),
            "{body}"
        );
    }
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}

#[tokio::test]
async fn saturated_pipeline_answers_503_with_retry_after_and_loses_nothing() {
    // A budget for about one request (records are charged their in-memory
    // size, ~330 bytes each here), and a linger long enough that the first
    // request still holds it when the second arrives.
    let env = Env::new()
        .set("SECURENET_INGEST__BATCH__MAX_IN_FLIGHT_BYTES", "150000")
        .set("SECURENET_INGEST__HTTP__MAX_BODY_BYTES", "40000")
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "2000")
        .set("SECURENET_INGEST__BATCH__FLUSH_CONCURRENCY", "0")
        .set("SECURENET_INGEST__BATCH__BACKPRESSURE_WAIT_MS", "100");
    let server = env.serve();
    // ~27 KB on the wire, ~100 KB of the budget: one fits, two do not.
    let body = (0..300)
        .map(|i| line(&format!("load {i}")))
        .collect::<Vec<_>>()
        .join("\n");
    let first = {
        let url = server.url("/api/ingest/logs");
        let body = body.clone();
        tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(DEFAULT_KEY)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = client()
        .post(server.url("/api/ingest/logs"))
        .bearer_auth(DEFAULT_KEY)
        .header("content-type", "application/x-ndjson")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["code"], "overloaded");
    assert_eq!(first.await.unwrap(), 200);
    // The refused request, retried, succeeds; exactly both copies are stored.
    let (status, _) = ingest(&server, DEFAULT_KEY, body).await;
    assert_eq!(status, 200);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 600);
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("securenet_ingest_backpressure_rejections_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_response_carries_security_headers_and_ops_endpoints_work() {
    let env = Env::new();
    let server = env.serve();
    let c = client();
    let responses = [
        c.get(server.url("/api/metrics/health"))
            .send()
            .await
            .unwrap(),
        c.get(server.url("/metrics")).send().await.unwrap(),
        c.post(server.url("/api/ingest/logs"))
            .body("x")
            .send()
            .await
            .unwrap(),
        c.post(server.url("/api/sql")).send().await.unwrap(),
        c.get(server.url("/no/such/route")).send().await.unwrap(),
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [200, 200, 401, 401, 404]);
    for r in &responses {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert!(
            h["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        assert_eq!(h["x-xss-protection"], "0");
    }
    let health: serde_json::Value = c
        .get(server.url("/api/metrics/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    for check in ["metadata", "sinks", "bus"] {
        assert_eq!(health["checks"][check]["status"], "ok", "{health}");
    }
    let (status, _) = ingest(&server, DEFAULT_KEY, line("counted")).await;
    assert_eq!(status, 200);
    let metrics = c
        .get(server.url("/api/metrics/prometheus"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("securenet_ingest_records_total{input=\"http\",outcome=\"accepted\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("securenet_sink_rows_total{kind=\"logs\",sink=\"parquet\"} 1"),
        "{metrics}"
    );
}
