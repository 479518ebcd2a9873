//! Starting and stopping `securenet serve` in a private data directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_securenet");
/// The default organization's key in every test server.
pub const DEFAULT_KEY: &str = "e2e-default-organization-key-0001";

/// A data directory plus the environment every process of one test shares.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub vars: BTreeMap<String, String>,
    /// The network namespace this host's processes run in
    /// ([`crate::netns`]); `None`: this machine's.
    pub netns: Option<String>,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars = BTreeMap::new();
        vars.insert(
            "SECURENET_DATA_DIR".into(),
            dir.path().display().to_string(),
        );
        vars.insert("SECURENET_HTTP__LISTEN".into(), "127.0.0.1:0".into());
        vars.insert(
            "SECURENET_CONTROL__DEFAULT_API_KEY".into(),
            DEFAULT_KEY.into(),
        );
        // Short linger keeps tests fast; the semantics do not depend on it.
        vars.insert("SECURENET_INGEST__BATCH__LINGER_MS".into(), "20".into());
        // Syslog on free ports (the default 5514 would collide between tests).
        vars.insert(
            "SECURENET_INGEST__SYSLOG".into(),
            r#"[{name="tcp",protocol="tcp",listen="127.0.0.1:0",default_tenant="default"},{name="udp",protocol="udp",listen="127.0.0.1:0",default_tenant="default"}]"#.into(),
        );
        // SECURENET_TEST_RUST_LOG=info (or debug) shows what the processes do
        // when a test fails.
        let log = std::env::var("SECURENET_TEST_RUST_LOG").unwrap_or_else(|_| "warn".into());
        vars.insert("RUST_LOG".into(), log);
        let mut env = Self {
            dir,
            vars,
            netns: None,
        };
        // SECURENET_TEST_LAKE=s3 / SECURENET_TEST_CONTROL=postgres: the
        // suites again with the lake on S3 / the control plane on
        // PostgreSQL (./scripts/test.sh runs both passes).
        if std::env::var("SECURENET_TEST_LAKE").as_deref() == Ok("s3") {
            env = env.on_s3();
        }
        if std::env::var("SECURENET_TEST_CONTROL").as_deref() == Ok("postgres") {
            env = env.on_postgres();
        }
        env
    }

    /// The lake on the S3 server test.sh started (moto), under a prefix of
    /// this environment's own; the processes get the endpoint and
    /// credentials the AWS way, from AWS_* variables.
    pub fn on_s3(mut self) -> Self {
        let endpoint = std::env::var("SECURENET_TEST_S3_ENDPOINT").expect(
            "SECURENET_TEST_S3_ENDPOINT is unset: run ./scripts/test.sh, which starts an S3 server",
        );
        let bucket = std::env::var("SECURENET_TEST_S3_BUCKET").unwrap_or("securenet-test".into());
        self.vars.insert(
            "SECURENET_PIPELINE__LAKE_URL".into(),
            format!("s3://{bucket}/{}", unique()),
        );
        for (k, v) in [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ] {
            self.vars.insert(k.into(), v.into());
        }
        self
    }

    /// The control plane on the PostgreSQL server test.sh started, in a
    /// fresh database (all of this environment's processes share it, as
    /// hosts would).
    pub fn on_postgres(mut self) -> Self {
        let server = std::env::var("SECURENET_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .expect(
                "SECURENET_TEST_POSTGRES_URL is unset: run ./scripts/test.sh, which starts PostgreSQL",
            );
        let url = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(control::fresh_postgres_database(&server))
                .expect("a fresh PostgreSQL database")
        })
        .join()
        .expect("creating the database");
        self.vars.insert("SECURENET_CONTROL__DATABASE".into(), url);
        self
    }

    /// Another host of this installation: the same settings (bus, lake,
    /// control plane, ClickHouse, keys) and a data directory of its own.
    pub fn host(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars = self.vars.clone();
        vars.insert(
            "SECURENET_DATA_DIR".into(),
            dir.path().display().to_string(),
        );
        Self {
            dir,
            vars,
            netns: None,
        }
    }

    /// Another host of this installation in a network namespace of its
    /// own on `net`: it listens on its own address, and every service
    /// address in its settings leads through the bridge.
    pub fn host_on(&self, net: &mut crate::netns::Network) -> Self {
        let mut host = self.host();
        let (name, address) = net.host();
        for value in host.vars.values_mut() {
            *value = net.reroute(value);
        }
        host.vars
            .insert("SECURENET_HTTP__LISTEN".into(), format!("{address}:0"));
        host.vars.insert(
            "SECURENET_INGEST__SYSLOG".into(),
            format!(
                r#"[{{name="tcp",protocol="tcp",listen="{address}:0",default_tenant="default"}},{{name="udp",protocol="udp",listen="{address}:0",default_tenant="default"}}]"#
            ),
        );
        host.netns = Some(name);
        host
    }

    /// The metadata store this environment's processes use (SQLite file
    /// or PostgreSQL database), opened as they open it.
    pub async fn metadata_store(&self) -> control::MetaStore {
        let database = self
            .vars
            .get("SECURENET_CONTROL__DATABASE")
            .cloned()
            .unwrap_or_else(|| self.path().join("meta.db").display().to_string());
        control::MetaStore::connect(&database)
            .await
            .expect("open the metadata store")
    }

    /// The lake's objects under `prefix` (relative to the lake root, e.g.
    /// `logs/tenant_id=acme`), as paths relative to the root, sorted. A local
    /// lake is walked on disk (staging files of killed writes included); an
    /// S3 lake is listed through object_store.
    pub fn lake_objects(&self, prefix: &str) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::ObjectStore;
        let Some(url) = self.vars.get("SECURENET_PIPELINE__LAKE_URL").cloned() else {
            let root = self.path().join("lake");
            let mut out = Vec::new();
            let mut stack = vec![root.join(prefix)];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    } else if let Ok(rel) = e.path().strip_prefix(&root) {
                        out.push(rel.display().to_string());
                    }
                }
            }
            out.sort();
            return out;
        };
        let lake = self.lake(&url);
        let prefix = prefix
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(lake.root().clone(), |p, part| p.join(part));
        // Its own runtime on its own thread: callers may be async tests.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut names: Vec<String> = lake
                    .raw_store()
                    .list(Some(&prefix))
                    .map_ok(|m| lake.relative(&m.location))
                    .try_collect()
                    .await
                    .expect("list the lake");
                names.sort();
                names
            })
        })
        .join()
        .expect("listing thread")
    }

    /// The lake at `url` as this environment's processes open it: the
    /// `AWS_*` variables they get are its options.
    pub fn lake(&self, url: &str) -> pipeline::Lake {
        let options: BTreeMap<String, String> = self
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        pipeline::Lake::open(url, &options).expect("open the lake")
    }

    /// The lake of this environment: on S3 with `SECURENET_TEST_LAKE=s3`,
    /// else its local directory.
    pub fn this_lake(&self) -> pipeline::Lake {
        match self.vars.get("SECURENET_PIPELINE__LAKE_URL") {
            Some(url) => self.lake(url),
            None => pipeline::Lake::local(&self.path().join("lake")).expect("open the lake"),
        }
    }

    /// File names (last path part) of [`Env::lake_objects`].
    pub fn lake_file_names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .lake_objects(prefix)
            .iter()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect();
        names.sort();
        names
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.into(), value.into());
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = match &self.netns {
            Some(name) => {
                // `ip netns exec` execs the program in place: the child's
                // pid is securenet's, so signals reach it.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        c.args(args);
        c.env_clear();
        c.env("PATH", std::env::var("PATH").unwrap_or_default());
        c.envs(&self.vars);
        c
    }

    /// Runs a CLI command to completion; panics with its stderr on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.command(args).output().expect("run securenet");
        assert!(
            out.status.success(),
            "securenet {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Creates an organization and returns a fresh admin key for it.
    pub fn org_with_key(&self, id: &str) -> String {
        self.org_on_plan(id, "business", &[])
    }

    /// Creates an organization on `plan` (plus extra `orgs create` flags)
    /// and returns a fresh admin key for it.
    pub fn org_on_plan(&self, id: &str, plan: &str, extra: &[&str]) -> String {
        let email = format!("sec@{id}.test");
        let mut args = vec![
            "orgs",
            "create",
            "--org",
            id,
            "--name",
            id,
            "--owner-email",
            &email,
            "--plan",
            plan,
        ];
        args.extend_from_slice(extra);
        self.cli(&args);
        self.cli(&["keys", "create", "--org", id])
            .trim()
            .to_string()
    }

    pub fn serve(&self) -> Server {
        Server::start(self, "serve")
    }

    /// Starts one role: `ingest`, `pipeline` or `query-api`.
    pub fn role(&self, role: &str) -> Server {
        Server::start(self, role)
    }

    /// This environment with the ClickHouse sink on the server started by
    /// `scripts/test.sh`, in a database of its own; returns the database.
    pub fn clickhouse(self) -> (Self, ClickHouse) {
        let url = std::env::var("SECURENET_TEST_CLICKHOUSE").expect(
            "SECURENET_TEST_CLICKHOUSE is unset: run ./scripts/test.sh, which starts ClickHouse",
        );
        let database = format!("e2e_{}", unique());
        let env = self
            .set("SECURENET_PIPELINE__CLICKHOUSE__URL", &url)
            .set("SECURENET_PIPELINE__CLICKHOUSE__DATABASE", &database);
        (env, ClickHouse { url, database })
    }

    /// This environment on the Kafka bus started by `scripts/test.sh`, with
    /// its own topics and consumer group so tests do not see each other.
    pub fn kafka(self) -> Self {
        let brokers = std::env::var("SECURENET_TEST_KAFKA").expect(
            "SECURENET_TEST_KAFKA is unset: run ./scripts/test.sh, which starts a Kafka broker (Tansu)",
        );
        self.kafka_at(&brokers)
    }

    /// This environment on the Kafka bus at `brokers`.
    pub fn kafka_at(self, brokers: &str) -> Self {
        let unique = format!("e2e{}", unique());
        self.set("SECURENET_BUS__KIND", "kafka")
            .set("SECURENET_BUS__KAFKA__BROKERS", brokers)
            .set("SECURENET_BUS__KAFKA__TOPIC_PREFIX", &unique)
            .set(
                "SECURENET_BUS__KAFKA__GROUP_ID",
                &format!("{unique}-pipeline"),
            )
            .set("SECURENET_BUS__KAFKA__PARTITIONS", "3")
    }

    /// Generates NDJSON for `tenants` into files; returns the manifest.
    pub fn generate(&self, tenants: &str, rows: usize, seed: u64) -> (PathBuf, Value) {
        let out = self.path().join(format!("gen-{seed}"));
        let manifest = self.path().join(format!("gen-{seed}.json"));
        self.cli(&[
            "gen",
            "--tenants",
            tenants,
            "--rows",
            &rows.to_string(),
            "--seed",
            &seed.to_string(),
            "--anomalies",
            "2",
            "--start",
            "2026-11-26T08:00:00Z",
            "--out-dir",
            out.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
        ]);
        let m: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
        (out, m)
    }
}

pub struct Server {
    child: Child,
    pub base: String,
    /// Syslog listener name → bound address.
    pub syslog: BTreeMap<String, String>,
    /// Other listeners' bound addresses by name (`flight_sql`,
    /// `otlp_grpc`…), from the ready lines.
    pub listeners: BTreeMap<String, String>,
}

impl Server {
    fn start(env: &Env, role: &str) -> Self {
        let mut child = env
            .command(&[role])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn securenet {role}: {e}"));
        // Each line the process logs, prefixed with its role (and network
        // namespace), so the logs of a test with several processes say
        // which one spoke.
        let stderr = child.stderr.take().expect("stderr");
        let who = match &env.netns {
            Some(ns) => format!("{role}@{ns}[{}]", child.id()),
            None => format!("{role}[{}]", child.id()),
        };
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{who}| {line}");
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut syslog = BTreeMap::new();
            let mut listeners = BTreeMap::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(ready) = line.strip_prefix("securenet ready ") else {
                    continue;
                };
                if let Some(listener) = ready.strip_prefix("syslog ")
                    && let Some((name, addr)) = listener.split_once('=')
                {
                    syslog.insert(name.to_string(), addr.to_string());
                } else if let Some(addr) = ready.strip_prefix("http=") {
                    let _ = tx.send((
                        addr.to_string(),
                        std::mem::take(&mut syslog),
                        std::mem::take(&mut listeners),
                    ));
                } else if let Some((name, addr)) = ready.split_once('=') {
                    listeners.insert(name.to_string(), addr.to_string());
                }
            }
        });
        let (addr, syslog, listeners) = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("securenet {role} did not become ready within 30s"));
        Self {
            child,
            base: format!("http://{addr}"),
            syslog,
            listeners,
        }
    }

    /// A listener's bound address (`flight_sql`, `otlp_grpc`…).
    pub fn listener(&self, name: &str) -> &str {
        self.listeners
            .get(name)
            .unwrap_or_else(|| panic!("no {name} listener was announced"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Port of a syslog listener.
    pub fn syslog_port(&self, name: &str) -> u16 {
        self.syslog_addr(name).port()
    }

    /// Bound address of a syslog listener.
    pub fn syslog_addr(&self, name: &str) -> std::net::SocketAddr {
        self.syslog[name].parse().expect("syslog address")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        signal(self.child.id(), "TERM");
        let status = wait_timeout(&mut self.child, Duration::from_secs(30))
            .expect("serve did not exit after SIGTERM");
        assert!(status.success(), "serve exited with {status}");
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        signal(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        wait_timeout(&mut self.child, timeout)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill -{sig} {pid}");
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// POSTs NDJSON with `key`; returns (status, JSON body).
pub async fn ingest(server: &Server, key: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = client()
        .post(server.url("/api/ingest/logs"))
        .bearer_auth(key)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("ingest request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Runs SQL as `key`; returns (status, JSON body).
pub async fn sql(server: &Server, key: &str, query: &str) -> (u16, Value) {
    let r = client()
        .post(server.url("/api/sql"))
        .header("x-api-key", key)
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .expect("sql request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Runs SQL that must succeed and returns its rows.
pub async fn rows(server: &Server, key: &str, query: &str) -> Vec<Value> {
    let (status, body) = sql(server, key, query).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["rows"].as_array().cloned().unwrap_or_default()
}

/// `SELECT count(*)` helper.
pub async fn count(server: &Server, key: &str, from_where: &str) -> u64 {
    let r = rows(
        server,
        key,
        &format!("SELECT count(*) AS n FROM {from_where}"),
    )
    .await;
    r[0]["n"].as_u64().expect("count")
}

/// Polls `SELECT count(*) FROM <from_where>` until it equals `expected`
/// (receivers without acknowledgements, like syslog, land asynchronously).
pub async fn wait_count(server: &Server, key: &str, from_where: &str, expected: u64) -> u64 {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(server, key, from_where).await;
        if n == expected || Instant::now() > until {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python of the test venv (scripts/test.sh builds it with the pinned
/// client libraries: pyarrow, ADBC, pySigma, the OpenTelemetry SDK...).
/// A file of this repository. Read at run time, not baked in at compile
/// time: a test binary cargo reuses from a checkout elsewhere (the same
/// target directory, unchanged sources) must still find this checkout's.
pub fn repo_path(rel: &str) -> String {
    let root = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string());
    format!("{root}/{rel}")
}

pub fn python() -> String {
    std::env::var("SECURENET_TEST_PYTHON").expect(
        "SECURENET_TEST_PYTHON is unset: run ./scripts/test.sh, which builds the venv of pinned client libraries",
    )
}

/// Runs one client of scripts/forwarder_clients.py; its JSON report.
pub fn forwarder_client(kind: &str, target: &str, key: &str, run: &str, records: usize) -> Value {
    forwarder_client_with(kind, target, key, run, records, &[])
}

/// [`forwarder_client`] with environment variables for the client (e.g.
/// `OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE` to trust a test certificate).
pub fn forwarder_client_with(
    kind: &str,
    target: &str,
    key: &str,
    run: &str,
    records: usize,
    env: &[(&str, &str)],
) -> Value {
    let script = repo_path("scripts/forwarder_clients.py");
    let out = std::process::Command::new(python())
        .args([&script, kind, target, key, run, &records.to_string()])
        // requests lets these override a client's own trust setting (such
        // as OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE); some machines set them.
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .envs(env.iter().copied())
        .output()
        .expect("run forwarder_clients.py");
    assert!(
        out.status.success(),
        "{kind} client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{kind}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The server's `/metrics` exposition text.
pub async fn exposition(server: &Server) -> String {
    client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one Prometheus sample, e.g.
/// `securenet_syslog_rejected_total{listener="keyed",reason="bad_key"}`.
pub async fn metric(server: &Server, sample: &str) -> f64 {
    exposition(server)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Sum of every sample of a metric family, whatever its labels.
pub async fn metric_sum(server: &Server, family: &str) -> f64 {
    exposition(server)
        .await
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} ")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until a pipeline process owns Kafka partitions.
pub async fn wait_for_partitions(pipeline: &Server) {
    let until = Instant::now() + Duration::from_secs(60);
    while metric_sum(pipeline, "securenet_bus_assigned_partitions").await < 1.0 {
        assert!(
            Instant::now() < until,
            "the pipeline got no partitions in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs an external client to completion; panics with its output on failure.
pub fn run(program: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is not runnable ({e}); scripts/test.sh installs it"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What curl got back: the final status, its headers (lower-cased names)
/// and the body.
pub struct Reply {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Runs curl — the HTTP client users script with — and parses its answer.
pub fn curl(args: &[&str]) -> Reply {
    let mut all = vec!["-sS", "-i"];
    all.extend_from_slice(args);
    let out = run("curl", &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // `-i` prints every header block (100 Continue first); keep the last.
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        if head.starts_with("HTTP/") && body.starts_with("HTTP/") {
            rest = body;
            continue;
        }
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line in curl output: {text}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        return Reply {
            status,
            headers,
            body: body.to_string(),
        };
    }
}

/// `POST` with curl: an API key, a media type, and a body (`@file` reads a
/// file, as curl does).
pub fn post(server: &Server, path: &str, key: &str, media: &str, body: &str) -> Reply {
    send(server, "POST", path, key, Some((media, body)))
}

/// Any method with curl and an API key (or JWT), with a body of a media
/// type or none.
pub fn send(
    server: &Server,
    method: &str,
    path: &str,
    key: &str,
    body: Option<(&str, &str)>,
) -> Reply {
    let url = server.url(path);
    let auth = format!("Authorization: Bearer {key}");
    let mut args = vec!["-X", method, &url, "-H", &auth];
    let media = body.map(|(media, _)| format!("Content-Type: {media}"));
    if let (Some(media), Some((_, data))) = (&media, body) {
        args.extend(["-H", media, "--data-binary", data]);
    }
    curl(&args)
}

/// `GET` with curl and an API key (or JWT).
pub fn get(server: &Server, path: &str, key: &str) -> Reply {
    curl(&[
        &server.url(path),
        "-H",
        &format!("Authorization: Bearer {key}"),
    ])
}

/// Downloads `path` with curl into `out` (binary-safe): the status and the
/// `Content-Type`.
pub fn download(server: &Server, path: &str, key: &str, out: &Path) -> (u16, String) {
    let o = run(
        "curl",
        &[
            "-sS",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_code} %{content_type}",
            &server.url(path),
            "-H",
            &format!("Authorization: Bearer {key}"),
        ],
    );
    let w = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, media) = w.split_once(' ').unwrap_or((&w, ""));
    (code.parse().unwrap_or(0), media.to_string())
}

/// A PDF read back by scripts/pdf_probe.py (pypdf's text extraction and
/// PDFium's rendering of page 1, saved as `<pdf>.png`): pages, title,
/// text per page, and the render's band colour and share of dark pixels.
pub fn read_pdf(pdf: &Path) -> serde_json::Value {
    let probe = repo_path("scripts/pdf_probe.py");
    let png = pdf.with_extension("png");
    let o = run(
        &python(),
        &[&probe, pdf.to_str().unwrap(), png.to_str().unwrap()],
    );
    assert!(
        o.status.success(),
        "pdf_probe: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("pdf_probe prints JSON")
}

/// `POST` of a JSON value with curl and an API key (or JWT).
pub fn post_json(server: &Server, path: &str, key: &str, body: &serde_json::Value) -> Reply {
    post(server, path, key, "application/json", &body.to_string())
}

/// A name no other test (or test run) uses.
pub fn unique() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The test ClickHouse server and this test's database.
pub struct ClickHouse {
    pub url: String,
    pub database: String,
}

impl ClickHouse {
    /// Runs a query (`{db}` stands for the test's database) and returns
    /// its JSONEachRow rows.
    pub async fn rows(&self, query: &str) -> Vec<Value> {
        let query = query.replace("{db}", &self.database);
        let r = client()
            .post(&self.url)
            .body(format!("{query} FORMAT JSONEachRow"))
            .send()
            .await
            .expect("clickhouse request");
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{query}: {text}");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("JSONEachRow"))
            .collect()
    }

    /// Row counts per tenant in `table`, duplicates collapsed (`FINAL`).
    pub async fn counts(&self, table: &str) -> BTreeMap<String, u64> {
        self.rows(&format!(
            "SELECT tenant_id, count() AS n FROM {{db}}.{table} FINAL GROUP BY tenant_id"
        ))
        .await
        .into_iter()
        .map(|r| {
            let n = match &r["n"] {
                Value::String(s) => s.parse().unwrap(),
                v => v.as_u64().unwrap(),
            };
            (r["tenant_id"].as_str().unwrap().to_string(), n)
        })
        .collect()
    }
}

/// A TCP proxy a test can take down and bring back: a service outage as
/// the client sees it (refused and cut connections), without stopping the
/// shared service.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    down: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Runs on a thread and runtime of its own, so a test blocked on a
    /// process does not stall it.
    pub fn start(target: std::net::SocketAddr) -> Self {
        Self::start_at(([127, 0, 0, 1], 0).into(), target)
    }

    /// A proxy listening on `bind` (port 0: any free one).
    pub fn start_at(bind: std::net::SocketAddr, target: std::net::SocketAddr) -> Self {
        let (down, watch) = tokio::sync::watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
                tx.send(listener.local_addr().unwrap()).unwrap();
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if *watch.borrow() {
                        continue; // dropped: the client sees a reset
                    }
                    let mut watch = watch.clone();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = watch.wait_for(|down| *down) => {}
                        }
                    });
                }
            });
        });
        let addr = rx.recv().unwrap();
        Self { addr, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

/// A private Tansu broker (sqlite storage in `dir`) a test may kill and
/// restart on the same port and data: the broker going away for real.
pub struct Tansu {
    child: Option<Child>,
    dir: PathBuf,
    pub port: u16,
    /// Where clients are told to connect (a [`Proxy`] in outage tests).
    advertised: String,
}

impl Tansu {
    /// A broker reached through a [`Proxy`] — also for the connections the
    /// broker's metadata sends clients to — so a test can cut it off.
    pub fn behind_proxy(dir: &Path) -> (Self, Proxy) {
        Self::behind_proxy_at(dir, std::net::Ipv4Addr::LOCALHOST)
    }

    /// The same, with the proxy on `address` (a bridge's, for hosts in
    /// network namespaces).
    pub fn behind_proxy_at(dir: &Path, address: std::net::Ipv4Addr) -> (Self, Proxy) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let proxy = Proxy::start_at((address, 0).into(), ([127, 0, 0, 1], port).into());
        let mut t = Self {
            child: None,
            dir: dir.to_path_buf(),
            port,
            advertised: format!("tcp://{}", proxy.addr),
        };
        t.restart();
        (t, proxy)
    }

    /// Starts the broker on its port and storage.
    fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = self.advertised.clone();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = Command::new("tansu")
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            // Tansu resolves the sqlite path against its working directory.
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu on PATH (scripts/test.sh installs it)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < until, "tansu did not listen within 30s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the broker is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A certificate authority of a test's own (openssl), issuing server and
/// client certificates.
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// A self-signed CA, `CN={name} test CA`, written under `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let (cert, key) = (
            dir.join(format!("{name}-ca.crt")),
            dir.join(format!("{name}-ca.key")),
        );
        let subject = format!("/CN={name} test CA");
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
                &subject,
                "-keyout",
                path_str(&key),
                "-out",
                path_str(&cert),
            ],
        );
        Self { cert, key }
    }

    /// Issues a certificate for `subject` (openssl's `/O=…/CN=…` form) to
    /// `cert`/`key` (overwriting them, as operators renew), with the
    /// extensions in `ext` (e.g. `subjectAltName=DNS:localhost`).
    pub fn issue(&self, subject: &str, cert: &Path, key: &Path, ext: &str) {
        let csr = cert.with_extension("csr");
        let ext_file = cert.with_extension("ext");
        std::fs::write(&ext_file, format!("{ext}\n")).unwrap();
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                path_str(key),
                "-out",
                path_str(&csr),
            ],
        );
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                path_str(&csr),
                "-CA",
                path_str(&self.cert),
                "-CAkey",
                path_str(&self.key),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                path_str(&ext_file),
                "-out",
                path_str(cert),
            ],
        );
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}
