//! OpenTelemetry logs (OTLP/HTTP at `/v1/logs`, OTLP/gRPC on
//! `ingest.otlp.grpc_listen`) and Loki's protobuf push, driven by the
//! clients forwarders ship: the OpenTelemetry Python SDK with its OTLP
//! exporters, and Loki's `push.proto` built and snappy-compressed by the
//! protobuf and python-snappy libraries (scripts/forwarder_clients.py).
//! Each test reads the stored rows back through SQL.

use serde_json::{Value, json};

use crate::support::{
    DEFAULT_KEY, Env, Server, count, curl, forwarder_client as client, metric, rows,
};

fn otlp_server(env: &Env) -> (Server, String, String) {
    let server = env.serve();
    let http = server.url("/v1/logs");
    let grpc = format!("http://{}", server.listener("otlp_grpc"));
    (server, http, grpc)
}

fn sd(row: &Value) -> Value {
    serde_json::from_str(row["structured_data"].as_str().unwrap_or("null")).unwrap()
}

#[tokio::test]
async fn the_opentelemetry_sdk_exports_over_http_and_grpc_with_every_field() {
    let env = Env::new().set("SECURENET_INGEST__OTLP__GRPC_LISTEN", "127.0.0.1:0");
    let (server, http, grpc) = otlp_server(&env);
    for (kind, target) in [("otlp-http", &http), ("otlp-grpc", &grpc)] {
        let report = client(kind, target, DEFAULT_KEY, "r1", 8);
        assert_eq!(
            report["results"],
            json!(vec!["SUCCESS"; 8]),
            "{kind}: {report}"
        );
    }
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, host, app, pid, severity, msg_id, source_ip, input, bytes, \
         CAST(ts AS BIGINT) AS ts_ms, structured_data FROM logs ORDER BY message",
    )
    .await;
    assert_eq!(got.len(), 16, "{got:?}");
    let first = got
        .iter()
        .find(|r| r["message"] == "otlp-http record 0 of r1")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(
        (
            &first["host"],
            &first["app"],
            &first["pid"],
            &first["severity"],
            &first["msg_id"],
            &first["source_ip"],
            &first["input"],
            &first["ts_ms"]
        ),
        (
            &json!("web-7"),
            &json!("checkout"),
            &json!("4242"),
            &json!(6),
            &json!("checkout.step"),
            &json!("203.0.113.7"),
            &json!("otlp"),
            &json!(1_795_687_200_000i64)
        ),
        "{first}"
    );
    assert!(first["bytes"].as_u64().unwrap() > 20, "{first}");
    let fields = sd(first);
    assert_eq!(fields["attributes"]["attempt"], 0, "{fields}");
    assert_eq!(fields["attributes"]["ok"], true, "{fields}");
    assert_eq!(fields["resource"]["run"], "r1", "{fields}");
    assert_eq!(fields["scope"]["name"], "securenet.test", "{fields}");
    assert_eq!(fields["scope"]["version"], "1.2.3", "{fields}");
    assert_eq!(fields["severity_text"], "INFO", "{fields}");
    // Severities by number (WARN → 4, ERROR → 3, DEBUG → 7) and map bodies
    // as JSON, over both transports alike.
    for prefix in ["otlp-http", "otlp-grpc"] {
        let sev = |n: usize| {
            got.iter()
                .find(|r| r["message"] == format!("{prefix} record {n} of r1"))
                .map(|r| r["severity"].clone())
                .unwrap_or_else(|| panic!("{prefix} {n}: {got:?}"))
        };
        assert_eq!((sev(1), sev(2)), (json!(4), json!(3)));
        let maps: Vec<Value> = got
            .iter()
            .filter(|r| r["message"].as_str().unwrap().starts_with('{'))
            .map(|r| serde_json::from_str(r["message"].as_str().unwrap()).unwrap())
            .collect();
        assert!(
            maps.contains(&json!({"event": "payment", "n": 3}))
                && maps.contains(&json!({"event": "payment", "n": 7})),
            "{maps:?}"
        );
    }
    for input in ["otlp_http", "otlp_grpc"] {
        let accepted = metric(
            &server,
            &format!("securenet_ingest_records_total{{input=\"{input}\",outcome=\"accepted\"}}"),
        )
        .await;
        assert_eq!(accepted, 8.0, "{input}");
    }
}

#[tokio::test]
async fn the_sdk_retries_when_the_organization_is_over_its_rate_and_loses_nothing() {
    let env = Env::new()
        .set("SECURENET_INGEST__OTLP__GRPC_LISTEN", "127.0.0.1:0")
        .set("SECURENET_INGEST__HTTP__RATE_LIMIT_PER_SEC", "1")
        .set("SECURENET_INGEST__HTTP__RATE_LIMIT_BURST", "1");
    let (server, http, grpc) = otlp_server(&env);
    // One export per record, back to back: the second of each second is
    // over the limit (HTTP 429 + Retry-After; gRPC RESOURCE_EXHAUSTED +
    // RetryInfo) and the SDK retries it after the delay it was given.
    for (kind, target) in [("otlp-http", &http), ("otlp-grpc", &grpc)] {
        let report = client(kind, target, DEFAULT_KEY, "r2", 3);
        assert_eq!(
            report["results"],
            json!(vec!["SUCCESS"; 3]),
            "{kind}: {report}"
        );
        let retried = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w.as_str().unwrap().contains("retrying"))
            .count();
        assert!(retried >= 1, "{kind} was never refused: {report}");
        let seconds = report["seconds"].as_f64().unwrap();
        assert!(seconds < 20.0, "{kind}: {seconds}s");
    }
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 6);
}

/// The specification's OTLP/JSON example (opentelemetry-proto's
/// examples/logs.json), as a collector sends it.
const SPEC_EXAMPLE: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},"scopeLogs":[{"scope":{"name":"my.library","version":"1.0.0","attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},"logRecords":[{"timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000000","severityNumber":10,"severityText":"Information","traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","body":{"stringValue":"Example log record"},"attributes":[{"key":"string.attribute","value":{"stringValue":"some string"}},{"key":"boolean.attribute","value":{"boolValue":true}},{"key":"int.attribute","value":{"intValue":"10"}},{"key":"double.attribute","value":{"doubleValue":637.704}},{"key":"array.attribute","value":{"arrayValue":{"values":[{"stringValue":"many"},{"stringValue":"values"}]}}},{"key":"map.attribute","value":{"kvlistValue":{"values":[{"key":"some.map.key","value":{"stringValue":"some value"}}]}}}]}]}]}]}"#;

#[tokio::test]
async fn otlp_json_partial_success_and_every_kind_of_bad_request() {
    let env = Env::new().set("SECURENET_INGEST__HTTP__MAX_RECORD_BYTES", "64");
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let url = server.url("/v1/logs");
    let post = |key: &str, media: &str, body: &str| {
        curl(&[
            &url,
            "-H",
            &format!("Authorization: Bearer {key}"),
            "-H",
            &format!("Content-Type: {media}"),
            "--data-binary",
            body,
        ])
    };
    let r = post(&acme, "application/json", SPEC_EXAMPLE);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), json!({}), "no partial success: all stored");
    let got = rows(
        &server,
        &acme,
        "SELECT app, severity, message, structured_data FROM logs",
    )
    .await;
    assert_eq!(
        (&got[0]["app"], &got[0]["severity"], &got[0]["message"]),
        (
            &json!("my.service"),
            &json!(6),
            &json!("Example log record")
        )
    );
    assert_eq!(sd(&got[0])["trace_id"], "5b8efff798038103d269b633813fc60c");

    // Another organization's record and an oversized body are refused by
    // name; the valid record beside them is stored (partial success).
    let mixed = json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"body": {"stringValue": "kept"}},
        {"body": {"stringValue": "theirs"}, "attributes": [{"key": "tenant_id", "value": {"stringValue": "globex"}}]},
        {"body": {"stringValue": "x".repeat(65)}}
    ]}]}]});
    let r = post(&acme, "application/json", &mixed.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let partial = &r.json()["partialSuccess"];
    assert_eq!(partial["rejectedLogRecords"], "2", "{}", r.body);
    let why = partial["errorMessage"].as_str().unwrap();
    assert!(
        why.contains("record 1: attribute tenant_id \"globex\"")
            && why.contains("record 2: body is 65 bytes"),
        "{why}"
    );
    assert_eq!(count(&server, &acme, "logs").await, 2);
    assert_eq!(
        count(&server, &acme, "logs WHERE message = 'kept'").await,
        1
    );

    // Whole-request refusals: a google.rpc.Status in the request's encoding.
    let r = post(&acme, "application/json", "{\"resourceLogs\": 3}");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["code"], 3, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("OTLP/JSON"));
    let r = post(&acme, "application/x-protobuf", "\u{ff}\u{ff}garbage");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/x-protobuf");
    let r = post(&acme, "text/plain", "hello");
    assert_eq!(r.status, 415, "{}", r.body);
    let r = post("not-a-key", "application/json", SPEC_EXAMPLE);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["code"], 16, "{}", r.body);
    let r = curl(&[
        &url,
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        SPEC_EXAMPLE,
    ]);
    assert_eq!(r.status, 401, "{}", r.body);
    // Nothing of the refused requests was stored, and the default
    // organization received nothing at all.
    assert_eq!(count(&server, &acme, "logs").await, 2);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}

/// Messages no SDK sends, through grpcio's generic stub: refused with
/// INVALID_ARGUMENT naming why (OTLP's code for a request that will stay
/// invalid), another organization's record refused by name beside a
/// stored one, and nothing of the refused requests stored.
#[tokio::test]
async fn otlp_grpc_refuses_bad_messages_and_names_refused_records() {
    let env = Env::new().set("SECURENET_INGEST__OTLP__GRPC_LISTEN", "127.0.0.1:0");
    let (server, _, grpc) = otlp_server(&env);
    let send =
        |case: &str, key: &str| client("grpc-raw", &grpc, key, case, 1)["results"][0].clone();
    for (case, why) in [
        ("garbage", "OTLP protobuf"),
        ("not-utf8", "UTF-8"),
        ("deep", "recursion limit"),
    ] {
        let answer = send(case, DEFAULT_KEY);
        assert_eq!(answer["code"], "INVALID_ARGUMENT", "{case}: {answer}");
        assert!(
            answer["details"].as_str().unwrap().contains(why),
            "{case}: {answer}"
        );
    }
    let answer = send("mixed", "not-a-key");
    assert_eq!(answer["code"], "UNAUTHENTICATED", "{answer}");
    let answer = send("mixed", DEFAULT_KEY);
    assert_eq!(
        (&answer["code"], &answer["rejected"]),
        (&json!("OK"), &json!(1)),
        "{answer}"
    );
    assert!(
        answer["error_message"]
            .as_str()
            .unwrap()
            .contains("record 1: attribute tenant_id \"globex\""),
        "{answer}"
    );
    let got = rows(&server, DEFAULT_KEY, "SELECT message, input FROM logs").await;
    assert_eq!(
        got,
        vec![json!({"message": "grpc-raw kept", "input": "otlp"})],
        "only the valid record of the valid request"
    );
}

#[tokio::test]
async fn loki_protobuf_pushes_built_from_push_proto_are_stored() {
    let env = Env::new();
    let server = env.serve();
    let report = client(
        "loki-protobuf",
        &server.url("/loki/api/v1/push"),
        DEFAULT_KEY,
        "p1",
        4,
    );
    assert_eq!(report["results"], json!([204, 204, 204, 204]), "{report}");
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, host, app, severity, input, CAST(ts AS BIGINT) AS ts_ms, structured_data \
         FROM logs ORDER BY ts",
    )
    .await;
    assert_eq!(got.len(), 4);
    assert_eq!(
        (
            &got[1]["message"],
            &got[1]["host"],
            &got[1]["app"],
            &got[1]["severity"],
            &got[1]["input"],
            &got[1]["ts_ms"]
        ),
        (
            &json!("level=warn msg=\"disk \\\"sda\\\" 1\" run=p1"),
            &json!("loki-1"),
            &json!("varlogs"),
            &json!(4),
            &json!("loki"),
            &json!(1_795_687_201_250i64)
        )
    );
    let fields = sd(&got[1]);
    assert_eq!(
        (&fields["run"], &fields["trace_id"]),
        (&json!("p1"), &json!("t-1"))
    );
}
