//! GELF: UDP (chunked, zlib and gzip), TCP (NUL-delimited) and HTTP
//! (`POST /gelf`), driven by pygelf — the GELF handler Python applications
//! log through — and by hand-made datagrams for what senders get wrong.

use std::io::Write;
use std::net::UdpSocket;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{DEFAULT_KEY, Env, count, curl, forwarder_client, metric, rows, wait_count};

fn listeners(extra: &str) -> String {
    format!(
        r#"[{{name="gelf-udp",protocol="udp",format="gelf",listen="127.0.0.1:0"{extra}}},{{name="gelf-tcp",protocol="tcp",format="gelf",listen="127.0.0.1:0"{extra}}}]"#
    )
}

#[tokio::test]
async fn pygelf_over_udp_tcp_and_http_lands_in_the_keys_organization() {
    // No default tenant: a message is stored only for the key it carries.
    let env = Env::new().set("SECURENET_INGEST__SYSLOG", &listeners(""));
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let http = server.base.trim_start_matches("http://").to_string();
    let mut sizes = Vec::new();
    for (kind, target) in [
        ("gelf-udp", server.syslog_addr("gelf-udp").to_string()),
        ("gelf-tcp", server.syslog_addr("gelf-tcp").to_string()),
        ("gelf-http", http),
    ] {
        let report = forwarder_client(kind, &target, &acme, "g1", 6);
        sizes.push((kind, report["results"].clone()));
    }
    assert_eq!(wait_count(&server, &acme, "logs", 18).await, 18);
    let got = rows(
        &server,
        &acme,
        "SELECT input, message, app, severity, host, structured_data FROM logs ORDER BY input, message",
    )
    .await;
    for (kind, sizes) in &sizes {
        let input = kind.replace('-', "_");
        let mine: Vec<&Value> = got.iter().filter(|r| r["input"] == input).collect();
        assert_eq!(mine.len(), 6, "{input}: {got:?}");
        for (i, size) in sizes.as_array().unwrap().iter().enumerate() {
            let prefix = format!("{kind} message {i} of g1");
            let row = mine
                .iter()
                .find(|r| r["message"].as_str().unwrap().starts_with(&prefix))
                .unwrap_or_else(|| panic!("{prefix}: {mine:?}"));
            // Whole, also the large random ones (chunked over UDP).
            assert_eq!(
                row["message"].as_str().unwrap().len() as u64,
                size.as_u64().unwrap()
            );
            assert_eq!(row["app"], "billing");
            assert_eq!(row["severity"], if i % 3 == 0 { 3 } else { 6 });
            let sd: Value = serde_json::from_str(row["structured_data"].as_str().unwrap()).unwrap();
            assert_eq!(sd["run"], "g1", "{sd}");
            assert!(
                sd.get("securenet_key").is_none(),
                "the key is not stored: {sd}"
            );
        }
    }
    assert!(got.iter().all(|r| !r.to_string().contains(&acme)));
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(data).unwrap();
    z.finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

fn chunk(id: u8, seq: u8, count: u8, data: &[u8]) -> Vec<u8> {
    let mut c = vec![0x1e, 0x0f, id, 7, 7, 7, 7, 7, 7, 7, seq, count];
    c.extend_from_slice(data);
    c
}

#[tokio::test]
async fn udp_senders_mistakes_are_counted_and_never_poison_the_rest() {
    let env = Env::new().set(
        "SECURENET_INGEST__SYSLOG",
        &listeners(r#",default_tenant="default",max_frame_bytes=4096"#),
    );
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let addr = server.syslog_addr("gelf-udp");
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |d: &[u8]| {
        socket.send_to(d, addr).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    };
    // Docker's GELF driver: gzip, unchunked.
    let docker = json!({"version": "1.1", "host": "node-1", "short_message": "docker says hi",
        "timestamp": 1795687200.5, "level": 6, "_container_name": "web", "_image_name": "nginx"});
    send(&gzip(docker.to_string().as_bytes()));
    // Chunked zlib, chunks out of order, carrying acme's key.
    let keyed =
        json!({"short_message": "chunked", "host": "h", "_securenet_key": acme}).to_string();
    let packed = zlib(keyed.as_bytes());
    let (a, b) = packed.split_at(packed.len() / 2);
    send(&chunk(1, 1, 2, b));
    send(&chunk(1, 0, 2, a));
    // Not GELF at all: kept, flagged.
    send(b"this is not json");
    // Another organization's key that does not exist: refused, not routed
    // to the listener's default organization.
    send(
        json!({"short_message": "forged", "_securenet_key": "sn_not_a_key"})
            .to_string()
            .as_bytes(),
    );
    // A chunk header that lies, and a message larger than max_frame_bytes.
    send(&chunk(2, 5, 2, b"x"));
    send(&chunk(3, 0, 2, &[b'a'; 3000]));
    send(&chunk(3, 1, 2, &[b'b'; 3000]));
    // A message whose second chunk never comes.
    send(&chunk(4, 0, 2, b"{\"short_message\":"));
    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", 2).await, 2);
    assert_eq!(wait_count(&server, &acme, "logs", 1).await, 1);
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, host, app, severity, parse_status, CAST(ts AS BIGINT) AS ts_ms FROM logs ORDER BY message",
    )
    .await;
    assert_eq!(
        got,
        vec![
            json!({"message": "docker says hi", "host": "node-1", "app": "web", "severity": 6,
                   "parse_status": "ok", "ts_ms": 1_795_687_200_500i64}),
            json!({"message": "this is not json", "host": null, "app": null, "severity": null,
                   "parse_status": "error", "ts_ms": got[1]["ts_ms"]}),
        ]
    );
    let rejected = |reason: &str| {
        format!("securenet_syslog_rejected_total{{listener=\"gelf-udp\",reason=\"{reason}\"}}")
    };
    assert_eq!(metric(&server, &rejected("bad_key")).await, 1.0);
    assert_eq!(metric(&server, &rejected("gelf_bad_chunk")).await, 1.0);
    assert_eq!(metric(&server, &rejected("gelf_too_large")).await, 1.0);
    // Incomplete messages expire after 5 s (checked as datagrams arrive).
    std::thread::sleep(Duration::from_millis(5_200));
    send(json!({"short_message": "later"}).to_string().as_bytes());
    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", 3).await, 3);
    assert_eq!(metric(&server, &rejected("gelf_incomplete")).await, 1.0);
}

#[tokio::test]
async fn gelf_over_http_names_its_refusals() {
    let env = Env::new();
    let acme = env.org_with_key("acme");
    let server = env.serve();
    let url = server.url("/gelf");
    let post = |headers: &[&str], body: &str| {
        let mut args = vec![url.as_str(), "--data-binary", body];
        for h in headers {
            args.extend(["-H", h]);
        }
        curl(&args)
    };
    let bearer = format!("Authorization: Bearer {acme}");
    let one = json!({"version": "1.1", "host": "a", "short_message": "one"}).to_string();
    let r = post(&[&bearer], &one);
    assert_eq!((r.status, r.body.as_str()), (202, ""));
    // Bulk: one per line; a bad message is named, the others stored.
    let bulk = format!(
        "{one}\n{}\n{}\n",
        json!({"host": "b"}),
        json!({"short_message": "three", "_securenet_key": DEFAULT_KEY})
    );
    let r = post(&[&bearer], &bulk);
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("message 1: short_message is missing")
            && r.body.contains("message 2: carries another API key"),
        "{}",
        r.body
    );
    assert_eq!(count(&server, &acme, "logs").await, 2);
    // Without a header, the key in the message; without either, 401.
    let keyed = json!({"short_message": "keyed", "_securenet_key": acme}).to_string();
    assert_eq!(post(&[], &keyed).status, 202);
    assert_eq!(post(&[], &one).status, 401);
    assert_eq!(
        post(
            &[],
            &json!({"short_message": "x", "_securenet_key": "nope"}).to_string()
        )
        .status,
        401
    );
    let r = post(&[&bearer], "{\"short_message\": ");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not a GELF JSON object"), "{}", r.body);
    assert_eq!(count(&server, &acme, "logs").await, 3);
    assert_eq!(count(&server, DEFAULT_KEY, "logs").await, 0);
}
