//! Fluent forward protocol on a `format = "fluent"` listener, driven by the
//! clients applications use: fluent-logger from PyPI (Message mode) and
//! @fluent-org/logger from npm (every event mode, acknowledgements, the
//! shared-key handshake; scripts/fluent-client), plus hand-made streams for
//! what a hostile or broken sender does.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, count, forwarder_client, metric, rows, wait_count};

/// The Node.js client (scripts/test.sh installs it with `npm ci` and sets
/// SECURENET_TEST_FLUENT_CLIENT to its client.mjs).
fn node_client(port: u16, key: &str, run: &str, n: usize, shared: Option<&str>) -> Value {
    let script = std::env::var("SECURENET_TEST_FLUENT_CLIENT").expect(
        "SECURENET_TEST_FLUENT_CLIENT is unset: run ./scripts/test.sh, which installs scripts/fluent-client",
    );
    let mut args = vec![
        script,
        "127.0.0.1".into(),
        port.to_string(),
        key.into(),
        run.into(),
        n.to_string(),
    ];
    args.extend(shared.map(str::to_string));
    let out = std::process::Command::new("node")
        .args(&args)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "fluent client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn listener(extra: &str) -> String {
    format!(
        r#"[{{name="fluent",protocol="tcp",format="fluent",listen="127.0.0.1:0",max_frame_bytes=1048576{extra}}}]"#
    )
}

#[tokio::test]
async fn every_event_mode_is_acknowledged_once_stored() {
    let env = Env::new().set("SECURENET_INGEST__SYSLOG", &listener(""));
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let port = server.syslog_port("fluent");
    let report = node_client(port, &acme, "f1", 5, None);
    let modes = [
        "Message",
        "Forward",
        "PackedForward",
        "CompressedPackedForward",
    ];
    for mode in modes {
        assert_eq!(report[mode], "acked", "{report}");
    }
    // Acknowledged means stored: no waiting needed.
    assert_eq!(count(&server, &acme, "logs").await, 20);
    let py = forwarder_client("fluent", &format!("127.0.0.1:{port}"), &acme, "f1", 3);
    assert_eq!(py["results"], json!([true, true, true]), "{py}");
    assert_eq!(wait_count(&server, &acme, "logs", 23).await, 23);
    let got = rows(
        &server,
        &acme,
        "SELECT message, app, host, severity, input, CAST(ts AS BIGINT) AS ts_ms, structured_data \
         FROM logs ORDER BY message",
    )
    .await;
    let row = |prefix: &str| {
        got.iter()
            .find(|r| r["message"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {got:?}"))
            .clone()
    };
    let packed = row("CompressedPackedForward event 3 of f1");
    assert_eq!(
        (
            &packed["app"],
            &packed["severity"],
            &packed["input"],
            &packed["ts_ms"]
        ),
        (
            &json!("app.compressedpackedforward"),
            &json!(4),
            &json!("fluent_tcp"),
            &json!(1_795_687_203_125i64)
        ),
        "{packed}"
    );
    let sd: Value = serde_json::from_str(packed["structured_data"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&sd["fluent_tag"], &sd["run"], &sd["i"]),
        (
            &json!("app.compressedpackedforward"),
            &json!("f1"),
            &json!(3)
        )
    );
    assert!(sd.get("securenet_key").is_none(), "{sd}");
    let py = row("fluent-logger event 2 of f1");
    assert_eq!(
        (&py["app"], &py["host"], &py["ts_ms"]),
        (
            &json!("py.checkout"),
            &json!("py-1"),
            &json!(1_795_687_302_500i64)
        )
    );
    assert!(got.iter().all(|r| !r.to_string().contains(&acme)));
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}

#[tokio::test]
async fn the_shared_key_handshake_admits_only_senders_that_know_it() {
    let env = Env::new().set(
        "SECURENET_INGEST__SYSLOG",
        &listener(r#",fluent_shared_key="handshake-secret""#),
    );
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let port = server.syslog_port("fluent");
    let report = node_client(port, &acme, "f2", 2, Some("handshake-secret"));
    assert_eq!(report["Forward"], "acked", "{report}");
    assert_eq!(count(&server, &acme, "logs").await, 8);
    let wrong = node_client(port, &acme, "f3", 2, Some("guessed"));
    assert_ne!(wrong["Forward"], "acked", "{wrong}");
    assert_eq!(count(&server, &acme, "logs").await, 8);
    assert!(
        metric(
            &server,
            "securenet_syslog_rejected_total{listener=\"fluent\",reason=\"fluent_bad_shared_key\"}"
        )
        .await
            >= 1.0
    );
}

/// A MessagePack forward message `[tag, time, record, {"chunk": id}]`, by hand.
fn message(tag: &str, secs: u32, record: &[(&str, &str)], chunk: &str) -> Vec<u8> {
    let mut out = vec![0x94];
    let str8 = |out: &mut Vec<u8>, s: &str| {
        out.extend([0xd9, s.len() as u8]);
        out.extend(s.as_bytes());
    };
    str8(&mut out, tag);
    out.push(0xce);
    out.extend(secs.to_be_bytes());
    out.push(0x80 | record.len() as u8);
    for (k, v) in record {
        str8(&mut out, k);
        str8(&mut out, v);
    }
    out.push(0x81);
    str8(&mut out, "chunk");
    str8(&mut out, chunk);
    out
}

#[tokio::test]
async fn broken_and_hostile_streams_cost_only_their_own_connection() {
    let env = Env::new().set(
        "SECURENET_INGEST__SYSLOG",
        &listener(r#",default_tenant="default""#)
            .replace("max_frame_bytes=1048576", "max_frame_bytes=4096"),
    );
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let addr = server.syslog_addr("fluent");
    let connect = || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let read_ack = |s: &mut TcpStream| {
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        buf[..n].to_vec()
    };
    // A good message, an unknown key (refused, not sent to the default
    // organization, and the chunk is still acknowledged: resending cannot
    // fix it) and a record of acme's, on one connection.
    let mut s = connect();
    s.write_all(&message(
        "ok",
        1_795_687_200,
        &[("log", "to default")],
        "c1",
    ))
    .unwrap();
    assert!(read_ack(&mut s).ends_with(b"c1"));
    s.write_all(&message(
        "ok",
        1_795_687_200,
        &[("log", "forged"), ("securenet_key", "sn_nope")],
        "c2",
    ))
    .unwrap();
    assert!(read_ack(&mut s).ends_with(b"c2"));
    s.write_all(&message(
        "ok",
        1_795_687_200,
        &[("log", "acme's"), ("securenet_key", &acme)],
        "c3",
    ))
    .unwrap();
    assert!(read_ack(&mut s).ends_with(b"c3"));
    // Not MessagePack: that connection is closed, nothing else happens.
    let mut bad = connect();
    bad.write_all(&[0xc1, 0, 0]).unwrap();
    assert_eq!(read_ack(&mut bad), b"");
    // A message over max_frame_bytes: closed before it is all buffered.
    let mut big = connect();
    let huge = message("big", 1, &[("log", &"x".repeat(200))], "c9");
    let mut payload = Vec::new();
    for _ in 0..40 {
        payload.extend_from_slice(&huge);
    }
    // One array claiming 40 elements' worth beyond the limit: 0xdc array16.
    let mut claim = vec![0xdc, 0x00, 0x28];
    claim.extend_from_slice(&payload);
    let _ = big.write_all(&claim);
    assert_eq!(read_ack(&mut big), b"");
    // The first connection still works.
    s.write_all(&message("ok", 1_795_687_201, &[("log", "after")], "c4"))
        .unwrap();
    assert!(read_ack(&mut s).ends_with(b"c4"));
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 2);
    assert_eq!(count(&server, &acme, "logs").await, 1);
    let rejected = |reason: &str| {
        format!("securenet_syslog_rejected_total{{listener=\"fluent\",reason=\"{reason}\"}}")
    };
    assert_eq!(metric(&server, &rejected("bad_key")).await, 1.0);
    assert_eq!(metric(&server, &rejected("fluent_malformed")).await, 1.0);
    assert_eq!(metric(&server, &rejected("fluent_too_large")).await, 1.0);
}
