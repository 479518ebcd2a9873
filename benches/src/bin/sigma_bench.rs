//! Sigma rule throughput, single thread: generated logs (the `securenet
//! gen` generator, attacks injected) through a [`RuleSet`] of RULES rules of
//! mixed forms, against a scan of the same columns in the same run; medians
//! over RUNS, as JSON on stdout.
//!
//!     sigma_bench ROWS RULES RUNS OUT_DIR       # INDICATORS=10000 by default
//!
//! Beside the rules, INDICATORS threat-intel indicators (addresses, CIDR
//! ranges, domains, URLs, hashes; 50 of the addresses occur in the data)
//! are matched alone and together with the rules (`detectors::intel`).
//!
//! Writes OUT_DIR/rules/*.yml (the rules), OUT_DIR/logs.ndjson (the rows:
//! message, host, app, source_ip, severity) and OUT_DIR/counts.json (rows
//! matched per rule file) so benches/python/sigma_duckdb.py can run the
//! same rules, converted by pySigma, in DuckDB over the same rows and check
//! the counts.
//!
//! The rules are generated from a vocabulary of what security teams look
//! for in Linux, web and firewall logs, in every form the engine compiles
//! differently: keywords, `contains` (single and lists, `all`),
//! `startswith`/`endswith`, exact values with `and not`, globs with inner
//! wildcards, `re`, `cidr`, numeric comparisons and `1 of`. 40 of the 100
//! match something in the generated data; the others look for what is not
//! there (most rules, most of the time).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt8Type;
use detectors::intel::{IndicatorSet, IntelList, indicator};
use detectors::sigma::{FieldMap, Level, Rule, RuleSet};
use ingest::testdata::{GenConfig, Generator};
use schemas::{LogBatchBuilder, LogRecord, RecordKind, TenantId};

const BATCH: usize = 8192;

/// `count` indicators: 40% addresses (50 of them taken from the data's
/// `source_ip`), 10% CIDR ranges, 30% domains, 10% URLs, 10% hashes; the
/// rest of them absent from the data, as most indicators are.
fn indicators(data: &[RecordBatch], count: usize) -> anyhow::Result<IndicatorSet> {
    let mut present: Vec<String> = Vec::new();
    for b in data {
        for ip in text(b, "source_ip")?.iter().flatten() {
            if present.len() < 50 && !present.iter().any(|p| p == ip) {
                present.push(ip.to_string());
            }
        }
    }
    // A deterministic spread of values (no RNG needed for a fixed mix).
    let mut values: Vec<String> = present;
    let mut n: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        n
    };
    while values.len() < count * 4 / 10 {
        let v = next();
        values.push(format!(
            "{}.{}.{}.{}",
            1 + v % 223,
            (v >> 8) % 256,
            (v >> 16) % 256,
            (v >> 24) % 256
        ));
    }
    while values.len() < count / 2 {
        let v = next();
        values.push(format!(
            "{}.{}.{}.0/24",
            1 + v % 223,
            (v >> 8) % 256,
            (v >> 16) % 256
        ));
    }
    while values.len() < count * 8 / 10 {
        let v = next();
        values.push(format!("c2-{:x}.bad-{}.example", v, v % 977));
    }
    while values.len() < count * 9 / 10 {
        let v = next();
        values.push(format!("https://phish-{:x}.example/login", v));
    }
    while values.len() < count {
        let (a, b) = (next(), next());
        values.push(format!("{a:016x}{b:016x}{a:016x}{b:016x}"));
    }
    let list = IntelList {
        name: "bench".into(),
        level: Level::High,
        indicators: values
            .iter()
            .map(|v| {
                indicator(None, v).map(|(kind, value)| detectors::intel::Indicator {
                    kind,
                    value,
                    expires_at: None,
                    description: None,
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!(e))?,
    };
    IndicatorSet::compile(vec![Arc::new(list)], 0).map_err(|e| anyhow::anyhow!(e))
}

/// Tokens that occur in the generated logs.
const PRESENT: &[&str] = &[
    "Failed password",
    "invalid user",
    "UFW BLOCK",
    "DPT=3389",
    "DPT=23",
    "payment gateway returned 502",
    "upstream timed out",
    "Accepted publickey",
    "COMMAND=/usr/bin/apt-get",
    "run-parts",
];
/// Tokens security teams search for that the generated logs lack.
const ABSENT: &[&str] = &[
    "mimikatz",
    "sekurlsa::logonpasswords",
    "certutil -urlcache",
    "Invoke-Expression",
    "/etc/shadow",
    "nc -e /bin/sh",
    "bash -i >& /dev/tcp/",
    "chmod 4755",
    "useradd -o -u 0",
    "history -c",
    "rm -rf /var/log",
    "wget http://",
    "python -c 'import pty",
    "base64 -d | sh",
    "iptables -F",
    "setenforce 0",
    "crontab -r",
    "ssh-keygen -R",
    "authorized_keys",
    "/tmp/.X11-unix/.x",
    "xmrig",
    "stratum+tcp://",
    "kinsing",
    "masscan",
    "sqlmap",
    "nikto",
    "UNION SELECT",
    "../../etc/passwd",
    "<script>",
    "${jndi:ldap://",
];

fn rule(n: usize, title: &str, level: &str, detection: &str) -> String {
    format!(
        "title: {title}\nid: 5e1c0000-0000-4000-8000-{n:012}\nstatus: test\nlevel: {level}\n\
         logsource:\n  product: linux\ndetection:\n{detection}"
    )
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `count` rules of mixed forms.
fn rules(count: usize) -> Vec<String> {
    let levels = ["low", "medium", "high", "critical"];
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let p = PRESENT[n % PRESENT.len()];
        let a = ABSENT[n % ABSENT.len()];
        let b = ABSENT[(n * 7 + 3) % ABSENT.len()];
        let level = levels[n % levels.len()];
        let detection = match n % 10 {
            0 => format!(
                "  keywords:\n    - {}\n    - {}\n  condition: keywords\n",
                quote(a),
                quote(b)
            ),
            1 => format!(
                "  sel:\n    message|contains: {}\n  condition: sel\n",
                quote(if n % 20 == 1 { p } else { a })
            ),
            2 => format!(
                "  sel:\n    message|contains|all:\n      - {}\n      - {}\n  condition: sel\n",
                quote(p),
                quote(if n % 20 == 2 { "port" } else { b })
            ),
            3 => format!(
                "  sel:\n    app: sshd\n    message|startswith: {}\n  filter:\n    message|contains: {}\n  condition: sel and not filter\n",
                quote(if n % 20 == 3 { "Failed" } else { a }),
                quote(b)
            ),
            4 => format!(
                "  sel:\n    message|endswith: {}\n  condition: sel\n",
                quote(if n % 20 == 4 { "ssh2" } else { a })
            ),
            5 => format!(
                "  sel:\n    message|contains: '{}*{}'\n  condition: sel\n",
                if n % 20 == 5 { "TTY=pts/" } else { "connect" },
                if n % 20 == 5 {
                    "COMMAND=/usr/bin/systemctl"
                } else {
                    "refused by policy"
                }
            ),
            6 => format!(
                "  sel:\n    message|re: {}\n  condition: sel\n",
                quote(if n % 20 == 6 {
                    r"SPT=\d+ DPT=(23|3389) "
                } else {
                    r"(?:xmr|monero)[a-z]*\.(?:pool|org)"
                })
            ),
            7 => format!(
                "  sel:\n    source_ip|cidr: {}\n    app: {}\n  condition: sel\n",
                quote(if n % 20 == 7 {
                    "203.0.113.0/24"
                } else {
                    "100.64.0.0/10"
                }),
                if n % 20 == 7 { "kernel" } else { "sshd" }
            ),
            8 => format!(
                "  sel:\n    severity|lte: {}\n    message|contains: {}\n  condition: sel\n",
                if n % 20 == 8 { 3 } else { 1 },
                quote(if n % 20 == 8 { "failed" } else { a })
            ),
            _ => format!(
                "  selection_a:\n    message|contains: {}\n  selection_b:\n    message|startswith: {}\n  selection_c:\n    app|endswith: {}\n  condition: 1 of selection_*\n",
                quote(a),
                quote(b),
                quote(if n % 20 == 9 { "RON" } else { "-miner" })
            ),
        };
        out.push(rule(
            n + 1,
            &format!("bench rule {} ({})", n + 1, n % 10),
            level,
            &detection,
        ));
    }
    out
}

fn batches(rows: usize) -> anyhow::Result<Vec<RecordBatch>> {
    let tenant = TenantId::new("bench")?;
    let generator = Generator::new(GenConfig {
        seed: 11,
        tenants: vec![tenant.clone()],
        rows,
        anomalies: rows / 20_000,
        start_ms: 1_795_651_200_000,
        duration_ms: 86_400_000,
    });
    let mut out = Vec::new();
    let mut b = LogBatchBuilder::with_capacity(BATCH);
    for e in generator {
        b.append(&LogRecord {
            ts_ms: e.ts_ms,
            received_ms: e.ts_ms,
            host: Some(e.host),
            app: Some(e.app.to_string()),
            pid: Some(e.pid.to_string()),
            severity: Some(e.severity),
            facility: Some(e.facility),
            bytes: e.message.len() as u32,
            message: e.message,
            source_ip: e.source_ip,
            input: "http",
            ..Default::default()
        });
        if b.len() == BATCH {
            let full = std::mem::replace(&mut b, LogBatchBuilder::with_capacity(BATCH));
            out.push(full.finish(&tenant, uuid::Uuid::now_v7())?);
        }
    }
    if !b.is_empty() {
        out.push(b.finish(&tenant, uuid::Uuid::now_v7())?);
    }
    Ok(out)
}

/// A string column of a logs batch.
fn text<'a>(b: &'a RecordBatch, name: &str) -> anyhow::Result<&'a arrow::array::StringArray> {
    b.column_by_name(name)
        .and_then(|c| c.as_string_opt::<i32>())
        .ok_or_else(|| anyhow::anyhow!("logs batch without a text column {name}"))
}

/// The `severity` column of a logs batch.
fn severity(b: &RecordBatch) -> anyhow::Result<&arrow::array::UInt8Array> {
    b.column_by_name("severity")
        .and_then(|c| c.as_primitive_opt::<UInt8Type>())
        .ok_or_else(|| anyhow::anyhow!("logs batch without severity"))
}

/// Touches every value of the columns the rules read (the floor).
fn scan(batches: &[RecordBatch]) -> anyhow::Result<u64> {
    let mut sum = 0u64;
    for b in batches {
        let msg = text(b, "message")?;
        let app = text(b, "app")?;
        let src = text(b, "source_ip")?;
        let sev = severity(b)?;
        for i in 0..b.num_rows() {
            sum = sum
                .wrapping_add(msg.value(i).bytes().map(u64::from).sum::<u64>())
                .wrapping_add(app.value(i).len() as u64)
                .wrapping_add(u64::from(sev.value(i)));
            if src.is_valid(i) {
                sum = sum.wrapping_add(src.value(i).len() as u64);
            }
        }
    }
    Ok(sum)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn write_ndjson(batches: &[RecordBatch], path: &std::path::Path) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for b in batches {
        let msg = text(b, "message")?;
        let host = text(b, "host")?;
        let app = text(b, "app")?;
        let src = text(b, "source_ip")?;
        let sev = severity(b)?;
        for i in 0..b.num_rows() {
            let line = serde_json::json!({
                "message": msg.value(i),
                "host": host.value(i),
                "app": app.value(i),
                "source_ip": src.is_valid(i).then(|| src.value(i)),
                "severity": sev.value(i),
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 5,
        "usage: sigma_bench ROWS RULES RUNS OUT_DIR"
    );
    let rows: usize = args[1].parse()?;
    let rule_count: usize = args[2].parse()?;
    let runs: usize = args[3].parse()?;
    let dir = PathBuf::from(&args[4]);
    std::fs::create_dir_all(dir.join("rules"))?;

    let texts = rules(rule_count);
    let mut parsed = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        std::fs::write(dir.join("rules").join(format!("r{:03}.yml", i + 1)), text)?;
        parsed.push(Arc::new(
            Rule::parse(text).map_err(|e| anyhow::anyhow!("rule {}: {e}", i + 1))?,
        ));
    }
    let compile_started = Instant::now();
    let set = RuleSet::compile(
        parsed,
        &FieldMap::default(),
        schemas::schema::schema(RecordKind::Logs),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let compile_ms = compile_started.elapsed().as_secs_f64() * 1e3;
    let data = batches(rows)?;
    let total: usize = data.iter().map(RecordBatch::num_rows).sum();
    let bytes = data.iter().try_fold(0usize, |n, b| {
        anyhow::Ok(n + text(b, "message")?.value_data().len())
    })?;
    write_ndjson(&data, &dir.join("logs.ndjson"))?;

    let mut counts = vec![0u64; rule_count];
    for b in &data {
        for m in set.evaluate(b)? {
            counts[m.rule] += m.rows.len() as u64;
        }
    }
    let by_file: serde_json::Map<String, serde_json::Value> = counts
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("r{:03}.yml", i + 1), serde_json::json!(c)))
        .collect();
    std::fs::write(
        dir.join("counts.json"),
        serde_json::to_vec_pretty(&by_file)?,
    )?;

    let (mut scan_s, mut rules_s) = (Vec::new(), Vec::new());
    let mut checksum = 0u64;
    for _ in 0..runs {
        let t = Instant::now();
        checksum = checksum.wrapping_add(scan(&data)?);
        scan_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut hits = 0usize;
        for b in &data {
            hits += set.evaluate(b)?.iter().map(|m| m.rows.len()).sum::<usize>();
        }
        rules_s.push(t.elapsed().as_secs_f64());
        checksum = checksum.wrapping_add(hits as u64);
    }
    let indicator_count: usize = std::env::var("INDICATORS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(10_000);
    let intel = indicators(&data, indicator_count)?;
    let intel_hits: usize = data
        .iter()
        .map(|b| intel.matches(b).map(|h| h.len()))
        .sum::<Result<usize, _>>()?;
    let (mut intel_s, mut both_s) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let mut hits = 0usize;
        for b in &data {
            hits += intel.matches(b)?.len();
        }
        intel_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for b in &data {
            hits += set.evaluate(b)?.iter().map(|m| m.rows.len()).sum::<usize>();
            hits += intel.matches(b)?.len();
        }
        both_s.push(t.elapsed().as_secs_f64());
        checksum = checksum.wrapping_add(hits as u64);
    }
    let (intel_m, both_m) = (median(intel_s), median(both_s));
    let (scan_m, rules_m) = (median(scan_s), median(rules_s));
    let matching = counts.iter().filter(|c| **c > 0).count();
    println!(
        "{}",
        serde_json::json!({
            "rows": total,
            "rules": rule_count,
            "rules_matching_something": matching,
            "rows_matched": counts.iter().sum::<u64>(),
            "message_bytes": bytes,
            "runs": runs,
            "compile_ms": (compile_ms * 10.0).round() / 10.0,
            "baseline_scan": {"median_s": scan_m, "rows_per_s": (total as f64 / scan_m).round()},
            "sigma_rules": {"median_s": rules_m, "rows_per_s": (total as f64 / rules_m).round(),
                            "mb_per_s": (bytes as f64 / rules_m / 1e6 * 10.0).round() / 10.0},
            "rules_vs_scan": ((scan_m / rules_m) * 1000.0).round() / 1000.0,
            "indicators": {"count": intel.len(), "rows_matched": intel_hits, "median_s": intel_m,
                           "rows_per_s": (total as f64 / intel_m).round()},
            "rules_and_indicators": {"median_s": both_m, "rows_per_s": (total as f64 / both_m).round()},
            "checksum": checksum,
        })
    );
    Ok(())
}
