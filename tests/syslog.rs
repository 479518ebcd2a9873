//! Syslog through real clients: util-linux `logger`, syslog-ng's `loggen`,
//! `openssl s_client` for TLS, and raw sockets for what clients never send.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};

use serde_json::Value;

use std::path::PathBuf;

use crate::support::{
    DEFAULT_KEY, Env, TestCa, forwarder_client_with, metric, metric_sum, rows, run, wait_count,
};

fn logger(port: u16, args: &[&str], message: &str) {
    let port = port.to_string();
    let mut all = vec!["-n", "127.0.0.1", "-P", port.as_str()];
    all.extend_from_slice(args);
    all.push(message);
    run("logger", &all);
}

#[tokio::test]
async fn logger_over_udp_and_tcp_in_both_formats_and_framings() {
    let env = Env::new();
    let server = env.serve();
    let (tcp, udp) = (server.syslog_port("tcp"), server.syslog_port("udp"));
    let cases: [(&str, u16, &[&str]); 6] = [
        ("tcp-5424", tcp, &["-T", "--rfc5424"]),
        ("tcp-3164", tcp, &["-T", "--rfc3164"]),
        ("tcp-5424-octet", tcp, &["-T", "--rfc5424", "--octet-count"]),
        ("tcp-3164-octet", tcp, &["-T", "--rfc3164", "--octet-count"]),
        ("udp-5424", udp, &["-d", "--rfc5424"]),
        ("udp-3164", udp, &["-d", "--rfc3164"]),
    ];
    for (name, port, flags) in cases {
        let mut args = flags.to_vec();
        args.extend(["-p", "local3.warning", "-t", "e2e-app", "--id=4242"]);
        logger(port, &args, &format!("hello from {name}"));
    }
    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", 6).await, 6);
    let got = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message, app, pid, facility, severity, input, parse_status, host FROM logs ORDER BY message",
    )
    .await;
    let mut names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    names.sort();
    assert_eq!(got.len(), names.len());
    for (row, name) in got.iter().zip(names) {
        assert_eq!(row["message"], format!("hello from {name}"), "{row}");
        assert_eq!(row["app"], "e2e-app", "{row}");
        assert_eq!(row["pid"], "4242", "{row}");
        assert_eq!(
            (row["facility"].as_u64(), row["severity"].as_u64()),
            (Some(19), Some(4)),
            "{row}"
        );
        assert_eq!(row["parse_status"], "ok", "{row}");
        let input = if name.starts_with("tcp") {
            "syslog_tcp"
        } else {
            "syslog_udp"
        };
        assert_eq!(row["input"], input, "{row}");
        assert!(row["host"].is_string(), "{row}");
    }
}

/// loggen's own count of what it sent.
fn loggen_count(out: &std::process::Output) -> u64 {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .rev()
        .find_map(|l| l.split("count=").nth(1))
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no count in loggen output: {text}"))
}

#[tokio::test]
async fn loggen_rfc5424_framed_over_several_connections_loses_nothing() {
    let env = Env::new();
    let server = env.serve();
    let port = server.syslog_port("tcp").to_string();
    let out = run(
        "loggen",
        &[
            "-S",
            "-P",
            "-s",
            "300",
            "-n",
            "2500",
            "-r",
            "1000000",
            "--active-connections",
            "4",
            "127.0.0.1",
            &port,
        ],
    );
    let sent = loggen_count(&out);
    assert!(sent >= 2500, "loggen sent {sent}");
    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", sent).await, sent);
    let statuses = rows(
        &server,
        DEFAULT_KEY,
        "SELECT parse_status, count(*) AS n FROM logs GROUP BY parse_status",
    )
    .await;
    assert_eq!(
        statuses,
        [serde_json::json!({"parse_status": "ok", "n": sent})]
    );
    let sizes = rows(
        &server,
        DEFAULT_KEY,
        "SELECT min(bytes) AS lo, max(bytes) AS hi FROM logs",
    )
    .await;
    assert!(sizes[0]["lo"].as_u64().unwrap() >= 250, "{sizes:?}");
}

#[tokio::test]
async fn tls_listener_accepts_loggen_and_openssl_clients() {
    let env = Env::new();
    let dir = env.path().to_path_buf();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let listeners = format!(
        r#"[{{name="tls",protocol="tls",listen="127.0.0.1:0",default_tenant="default",tls={{cert_path="{}",key_path="{}"}}}}]"#,
        cert.display(),
        key.display()
    );
    let env = env.set("SECURENET_INGEST__SYSLOG", &listeners);
    let server = env.serve();
    let port = server.syslog_port("tls").to_string();
    let out = run(
        "loggen",
        &[
            "-U",
            "-P",
            "-s",
            "200",
            "-n",
            "300",
            "-r",
            "100000",
            "127.0.0.1",
            &port,
        ],
    );
    let sent = loggen_count(&out);
    // openssl s_client: a plain TLS client writing newline-framed RFC 3164.
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"<13>Nov 26 10:00:00 tls-host app[1]: over tls\n")
        .unwrap();
    let _ = child.wait();
    assert_eq!(
        wait_count(&server, DEFAULT_KEY, "logs", sent + 1).await,
        sent + 1
    );
    let r = rows(
        &server,
        DEFAULT_KEY,
        "SELECT host, input FROM logs WHERE message = 'over tls'",
    )
    .await;
    assert_eq!(
        r,
        [serde_json::json!({"host": "tls-host", "input": "syslog_tls"})]
    );
}

#[tokio::test]
async fn broken_invalid_utf8_and_over_long_messages_are_kept_and_counted() {
    let env = Env::new().set(
        "SECURENET_INGEST__SYSLOG",
        r#"[{name="tcp",protocol="tcp",listen="127.0.0.1:0",default_tenant="default",max_frame_bytes=256},{name="udp",protocol="udp",listen="127.0.0.1:0",default_tenant="default",max_frame_bytes=256}]"#,
    );
    let server = env.serve();
    let tcp = server.syslog_port("tcp");
    let mut s = TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    let long = format!("<13>Nov 26 10:00:00 h app: {}", "x".repeat(1000));
    s.write_all(b"<999>not a priority\n").unwrap();
    s.write_all(b"<13>Nov 26 10:00:00 h app: caf\xe9 au lait\n")
        .unwrap();
    s.write_all(format!("{long}\n").as_bytes()).unwrap();
    s.write_all(format!("{} {long}", long.len()).as_bytes())
        .unwrap(); // octet-counted, too long
    s.write_all(b"<13>Nov 26 10:00:00 h app: fine\n").unwrap();
    drop(s);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(long.as_bytes(), ("127.0.0.1", server.syslog_port("udp")))
        .unwrap();

    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", 6).await, 6);
    let r = rows(
        &server,
        DEFAULT_KEY,
        "SELECT parse_status, count(*) AS n, max(length(message)) AS longest, min(octet_length(encode(raw, 'hex')) / 2) AS raw_min \
         FROM logs GROUP BY parse_status ORDER BY parse_status",
    )
    .await;
    let by: std::collections::BTreeMap<String, Value> = r
        .into_iter()
        .map(|row| (row["parse_status"].as_str().unwrap().to_string(), row))
        .collect();
    assert_eq!(by["error"]["n"], 1);
    assert_eq!(
        by["error"]["raw_min"], 19,
        "raw bytes kept: {:?}",
        by["error"]
    );
    assert_eq!(by["invalid_utf8"]["n"], 1);
    assert_eq!(
        by["truncated"]["n"], 3,
        "tcp newline, tcp octet-counted and udp: {by:?}"
    );
    assert!(by["truncated"]["longest"].as_u64().unwrap() <= 256);
    assert_eq!(by["ok"]["n"], 1);
    let lossy = rows(
        &server,
        DEFAULT_KEY,
        "SELECT message FROM logs WHERE parse_status = 'invalid_utf8'",
    )
    .await;
    assert_eq!(lossy[0]["message"], "caf\u{fffd} au lait");
    assert_eq!(
        metric(
            &server,
            "securenet_syslog_messages_total{listener=\"tcp\",status=\"truncated\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &server,
            "securenet_syslog_messages_total{listener=\"tcp\",status=\"error\"}"
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn tenants_by_key_by_source_or_default_and_unknown_senders_rejected() {
    let env = Env::new();
    let acme = env.org_with_key("acme");
    env.org_with_key("globex");
    let env = env.set(
        "SECURENET_INGEST__SYSLOG",
        r#"[{name="keyed",protocol="tcp",listen="127.0.0.1:0"},{name="mapped",protocol="udp",listen="127.0.0.1:0",sources=[{cidr="10.0.0.0/8",tenant="acme"},{cidr="127.0.0.0/8",tenant="globex"}]}]"#,
    );
    let server = env.serve();
    let keyed = server.syslog_port("keyed");
    logger(
        keyed,
        &[
            "-T",
            "--rfc5424",
            "--sd-id",
            "securenet@32473",
            "--sd-param",
            &format!("key=\"{acme}\""),
            "-t",
            "k",
        ],
        "with acme key",
    );
    logger(keyed, &["-T", "--rfc5424", "-t", "k"], "no key, no default");
    logger(
        keyed,
        &[
            "-T",
            "--rfc5424",
            "--sd-id",
            "securenet@32473",
            "--sd-param",
            "key=\"sn_0000000000000000_forged\"",
            "-t",
            "k",
        ],
        "forged key",
    );
    logger(
        server.syslog_port("mapped"),
        &["-d", "--rfc3164", "-t", "m"],
        "from loopback",
    );

    assert_eq!(wait_count(&server, &acme, "logs", 1).await, 1);
    let r = rows(&server, &acme, "SELECT message, structured_data FROM logs").await;
    assert_eq!(r[0]["message"], "with acme key");
    assert!(
        !r[0]["structured_data"].to_string().contains(&acme),
        "the key is never stored: {}",
        r[0]
    );
    let globex = env
        .cli(&["keys", "create", "--org", "globex"])
        .trim()
        .to_string();
    assert_eq!(wait_count(&server, &globex, "logs", 1).await, 1);
    assert_eq!(
        rows(&server, &globex, "SELECT message FROM logs").await[0]["message"],
        "from loopback"
    );
    assert_eq!(
        metric(
            &server,
            "securenet_syslog_rejected_total{listener=\"keyed\",reason=\"unknown_sender\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            "securenet_syslog_rejected_total{listener=\"keyed\",reason=\"bad_key\"}"
        )
        .await,
        1.0
    );
    assert_eq!(crate::support::count(&server, DEFAULT_KEY, "logs").await, 0);
}

#[tokio::test]
async fn a_full_pipeline_pauses_tcp_reads_instead_of_dropping() {
    // A budget of a few messages: TCP readers must wait for every flush.
    let env = Env::new()
        .set("SECURENET_INGEST__BATCH__MAX_IN_FLIGHT_BYTES", "8192")
        .set("SECURENET_INGEST__HTTP__MAX_BODY_BYTES", "8192")
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "5");
    let server = env.serve();
    let port = server.syslog_port("tcp").to_string();
    let out = run(
        "loggen",
        &[
            "-S",
            "-P",
            "-s",
            "300",
            "-n",
            "1500",
            "-r",
            "1000000",
            "127.0.0.1",
            &port,
        ],
    );
    let sent = loggen_count(&out);
    assert_eq!(wait_count(&server, DEFAULT_KEY, "logs", sent).await, sent);
    // ~27 messages fit in the budget: the reader had to stop and wait.
    let pauses = metric_sum(&server, "securenet_ingest_backpressure_pauses_total").await;
    assert!(pauses >= 2.0, "{pauses} pauses for {sent} messages");
    assert_eq!(
        metric_sum(&server, "securenet_syslog_udp_dropped_total").await,
        0.0
    );
}

#[tokio::test]
async fn udp_overflow_is_counted_and_everything_accepted_is_stored() {
    // The first datagrams take the whole budget and hold it for the linger.
    let env = Env::new()
        .set("SECURENET_INGEST__BATCH__MAX_IN_FLIGHT_BYTES", "8192")
        .set("SECURENET_INGEST__HTTP__MAX_BODY_BYTES", "8192")
        .set("SECURENET_INGEST__BATCH__LINGER_MS", "3000");
    let server = env.serve();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let msg = format!("<13>Nov 26 10:00:00 h flood: {}", "u".repeat(250));
    for _ in 0..500 {
        udp.send_to(msg.as_bytes(), ("127.0.0.1", server.syslog_port("udp")))
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let accepted = metric(
        &server,
        "securenet_ingest_records_total{input=\"syslog_udp\",outcome=\"accepted\"}",
    )
    .await;
    let dropped = metric(
        &server,
        "securenet_syslog_udp_dropped_total{listener=\"udp\"}",
    )
    .await;
    assert!(dropped > 0.0, "the flood should overflow an 8 KiB budget");
    assert!(accepted > 0.0);
    let read = metric(
        &server,
        "securenet_syslog_messages_total{listener=\"udp\",status=\"ok\"}",
    )
    .await;
    assert_eq!(
        read,
        accepted + dropped,
        "every datagram read is either accepted or counted as dropped"
    );
    assert_eq!(
        wait_count(&server, DEFAULT_KEY, "logs", accepted as u64).await as f64,
        accepted
    );
}

/// The real-world corpus (`tests/data/syslog/corpus.jsonl`: Linux daemons,
/// Cisco, Juniper, Fortinet, Palo Alto, pfSense, Windows forwarders,
/// journald, Docker…) through every listener kind: each frame is stored
/// with the fields it should have.
#[tokio::test]
async fn the_real_world_corpus_parses_the_same_over_udp_tcp_and_tls() {
    use std::time::Duration;
    let corpus: Vec<Value> = include_str!("data/syslog/corpus.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let env = Env::new();
    let dir = env.path().to_path_buf();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let listeners = format!(
        r#"[{{name="udp",protocol="udp",listen="127.0.0.1:0",default_tenant="default"}},{{name="tcp",protocol="tcp",listen="127.0.0.1:0",default_tenant="default"}},{{name="tls",protocol="tls",listen="127.0.0.1:0",default_tenant="default",tls={{cert_path="{}",key_path="{}"}}}}]"#,
        cert.display(),
        key.display()
    );
    let env = env.set("SECURENET_INGEST__SYSLOG", &listeners);
    let server = env.serve();
    let frames: Vec<&str> = corpus
        .iter()
        .map(|c| c["frame"].as_str().unwrap())
        .collect();
    // Octet counting on the streams: some frames hold CR LF.
    let counted: Vec<u8> = frames
        .iter()
        .flat_map(|f| format!("{} {f}", f.len()).into_bytes())
        .collect();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for f in &frames {
        udp.send_to(f.as_bytes(), ("127.0.0.1", server.syslog_port("udp")))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", server.syslog_port("tcp"))).unwrap();
    tcp.write_all(&counted).unwrap();
    drop(tcp);
    let mut tls = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-no_ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{}", server.syslog_port("tls")))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    tls.stdin.take().unwrap().write_all(&counted).unwrap();
    let _ = tls.wait();
    for input in ["syslog_udp", "syslog_tcp", "syslog_tls"] {
        let n = corpus.len() as u64;
        let where_ = format!("logs WHERE input = '{input}'");
        assert_eq!(
            wait_count(&server, DEFAULT_KEY, &where_, n).await,
            n,
            "{input}"
        );
        let mut stored = rows(
            &server,
            DEFAULT_KEY,
            &format!(
                "SELECT host, app, pid, msg_id, facility, severity, message, CAST(ts AS BIGINT) AS ts_ms \
                 FROM logs WHERE input = '{input}'"
            ),
        )
        .await;
        let mut failures = Vec::new();
        for case in &corpus {
            let expect = case["expect"].as_object().unwrap();
            let matches = |row: &Value| {
                expect.iter().all(|(k, want)| match k.as_str() {
                    "ts" => {
                        let want = chrono::DateTime::parse_from_rfc3339(want.as_str().unwrap())
                            .unwrap()
                            .timestamp_millis();
                        row["ts_ms"].as_i64() == Some(want)
                    }
                    "ts_md" => {
                        let got =
                            chrono::DateTime::from_timestamp_millis(row["ts_ms"].as_i64().unwrap())
                                .unwrap()
                                .format("%m-%d %H:%M:%S")
                                .to_string();
                        want.as_str() == Some(got.as_str())
                    }
                    _ => &row[k.as_str()] == want,
                })
            };
            match stored.iter().position(matches) {
                Some(i) => {
                    stored.swap_remove(i);
                }
                None => failures.push(case["name"].as_str().unwrap().to_string()),
            }
        }
        assert!(
            failures.is_empty(),
            "{input}: no stored row matches {failures:?}"
        );
    }
}

/// Writes `payload` over TLS with openssl s_client, presenting the client
/// certificate and key when given.
fn openssl_client(port: u16, identity: Option<&(PathBuf, PathBuf)>, payload: &[u8]) {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args(["s_client", "-quiet", "-no_ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{port}"));
    if let Some((cert, key)) = identity {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    // A refused handshake may close the pipe before everything is written.
    let _ = child.stdin.take().unwrap().write_all(payload);
    let _ = child.wait();
}

#[tokio::test]
async fn client_certificates_name_the_tenant_and_unmapped_or_foreign_ones_are_refused() {
    let env = Env::new();
    let dir = env.path().to_path_buf();
    let acme = env.org_with_key("acme");
    let globex = env.org_with_key("globex");
    let (server_cert, server_key) = (dir.join("server.crt"), dir.join("server.key"));
    let server_ca = TestCa::new(&dir, "server");
    server_ca.issue(
        "/CN=localhost",
        &server_cert,
        &server_key,
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    );
    let clients = TestCa::new(&dir, "clients");
    let rogue = TestCa::new(&dir, "rogue");
    let identity = |ca: &TestCa, name: &str, subject: &str| {
        let pair = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        ca.issue(subject, &pair.0, &pair.1, "extendedKeyUsage=clientAuth");
        pair
    };
    let acme_fw = identity(
        &clients,
        "acme-fw",
        "/C=DE/O=Acme Inc/OU=Firewalls/CN=fw01.acme.example",
    );
    let globex_gw = identity(&clients, "globex-gw", "/O=Globex/CN=gw1");
    let initech = identity(&clients, "initech", "/O=Initech/CN=gw1");
    // Acme's subject, but not from the CA the listener trusts.
    let forged = identity(
        &rogue,
        "forged",
        "/C=DE/O=Acme Inc/OU=Firewalls/CN=fw01.acme.example",
    );
    let tls = |require: bool| {
        format!(
            r#"tls={{cert_path="{}",key_path="{}",client_ca_path="{}",require_client_certificate={require}}}"#,
            server_cert.display(),
            server_key.display(),
            clients.cert.display()
        )
    };
    let listeners = format!(
        r#"[{{name="mtls",protocol="tls",listen="127.0.0.1:0",default_tenant="default",{},client_certificates=[{{subject="O=Acme Inc",tenant="acme"}},{{subject="O=Globex",tenant="globex"}}]}},{{name="gelf-mtls",protocol="tls",format="gelf",listen="127.0.0.1:0",default_tenant="default",{},client_certificates=[{{subject="OU=Firewalls,O=Acme Inc",tenant="acme"}}]}}]"#,
        tls(true),
        tls(false)
    );
    // The environment owns the directory of certificates: keep it.
    let env = env.set("SECURENET_INGEST__SYSLOG", &listeners);
    let server = env.serve();
    let port = server.syslog_port("mtls");

    // Refused: a certificate no rule maps (never the default tenant), one
    // from another CA, none at all where one is required.
    openssl_client(
        port,
        Some(&initech),
        b"<13>Dec  4 10:00:00 gw1 app: mtls initech\n",
    );
    openssl_client(
        port,
        Some(&forged),
        b"<13>Dec  4 10:00:00 fw01 app: mtls forged\n",
    );
    openssl_client(
        port,
        None,
        b"<13>Dec  4 10:00:00 anon app: mtls anonymous\n",
    );
    // Served: each certificate's tenant; a key in the message still wins.
    let with_key = format!(
        "<13>1 2026-12-04T10:00:00Z fw01 app - - [securenet@32473 key=\"{globex}\"] mtls keyed\n"
    );
    openssl_client(
        port,
        Some(&acme_fw),
        format!("<13>Dec  4 10:00:00 fw01 app: mtls acme\n{with_key}").as_bytes(),
    );
    openssl_client(
        port,
        Some(&globex_gw),
        b"<13>Dec  4 10:00:00 gw1 app: mtls globex\n",
    );
    // pygelf over TLS where a certificate is optional: with one, its
    // tenant; without, the listener's default.
    let gelf = server
        .syslog_addr("gelf-mtls")
        .to_string()
        .replace("127.0.0.1", "localhost");
    let ca = server_ca.cert.to_str().unwrap();
    let mut with_cert = vec![("GELF_TLS_CA", ca)];
    with_cert.push(("GELF_TLS_CERT", acme_fw.0.to_str().unwrap()));
    with_cert.push(("GELF_TLS_KEY", acme_fw.1.to_str().unwrap()));
    forwarder_client_with("gelf-tls", &gelf, "", "certified", 4, &with_cert);
    forwarder_client_with(
        "gelf-tls",
        &gelf,
        "",
        "anonymous",
        3,
        &[("GELF_TLS_CA", ca)],
    );

    let acme_where =
        "logs WHERE message = 'mtls acme' OR message LIKE 'gelf-tls message % of certified%'";
    assert_eq!(wait_count(&server, &acme, acme_where, 5).await, 5);
    let globex_where = "logs WHERE message IN ('mtls globex', 'mtls keyed')";
    assert_eq!(wait_count(&server, &globex, globex_where, 2).await, 2);
    let anonymous = "logs WHERE message LIKE 'gelf-tls message % of anonymous%'";
    assert_eq!(wait_count(&server, DEFAULT_KEY, anonymous, 3).await, 3);
    for key in [DEFAULT_KEY, acme.as_str(), globex.as_str()] {
        let total = rows(&server, key, "SELECT count(*) AS n FROM logs").await;
        let expected = if key == DEFAULT_KEY {
            3
        } else if key == acme {
            5
        } else {
            2
        };
        assert_eq!(
            total[0]["n"], expected,
            "nothing refused was stored anywhere"
        );
    }
    let refused = |reason: &str| {
        format!(
            r#"securenet_syslog_connections_refused_total{{listener="mtls",reason="{reason}"}}"#
        )
    };
    assert_eq!(metric(&server, &refused("unmapped_certificate")).await, 1.0);
    assert!(metric(&server, &refused("tls_handshake")).await >= 2.0);
}
