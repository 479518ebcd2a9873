//! The CLI: organizations, keys, configuration errors, the generator.

use serde_json::Value;

use crate::support::Env;

#[test]
fn organizations_and_keys_lifecycle() {
    let env = Env::new();
    let created: Value = serde_json::from_str(&env.cli(&[
        "orgs",
        "create",
        "--org",
        "acme",
        "--name",
        "Acme Corp",
        "--owner-email",
        "sec@acme.test",
        "--plan",
        "starter",
    ]))
    .unwrap();
    assert_eq!(created["plan"], "starter");
    assert_eq!(created["limits"]["max_devices"], 5);
    assert_eq!(created["limits"]["max_scans_per_month"], 25);

    let out = env
        .command(&[
            "orgs",
            "create",
            "--org",
            "acme",
            "--name",
            "x",
            "--owner-email",
            "a@b.c",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("organization \"acme\" already exists"));
    let out = env
        .command(&[
            "orgs",
            "create",
            "--org",
            "Bad Id",
            "--name",
            "x",
            "--owner-email",
            "a@b.c",
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid tenant id"));
    // Plans and roles are checked (and listed) by the parser; `--id` is the
    // old name of `--org` and still works.
    let out = env
        .command(&[
            "orgs",
            "create",
            "--id",
            "gold",
            "--name",
            "x",
            "--owner-email",
            "a@b.c",
            "--plan",
            "gold",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("possible values: starter, professional"),
        "{err}"
    );
    let out = env
        .command(&["keys", "create", "--org", "acme", "--role", "root"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("possible values: admin, member, viewer"),
        "{err}"
    );

    let key = env.cli(&[
        "keys",
        "create",
        "--org",
        "acme",
        "--name",
        "forwarder",
        "--role",
        "member",
    ]);
    let key = key.trim();
    assert!(key.starts_with("sn_"));
    let listed: Value =
        serde_json::from_str(&env.cli(&["keys", "list", "--org", "acme", "--json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["role"], "member");
    assert!(listed[0]["revoked_at"].is_null());
    // Keys are shown once: the listing and the database never hold the secret.
    let secret_part = key.rsplit('_').next().unwrap();
    assert!(!listed[0].to_string().contains(secret_part));
    let db = std::fs::read(env.path().join("meta.db")).unwrap();
    assert!(
        !db.windows(secret_part.len())
            .any(|w| w == secret_part.as_bytes())
    );

    let id = listed[0]["id"].as_str().unwrap();
    env.cli(&["keys", "revoke", "--org", "acme", id]);
    let listed: Value =
        serde_json::from_str(&env.cli(&["keys", "list", "--org", "acme", "--json"])).unwrap();
    assert!(listed[0]["revoked_at"].is_i64());

    let orgs: Value = serde_json::from_str(&env.cli(&["orgs", "list", "--json"])).unwrap();
    assert_eq!(orgs.as_array().unwrap().len(), 1);
}

#[test]
fn default_organization_key_is_printed_once() {
    let env = Env::new();
    let mut vars = env.vars.clone();
    vars.remove("SECURENET_CONTROL__DEFAULT_API_KEY");
    let env = Env { vars, ..env };
    env.serve().stop();
    let keys: Value =
        serde_json::from_str(&env.cli(&["keys", "list", "--org", "default", "--json"])).unwrap();
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "one key for the default organization"
    );
    env.serve().stop();
    let keys: Value =
        serde_json::from_str(&env.cli(&["keys", "list", "--org", "default", "--json"])).unwrap();
    assert_eq!(
        keys.as_array().unwrap().len(),
        1,
        "no new key on the second start"
    );
}

#[test]
fn configuration_errors_are_clear() {
    let env = Env::new().set("SECURENET_INGEST__BATCH__LINGER", "5");
    let out = env.command(&["serve"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("linger"),
        "{err}"
    );

    // A compression ClickHouse's HTTP inserts do not get from us is named
    // with the ones they do.
    let env = Env::new().set("SECURENET_PIPELINE__CLICKHOUSE__COMPRESSION", "zstd");
    let err =
        String::from_utf8_lossy(&env.command(&["serve"]).output().unwrap().stderr).to_string();
    assert!(
        err.contains("invalid configuration") && err.contains("zstd") && err.contains("lz4"),
        "{err}"
    );

    // A Parquet codec we do not write is named with the ones we do.
    let env = Env::new().set("SECURENET_PIPELINE__PARQUET__COMPRESSION", "gzip");
    let err =
        String::from_utf8_lossy(&env.command(&["serve"]).output().unwrap().stderr).to_string();
    assert!(
        err.contains("invalid configuration")
            && err.contains("gzip")
            && err.contains("lz4_raw")
            && err.contains("snappy"),
        "{err}"
    );

    // An object cache whose largest object would not leave room for others.
    let env = Env::new()
        .set("SECURENET_API__SQL__OBJECT_CACHE_BYTES", "1048576")
        .set(
            "SECURENET_API__SQL__OBJECT_CACHE_MAX_OBJECT_BYTES",
            "1048576",
        );
    let err =
        String::from_utf8_lossy(&env.command(&["serve"]).output().unwrap().stderr).to_string();
    assert!(
        err.contains("object_cache_max_object_bytes") && err.contains("at most half"),
        "{err}"
    );

    let env = Env::new().set("SECURENET_CONTROL__DEFAULT_PLAN", "gold");
    let err =
        String::from_utf8_lossy(&env.command(&["serve"]).output().unwrap().stderr).to_string();
    assert!(err.contains("unknown plan \"gold\""), "{err}");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[http]\nlisten = \"127.0.0.1:9999\"\n[api.sql]\ntimeout_ms = 1234\n",
    )
    .unwrap();
    let env = Env::new();
    let shown = env.cli(&["--config", file.path().to_str().unwrap(), "config"]);
    assert!(shown.contains("[api.sql]\ntimeout_ms = 1234"), "{shown}");
    // Keys that moved still work under their old names, with a warning.
    let old = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        old.path(),
        "[sql]\ntimeout_ms = 4321\n[pipeline]\nbus_capacity = 7\n",
    )
    .unwrap();
    let out = env
        .command(&["--config", old.path().to_str().unwrap(), "config"])
        .output()
        .unwrap();
    let (shown, warned) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(shown.contains("[api.sql]\ntimeout_ms = 4321"), "{shown}");
    assert!(
        shown.contains("[bus]\nkind = \"embedded\"\ncapacity = 7"),
        "{shown}"
    );
    assert!(
        !shown.contains("bus_capacity") && !shown.contains("\n[sql]"),
        "{shown}"
    );
    assert!(
        warned.contains("[sql] is now [api.sql]")
            && warned.contains("pipeline.bus_capacity is now bus.capacity"),
        "{warned}"
    );
    // The environment overrides the file.
    assert!(shown.contains("listen = \"127.0.0.1:0\""), "{shown}");
    // Secrets show as set, never their value.
    let env = env
        .set(
            "SECURENET_PIPELINE__CLICKHOUSE__PASSWORD",
            "hunter2-clickhouse",
        )
        .set(
            "SECURENET_API__JWT_SECRET",
            "jwt-secret-value-of-at-least-32-bytes!!",
        )
        .set(
            "SECURENET_API__NOTIFY__SMTP__URL",
            "smtp://mailer:smtp-pass@relay:587",
        )
        .set("SECURENET_API__NOTIFY__SMTP__FROM", "alerts@example.com")
        .set(
            "SECURENET_CONTROL__DEFAULT_API_KEY",
            "default-key-value-0123456789",
        )
        .set("SECURENET_API__LLM__URL", "http://127.0.0.1:9/v1")
        .set("SECURENET_API__LLM__MODEL", "m")
        .set("SECURENET_API__LLM__API_KEY", "llm-key-value");
    // librdkafka's option names hold dots: a file, not the environment.
    std::fs::write(
        file.path(),
        "[bus.kafka.options]\n\"sasl.password\" = \"kafka-sasl-pass\"\n\"sasl.username\" = \"pipeline-user\"\n\
         [pipeline]\nlake_url = \"s3://lake-bucket/prod\"\n\
         [pipeline.lake_options]\naws_secret_access_key = \"s3-secret-value\"\naws_endpoint = \"http://minio:9000\"\n",
    )
    .unwrap();
    let shown = env.cli(&["--config", file.path().to_str().unwrap(), "config"]);
    for secret in [
        "hunter2-clickhouse",
        "jwt-secret-value",
        "smtp-pass",
        "default-key-value",
        "kafka-sasl-pass",
        "llm-key-value",
        "s3-secret-value",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(shown.contains("jwt_secret = \"<redacted>\""), "{shown}");
    assert!(
        shown.contains("default_api_key = \"<redacted>\""),
        "{shown}"
    );
    assert!(
        shown.contains("\"sasl.password\" = \"<redacted>\""),
        "{shown}"
    );
    // Options that are not secrets stay readable.
    assert!(
        shown.contains("\"sasl.username\" = \"pipeline-user\""),
        "{shown}"
    );
    assert!(
        shown.contains("aws_secret_access_key = \"<redacted>\""),
        "{shown}"
    );
    assert!(
        shown.contains("aws_endpoint = \"http://minio:9000\""),
        "{shown}"
    );
    assert!(
        shown.contains("smtp://mailer:redacted@relay:587"),
        "{shown}"
    );
}

#[test]
fn generator_is_seeded_and_reports_ground_truth() {
    let env = Env::new();
    let a = env.cli(&[
        "gen",
        "--tenants",
        "acme",
        "--rows",
        "500",
        "--seed",
        "9",
        "--start",
        "2026-11-26T00:00:00Z",
    ]);
    let b = env.cli(&[
        "gen",
        "--tenants",
        "acme",
        "--rows",
        "500",
        "--seed",
        "9",
        "--start",
        "2026-11-26T00:00:00Z",
    ]);
    assert_eq!(a, b);
    assert_eq!(a.lines().count(), 500);
    let (dir, manifest) = env.generate("acme,globex", 1000, 3);
    let injected: u64 = manifest["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(manifest["total_rows"].as_u64().unwrap(), 1000 + injected);
    for t in ["acme", "globex"] {
        let lines = std::fs::read_to_string(dir.join(format!("{t}.ndjson")))
            .unwrap()
            .lines()
            .count() as u64;
        assert_eq!(lines, manifest["rows_per_tenant"][t].as_u64().unwrap());
    }
    let syslog = env.cli(&["gen", "--rows", "3", "--format", "rfc5424"]);
    assert!(
        syslog
            .lines()
            .all(|l| l.starts_with('<') && l.contains(">1 20")),
        "{syslog}"
    );
}

#[test]
fn shipped_example_configuration_is_valid() {
    let root = crate::support::repo_path("");
    let env = Env::new();
    let shown = env.cli(&[
        "--config",
        &format!("{root}/deploy/securenet.example.toml"),
        "config",
    ]);
    assert!(shown.contains("max_in_flight_bytes = 268435456"), "{shown}");
    // Every variable documented in .env.example is accepted.
    let example = std::fs::read_to_string(format!("{root}/.env.example")).unwrap();
    let mut env = Env::new();
    for line in example.lines() {
        let Some(assignment) = line.strip_prefix("# SECURENET_") else {
            continue;
        };
        let (name, value) = assignment.split_once('=').unwrap();
        let value = value.split_whitespace().next().unwrap_or("");
        if name == "CONFIG" || value.is_empty() {
            continue;
        }
        env = env.set(&format!("SECURENET_{name}"), value);
    }
    env = env.set("SECURENET_HTTP__LISTEN", "127.0.0.1:0");
    env.cli(&["config"]);
}
