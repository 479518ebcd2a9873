//! Forwarder-compatible HTTP routes (Splunk HEC, Elasticsearch bulk, Loki
//! push, OTLP/HTTP) driven by curl, the client every forwarder's docs use to check a
//! destination. Each test reads the stored rows back through SQL.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, Server, count, curl, rows};

fn splunk(key: &str) -> String {
    format!("Authorization: Splunk {key}")
}

fn bearer(key: &str) -> String {
    format!("Authorization: Bearer {key}")
}

fn gzip_file(env: &Env, name: &str, data: &[u8]) -> String {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).unwrap();
    let path = env.path().join(name);
    std::fs::write(&path, enc.finish().unwrap()).unwrap();
    format!("@{}", path.display())
}

fn sd(row: &Value) -> Value {
    serde_json::from_str(row["structured_data"].as_str().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn hec_events_single_concatenated_and_raw_are_stored_with_their_metadata() {
    let env = Env::new();
    let server = env.serve();
    let url = server.url("/services/collector/event");
    let events = [
        json!({"event": "Accepted password for root", "time": 1795687200.5, "host": "bastion",
               "source": "/var/log/auth.log", "sourcetype": "linux_secure", "index": "sec",
               "fields": {"env": "prod", "dc": "fra1"}}),
        json!({"event": {"message": "GET /admin 403", "app": "nginx", "status": 403}, "time": "1795687201"}),
    ];
    // One event, then two concatenated (HEC's batch format: no separator).
    let r = curl(&[
        &url,
        "-H",
        &splunk(DEFAULT_KEY),
        "-d",
        &events[0].to_string(),
    ]);
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"text": "Success", "code": 0}))
    );
    let batch = format!("{}{}", events[0], events[1]);
    let r = curl(&[&url, "-H", &splunk(DEFAULT_KEY), "-d", &batch]);
    assert_eq!(r.status, 200, "{}", r.body);

    // Raw: one event per line, metadata from the query string.
    let raw = server.url("/services/collector/raw?host=fw-1&sourcetype=pan:traffic");
    let r = curl(&[
        &raw,
        "-H",
        &splunk(DEFAULT_KEY),
        "--data-binary",
        "deny tcp 10.0.0.1:4444\nallow udp 10.0.0.2:53\n",
    ]);
    assert_eq!(r.status, 200, "{}", r.body);

    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, host, app, CAST(ts AS BIGINT) AS ts_ms, input, structured_data FROM logs ORDER BY message, ts",
    )
    .await;
    let messages: Vec<&str> = got.iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(
        messages,
        [
            "Accepted password for root",
            "Accepted password for root",
            "GET /admin 403",
            "allow udp 10.0.0.2:53",
            "deny tcp 10.0.0.1:4444"
        ]
    );
    assert!(got.iter().all(|r| r["input"] == "hec"));
    let first = &got[0];
    assert_eq!(
        (first["host"].as_str(), first["ts_ms"].as_i64()),
        (Some("bastion"), Some(1_795_687_200_500))
    );
    let meta = sd(first);
    for (k, v) in [
        ("source", "/var/log/auth.log"),
        ("sourcetype", "linux_secure"),
        ("index", "sec"),
        ("env", "prod"),
        ("dc", "fra1"),
    ] {
        assert_eq!(meta[k], v, "{meta}");
    }
    assert_eq!(
        (got[2]["app"].as_str(), got[2]["ts_ms"].as_i64()),
        (Some("nginx"), Some(1_795_687_201_000))
    );
    assert_eq!(sd(&got[2])["status"], 403);
    assert_eq!(got[3]["host"], "fw-1");
    assert_eq!(sd(&got[3])["sourcetype"], "pan:traffic");

    let health = curl(&[&server.url("/services/collector/health")]);
    assert_eq!(
        (health.status, health.json()["code"].as_u64()),
        (200, Some(17))
    );
}

#[tokio::test]
async fn hec_errors_use_hec_codes_and_keep_the_valid_events() {
    let env = Env::new();
    let server = env.serve();
    let url = server.url("/services/collector/event");
    let ok = json!({"event": "kept"}).to_string();

    let r = curl(&[&url, "-d", &ok]);
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (401, Some(2)),
        "no token"
    );
    let r = curl(&[&url, "-H", "Authorization: Basic Zm9vOmJhcg==", "-d", &ok]);
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (401, Some(3)),
        "wrong scheme"
    );
    let r = curl(&[&url, "-H", &splunk("sn_0000000000000000_nope"), "-d", &ok]);
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (403, Some(4)),
        "bad token"
    );
    let r = curl(&[&url, "-H", &splunk(DEFAULT_KEY), "-d", r#"{"event": ""}"#]);
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (400, Some(13)),
        "blank event"
    );
    let r = curl(&[&url, "-H", &splunk(DEFAULT_KEY), "-d", r#"{"time": 1}"#]);
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (400, Some(12)),
        "no event"
    );
    let r = curl(&[&url, "-H", &splunk(DEFAULT_KEY), "-X", "POST"]);
    assert_eq!(
        (r.status, r.json()["code"].as_u64()),
        (400, Some(5)),
        "no data"
    );

    // A valid event, an invalid one, another valid one: 400 naming event 1,
    // and both valid events stored.
    let mixed = format!("{ok}{}{ok}", json!({"event": "x", "time": "yesterday"}));
    let r = curl(&[&url, "-H", &splunk(DEFAULT_KEY), "-d", &mixed]);
    let body = r.json();
    assert_eq!((r.status, body["code"].as_u64()), (400, Some(6)), "{body}");
    assert_eq!(body["invalid-event-number"], 1);
    assert!(
        body["text"].as_str().unwrap().contains("yesterday"),
        "{body}"
    );
    // Broken JSON after a valid event: the valid prefix is kept.
    let r = curl(&[
        &url,
        "-H",
        &splunk(DEFAULT_KEY),
        "-d",
        &format!("{ok}{{\"event\": "),
    ]);
    assert_eq!((r.status, r.json()["code"].as_u64()), (400, Some(6)));
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 3);
}

#[tokio::test]
async fn elasticsearch_bulk_answers_per_item_in_elasticsearch_shape() {
    let env = Env::new();
    let server = env.serve();
    let root = curl(&[&server.url("/api/ingest"), "-H", &bearer(DEFAULT_KEY)]);
    assert_eq!(root.status, 200);
    assert_eq!(root.headers["x-elastic-product"], "Elasticsearch");
    assert!(
        root.json()["version"]["number"]
            .as_str()
            .unwrap()
            .starts_with('8')
    );

    let body = [
        json!({"index": {"_index": "auth", "_id": "a1"}}).to_string(),
        json!({"@timestamp": "2026-11-26T09:00:00Z", "message": "login ok", "host": "h1"})
            .to_string(),
        json!({"create": {}}).to_string(),
        json!({"message": "created doc"}).to_string(),
        json!({"update": {"_id": "a1"}}).to_string(),
        json!({"doc": {"message": "changed"}}).to_string(),
        json!({"delete": {"_id": "a1"}}).to_string(),
        json!({"index": {}}).to_string(),
        "{broken".to_string(),
    ]
    .join("\n")
        + "\n";
    let r = curl(&[
        &server.url("/api/ingest/fallback/_bulk"),
        "-H",
        &bearer(DEFAULT_KEY),
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        &body,
    ]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["x-elastic-product"], "Elasticsearch");
    let answer = r.json();
    assert_eq!(answer["errors"], true);
    assert!(answer["took"].is_u64());
    let items = answer["items"].as_array().unwrap();
    let summary: Vec<(String, u64, String)> = items
        .iter()
        .map(|i| {
            let (action, result) = i.as_object().unwrap().iter().next().unwrap();
            (
                action.clone(),
                result["status"].as_u64().unwrap(),
                result["_index"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("index", 201, "auth"),
        ("create", 201, "fallback"),
        ("update", 400, "fallback"),
        ("delete", 400, "fallback"),
        ("index", 400, "fallback"),
    ];
    assert_eq!(
        summary,
        expect.map(|(a, s, i)| (a.to_string(), s, i.to_string()))
    );
    assert_eq!(items[0]["index"]["_id"], "a1");
    assert_eq!(items[0]["index"]["result"], "created");
    assert_eq!(
        items[4]["index"]["error"]["type"],
        "document_parsing_exception"
    );

    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, host, input, structured_data FROM logs ORDER BY message",
    )
    .await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (got[1]["message"].as_str(), got[1]["host"].as_str()),
        (Some("login ok"), Some("h1"))
    );
    assert_eq!(
        (sd(&got[1])["_index"].as_str(), sd(&got[1])["_id"].as_str()),
        (Some("auth"), Some("a1"))
    );
    assert_eq!(sd(&got[0])["_index"], "fallback");
    assert!(got.iter().all(|r| r["input"] == "bulk"));

    // A broken action line fails the whole request, Elasticsearch-style.
    let r = curl(&[
        &server.url("/api/ingest/_bulk"),
        "-H",
        &bearer(DEFAULT_KEY),
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        "not an action\n{}\n",
    ]);
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("action/metadata line 1")
    );
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 2);
}

#[tokio::test]
async fn loki_push_keeps_stream_labels_as_fields() {
    let env = Env::new();
    let server = env.serve();
    let push = json!({"streams": [
        {"stream": {"job": "varlogs", "host": "web-1", "level": "error", "env": "prod"},
         "values": [["1795687200123456789", "disk full"], ["1795687201000000000", "still full", {"trace_id": "t-1"}]]},
        {"stream": {"service_name": "api"}, "values": [["1795687202000000000", "ok"]]}
    ]});
    let r = curl(&[
        &server.url("/loki/api/v1/push"),
        "-H",
        &bearer(DEFAULT_KEY),
        "-H",
        "Content-Type: application/json",
        "-d",
        &push.to_string(),
    ]);
    assert_eq!(r.status, 204, "{}", r.body);
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, host, app, severity, CAST(ts AS BIGINT) AS ts_ms, input, structured_data FROM logs ORDER BY ts",
    )
    .await;
    assert_eq!(got.len(), 3);
    assert_eq!(
        (
            &got[0]["message"],
            &got[0]["host"],
            &got[0]["app"],
            &got[0]["severity"],
            &got[0]["ts_ms"]
        ),
        (
            &json!("disk full"),
            &json!("web-1"),
            &json!("varlogs"),
            &json!(3),
            &json!(1_795_687_200_123i64)
        )
    );
    assert_eq!(sd(&got[0])["env"], "prod");
    assert_eq!(sd(&got[1])["trace_id"], "t-1");
    assert_eq!(got[2]["app"], "api");
    assert!(got.iter().all(|r| r["input"] == "loki"));

    // A bad entry is named; the good one beside it is stored.
    let bad = json!({"streams": [{"stream": {}, "values": [["yesterday", "x"], ["1795687203000000000", "kept"]]}]});
    let r = curl(&[
        &server.url("/loki/api/v1/push"),
        "-H",
        &bearer(DEFAULT_KEY),
        "-H",
        "Content-Type: application/json",
        "-d",
        &bad.to_string(),
    ]);
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("stream 0 entry 0") && r.body.contains("yesterday"),
        "{}",
        r.body
    );
    // Protobuf pushes must be snappy-compressed (as every Loki client
    // sends them); other media types are named in the refusal.
    let r = curl(&[
        &server.url("/loki/api/v1/push"),
        "-H",
        &bearer(DEFAULT_KEY),
        "-H",
        "Content-Type: application/x-protobuf",
        "--data-binary",
        "\x08\x01",
    ]);
    assert_eq!(r.status, 400);
    assert!(r.body.contains("snappy"), "{}", r.body);
    let r = curl(&[
        &server.url("/loki/api/v1/push"),
        "-H",
        &bearer(DEFAULT_KEY),
        "-H",
        "Content-Type: text/plain",
        "-d",
        "hello",
    ]);
    assert_eq!(r.status, 415);
    assert!(r.body.contains("application/x-protobuf"), "{}", r.body);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 4);
}

/// (name, url, content type, body of one record) for every log route.
fn each_route(server: &Server) -> Vec<(&'static str, String, String, String)> {
    let hec = json!({"event": "via hec"}).to_string();
    let bulk = format!(
        "{}\n{}\n",
        json!({"index": {}}),
        json!({"message": "via bulk"})
    );
    let loki =
        json!({"streams": [{"stream": {}, "values": [["1795687200000000000", "via loki"]]}]})
            .to_string();
    let logs = json!({"message": "via logs"}).to_string();
    let otlp = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": "via otlp"}}
    ]}]}]})
    .to_string();
    let ndjson = "application/x-ndjson".to_string();
    let json = "application/json".to_string();
    vec![
        ("logs", server.url("/api/ingest/logs"), ndjson.clone(), logs),
        (
            "hec",
            server.url("/services/collector/event"),
            json.clone(),
            hec,
        ),
        ("bulk", server.url("/api/ingest/_bulk"), ndjson, bulk),
        ("loki", server.url("/loki/api/v1/push"), json.clone(), loki),
        ("otlp", server.url("/v1/logs"), json, otlp),
    ]
}

#[tokio::test]
async fn gzip_is_accepted_on_every_route() {
    let env = Env::new();
    let server = env.serve();
    for (name, url, media, body) in each_route(&server) {
        let file = gzip_file(&env, &format!("{name}.gz"), body.as_bytes());
        let r = curl(&[
            &url,
            "-H",
            &bearer(DEFAULT_KEY),
            "-H",
            &format!("Content-Type: {media}"),
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &file,
        ]);
        assert!(r.status / 100 == 2, "{name}: {} {}", r.status, r.body);
    }
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message FROM logs ORDER BY message",
    )
    .await;
    let messages: Vec<&str> = got.iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert_eq!(
        messages,
        ["via bulk", "via hec", "via logs", "via loki", "via otlp"]
    );
}

#[tokio::test]
async fn every_route_limits_its_body_even_when_gzip_hides_it() {
    let env = Env::new().set("SECURENET_INGEST__HTTP__MAX_BODY_BYTES", "4096");
    let server = env.serve();
    let huge = "x".repeat(10_000);
    for (name, url, media, _) in each_route(&server) {
        let plain = curl(&[
            &url,
            "-H",
            &bearer(DEFAULT_KEY),
            "-H",
            &format!("Content-Type: {media}"),
            "-d",
            &huge,
        ]);
        assert_eq!(plain.status, 413, "{name}: {}", plain.body);
        // Over the limit only after decompression: a tiny gzip of 10 KB.
        let file = gzip_file(&env, &format!("{name}-big.gz"), huge.as_bytes());
        let r = curl(&[
            &url,
            "-H",
            &bearer(DEFAULT_KEY),
            "-H",
            &format!("Content-Type: {media}"),
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &file,
        ]);
        assert_eq!(r.status, 413, "{name}: {}", r.body);
        assert!(
            r.body.contains("4096"),
            "{name} names the limit: {}",
            r.body
        );
    }
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}

#[tokio::test]
async fn every_route_answers_429_with_retry_after_over_the_tenant_rate() {
    let env = Env::new()
        .set("SECURENET_INGEST__HTTP__RATE_LIMIT_PER_SEC", "1")
        .set("SECURENET_INGEST__HTTP__RATE_LIMIT_BURST", "1");
    let acme = env.org_with_key("acme");
    let server = env.serve();
    for (name, url, media, body) in each_route(&server) {
        let send = |key: &str| {
            curl(&[
                &url,
                "-H",
                &bearer(key),
                "-H",
                &format!("Content-Type: {media}"),
                "-d",
                &body,
            ])
        };
        let first = send(DEFAULT_KEY);
        assert!(
            first.status / 100 == 2,
            "{name}: {} {}",
            first.status,
            first.body
        );
        let second = send(DEFAULT_KEY);
        assert_eq!(second.status, 429, "{name}: {}", second.body);
        let retry: u64 = second.headers["retry-after"].parse().unwrap();
        assert!((1..=2).contains(&retry), "{name}: Retry-After {retry}");
        // Another tenant has its own allowance.
        let other = send(&acme);
        assert!(
            other.status / 100 == 2,
            "{name}: {} {}",
            other.status,
            other.body
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 5);
    assert_eq!(count(&server, &acme, "logs").await, 5);
}
