//! Every modifier and condition form, each with lines that must match and
//! lines that must not. (The end-to-end suite compares the same rules'
//! matches with pySigma's DuckDB conversion.)

use std::sync::Arc;

use arrow::array::RecordBatch;
use schemas::{LogBatchBuilder, LogRecord, RecordKind, TenantId};

use super::*;

#[derive(Default, Clone)]
struct Line {
    message: &'static str,
    host: Option<&'static str>,
    app: Option<&'static str>,
    source_ip: Option<&'static str>,
    severity: Option<u8>,
    sd: Option<&'static str>,
}

fn msg(message: &'static str) -> Line {
    Line {
        message,
        ..Default::default()
    }
}

fn batch(lines: &[Line]) -> RecordBatch {
    let tenant = TenantId::new("acme").unwrap();
    let mut b = LogBatchBuilder::with_capacity(lines.len());
    for l in lines {
        b.append(&LogRecord {
            ts_ms: 1_795_687_200_000,
            received_ms: 1_795_687_200_000,
            host: l.host.map(String::from),
            app: l.app.map(String::from),
            severity: l.severity,
            message: l.message.to_string(),
            source_ip: l.source_ip.map(String::from),
            structured_data: l.sd.map(String::from),
            input: "test",
            ..Default::default()
        });
    }
    b.finish(&tenant, uuid::Uuid::now_v7()).unwrap()
}

fn rule(detection: &str) -> String {
    format!(
        "title: t\nid: 6f2b0f0e-0000-4000-8000-000000000001\nlevel: high\nlogsource:\n  product: linux\ndetection:\n{detection}"
    )
}

/// Rows of `lines` the rule matches.
fn matches(yaml: &str, lines: &[Line]) -> Vec<u32> {
    let parsed = Rule::parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let set = RuleSet::compile(
        vec![Arc::new(parsed)],
        &FieldMap::default(),
        schemas::schema::schema(RecordKind::Logs),
    )
    .unwrap();
    let out = set.evaluate(&batch(lines)).unwrap();
    out.into_iter().flat_map(|m| m.rows).collect()
}

fn check(detection: &str, lines: &[Line], expected: &[u32]) {
    let yaml = rule(detection);
    assert_eq!(matches(&yaml, lines), expected, "{detection}");
}

#[test]
fn keywords_match_the_message_in_any_case() {
    check(
        "  keywords:\n    - 'Failed password'\n    - 'Invalid user'\n  condition: keywords\n",
        &[
            msg("sshd[1]: failed password for root from 10.0.0.1"),
            msg("sshd[1]: Accepted password for root"),
            msg("INVALID USER admin from 10.0.0.2"),
        ],
        &[0, 2],
    );
}

#[test]
fn plain_values_are_whole_value_matches_with_wildcards() {
    let lines = [
        Line {
            app: Some("sshd"),
            ..msg("a")
        },
        Line {
            app: Some("SSHD"),
            ..msg("b")
        },
        Line {
            app: Some("sshd-session"),
            ..msg("c")
        },
        msg("d"),
    ];
    check("  sel:\n    app: sshd\n  condition: sel\n", &lines, &[0, 1]);
    check(
        "  sel:\n    app: 'ssh*'\n  condition: sel\n",
        &lines,
        &[0, 1, 2],
    );
    check(
        "  sel:\n    app: 's?hd'\n  condition: sel\n",
        &lines,
        &[0, 1],
    );
    check(
        "  sel:\n    app|cased: sshd\n  condition: sel\n",
        &lines,
        &[0],
    );
    check("  sel:\n    app: null\n  condition: sel\n", &lines, &[3]);
    check(
        "  sel:\n    app|exists: true\n  condition: sel\n",
        &lines,
        &[0, 1, 2],
    );
    check(
        "  sel:\n    app|exists: false\n  condition: sel\n",
        &lines,
        &[3],
    );
    check(
        "  sel:\n    app: '*'\n  condition: sel\n",
        &lines,
        &[0, 1, 2],
    );
}

#[test]
fn contains_startswith_endswith_and_all() {
    let lines = [
        msg("powershell -enc SQBFAFgA"),
        msg("cmd.exe /c whoami"),
        msg("whoami /all"),
        msg("nothing here"),
    ];
    check(
        "  sel:\n    message|contains: whoami\n  condition: sel\n",
        &lines,
        &[1, 2],
    );
    check(
        "  sel:\n    message|startswith: whoami\n  condition: sel\n",
        &lines,
        &[2],
    );
    check(
        "  sel:\n    message|endswith: WHOAMI\n  condition: sel\n",
        &lines,
        &[1],
    );
    check(
        "  sel:\n    message|contains|all:\n      - cmd\n      - whoami\n  condition: sel\n",
        &lines,
        &[1],
    );
    check(
        "  sel:\n    message|contains:\n      - cmd\n      - enc\n  condition: sel\n",
        &lines,
        &[0, 1],
    );
    // A literal star needs its escape; the backslash before other
    // characters stays.
    check(
        "  sel:\n    message|contains: 'a\\*b'\n  condition: sel\n",
        &[msg("x a*b y"), msg("x ab y")],
        &[0],
    );
    check(
        "  sel:\n    message|endswith: '\\cmd.exe'\n  condition: sel\n",
        &[msg("C:\\Windows\\System32\\cmd.exe"), msg("cmd.exe")],
        &[0],
    );
}

#[test]
fn regular_expressions_are_case_sensitive_unless_i() {
    let lines = [
        msg("user=Root uid=0"),
        msg("user=root uid=0"),
        msg("uid=1000"),
    ];
    check(
        "  sel:\n    message|re: 'user=r[o]+t'\n  condition: sel\n",
        &lines,
        &[1],
    );
    check(
        "  sel:\n    message|re|i: '^USER=R'\n  condition: sel\n",
        &lines,
        &[0, 1],
    );
    let e = Rule::parse(&rule(
        "  sel:\n    message|re: '(?<=a)b'\n  condition: sel\n",
    ))
    .unwrap_err();
    assert!(e.0.contains("regular expression"), "{e}");
}

#[test]
fn cidr_matches_v4_and_v6_addresses() {
    let ip = |a: &'static str| Line {
        source_ip: Some(a),
        ..msg("x")
    };
    check(
        "  sel:\n    source_ip|cidr:\n      - 10.0.0.0/8\n      - 'fd00::/8'\n  condition: sel\n",
        &[
            ip("10.1.2.3"),
            ip("11.0.0.1"),
            ip("fd12::1"),
            ip("not an ip"),
            msg("none"),
        ],
        &[0, 2],
    );
    // The taxonomy's names reach the same column.
    check(
        "  sel:\n    c-ip|cidr: 192.168.0.0/16\n  condition: sel\n",
        &[ip("192.168.4.4"), ip("10.0.0.1")],
        &[0],
    );
}

#[test]
fn base64_base64offset_and_windash() {
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let a = format!("powershell -e {}", enc("IEX (New-Object Net.WebClient)"));
    let b = format!("powershell -e {}", enc("xyIEX (New-Object Net.WebClient)"));
    let c = format!("powershell -e {}", enc("Get-Date"));
    let lines: Vec<Line> = [a, b, c]
        .into_iter()
        .map(|s| msg(Box::leak(s.into_boxed_str())))
        .collect();
    check(
        "  sel:\n    message|base64offset|contains: 'IEX (New-Object'\n  condition: sel\n",
        &lines,
        &[0, 1],
    );
    let exact =
        "  sel:\n    message|base64|contains: 'IEX (New-Object Net.WebClient)'\n  condition: sel\n";
    check(exact, &lines, &[0]);
    check(
        "  sel:\n    message|windash|contains: ' -encodedcommand '\n  condition: sel\n",
        &[
            msg("powershell.exe -EncodedCommand AAAA"),
            msg("powershell.exe /encodedcommand AAAA"),
            msg("powershell.exe \u{2013}encodedcommand AAAA"),
            msg("powershell.exe encodedcommand AAAA"),
        ],
        &[0, 1, 2],
    );
}

#[test]
fn numeric_comparisons() {
    let sev = |s: u8| Line {
        severity: Some(s),
        ..msg("x")
    };
    let lines = [sev(0), sev(3), sev(4), sev(7), msg("none")];
    check(
        "  sel:\n    severity|lte: 3\n  condition: sel\n",
        &lines,
        &[0, 1],
    );
    check(
        "  sel:\n    severity|gt: 3\n  condition: sel\n",
        &lines,
        &[2, 3],
    );
    check(
        "  sel:\n    severity|lt: 0\n  condition: sel\n",
        &lines,
        &[],
    );
    check(
        "  sel:\n    severity|gte: 7\n  condition: sel\n",
        &lines,
        &[3],
    );
    check("  sel:\n    severity: 4\n  condition: sel\n", &lines, &[2]);
}

#[test]
fn json_fields_from_structured_data_and_webserver_names() {
    let web = |sd: &'static str| Line {
        sd: Some(sd),
        ..msg("GET")
    };
    let lines = [
        web(r#"{"method":"GET","path":"/etc/passwd","status":404,"user_agent":"sqlmap/1.7"}"#),
        web(r#"{"method":"POST","url":"/login","status":200}"#),
        web(r#"{"http":{"request":{"method":"PUT"}},"status":"500"}"#),
        web("not json"),
        msg("none"),
    ];
    check(
        "  sel:\n    c-uri|contains: '/etc/passwd'\n  condition: sel\n",
        &lines,
        &[0],
    );
    check(
        "  sel:\n    cs-method: post\n  condition: sel\n",
        &lines,
        &[1],
    );
    check(
        "  sel:\n    http.request.method: PUT\n  condition: sel\n",
        &lines,
        &[2],
    );
    check(
        "  sel:\n    sc-status|gte: 400\n  condition: sel\n",
        &lines,
        &[0, 2],
    );
    check(
        "  sel:\n    c-useragent|startswith: sqlmap\n  condition: sel\n",
        &lines,
        &[0],
    );
    check("  sel:\n    status: 200\n  condition: sel\n", &lines, &[1]);
}

#[test]
fn conditions_combine_searches() {
    let lines = [
        Line {
            app: Some("sshd"),
            ..msg("Failed password for root")
        },
        Line {
            app: Some("sshd"),
            ..msg("Failed password for alice")
        },
        Line {
            app: Some("su"),
            ..msg("Failed password for root")
        },
        Line {
            app: Some("sshd"),
            ..msg("Accepted password for root")
        },
    ];
    let searches = "  selection_app:\n    app: sshd\n  selection_fail:\n    message|contains: failed\n  filter_root:\n    message|contains: root\n";
    let cases: [(&str, &[u32]); 7] = [
        ("selection_app and selection_fail", &[0, 1]),
        ("selection_app and selection_fail and not filter_root", &[1]),
        (
            "selection_fail and not (selection_app and filter_root)",
            &[1, 2],
        ),
        ("1 of selection_*", &[0, 1, 2, 3]),
        ("all of selection_*", &[0, 1]),
        ("all of them", &[0]),
        ("1 of them and not selection_app", &[2]),
    ];
    for (condition, expected) in cases {
        check(
            &format!("{searches}  condition: {condition}\n"),
            &lines,
            expected,
        );
    }
    // A list of maps is any of them; a list of conditions is any of them.
    check(
        "  sel:\n    - app: su\n    - message|contains: alice\n  condition: sel\n",
        &lines,
        &[1, 2],
    );
    check(
        &format!(
            "{searches}  condition:\n    - selection_app and filter_root\n    - not selection_app\n"
        ),
        &lines,
        &[0, 2, 3],
    );
}

#[test]
fn a_missing_field_makes_not_hold() {
    let lines = [
        Line {
            host: Some("web1"),
            ..msg("x")
        },
        msg("x"),
    ];
    check(
        "  sel:\n    message: x\n  filter:\n    host: web1\n  condition: sel and not filter\n",
        &lines,
        &[1],
    );
}

#[test]
fn unsupported_constructs_are_refused_by_name() {
    for (detection_or_rule, says) in [
        (
            "  sel:\n    message|wide|base64: x\n  condition: sel\n",
            "modifier 'wide'",
        ),
        (
            "  sel:\n    message|expand: '%x%'\n  condition: sel\n",
            "modifier 'expand'",
        ),
        (
            "  sel:\n    message: x\n  condition: sel | count() > 5\n",
            "aggregations",
        ),
        (
            "  sel:\n    message: x\n  timeframe: 5m\n  condition: sel\n",
            "timeframe",
        ),
        (
            "  sel:\n    message|re|contains: x\n  condition: sel\n",
            "cannot be combined",
        ),
        (
            "  sel:\n    message|cidr: 10.0.0.0/33\n  condition: sel\n",
            "not a CIDR",
        ),
        (
            "  sel:\n    message|gt: many\n  condition: sel\n",
            "takes a number",
        ),
        (
            "  sel:\n    message|base64: 'a*'\n  condition: sel\n",
            "wildcards",
        ),
        (
            "  sel:\n    message: x\n  condition: other\n",
            "no search named 'other'",
        ),
        (
            "  sel:\n    - a\n    - k: v\n  condition: sel\n",
            "only maps",
        ),
    ] {
        let e = Rule::parse(&rule(detection_or_rule)).unwrap_err();
        assert!(e.0.contains(says), "{detection_or_rule}: {e}");
    }
    let correlation = "title: c\ncorrelation:\n  type: event_count\n  rules: [a]\n  timespan: 5m\n";
    assert!(
        Rule::parse(correlation)
            .unwrap_err()
            .0
            .contains("correlation")
    );
    assert!(
        Rule::parse("title: x\n---\ntitle: y\n")
            .unwrap_err()
            .0
            .contains("multi-document")
    );
    assert!(Rule::parse("- a\n- b\n").unwrap_err().0.contains("mapping"));
    assert!(Rule::parse(": : :").is_err());
}

#[test]
fn metadata_is_kept() {
    let r = Rule::parse(
        "title: SSH brute force\nid: 1b7c3b4e-0000-4000-8000-000000000002\nstatus: test\nlevel: critical\n\
         tags:\n  - attack.credential_access\n  - attack.t1110\nlogsource:\n  product: linux\n  service: sshd\n\
         detection:\n  k:\n    - failed\n  condition: k\n",
    )
    .unwrap();
    assert_eq!(r.title, "SSH brute force");
    assert_eq!(r.level, Level::Critical);
    assert_eq!(r.tags, ["attack.credential_access", "attack.t1110"]);
    assert_eq!(r.logsource.service.as_deref(), Some("sshd"));
    assert_eq!(
        r.id.as_deref(),
        Some("1b7c3b4e-0000-4000-8000-000000000002")
    );
}

#[test]
fn rules_share_leaves_and_report_each_its_own_rows() {
    let parse = |d: &str| Arc::new(Rule::parse(&rule(d)).unwrap());
    let set = RuleSet::compile(
        vec![
            parse("  k:\n    - failed\n  condition: k\n"),
            parse("  s:\n    message|contains: failed\n    app: sshd\n  condition: s\n"),
            parse("  s:\n    message|contains: nothing-matches-this\n  condition: s\n"),
        ],
        &FieldMap::default(),
        schemas::schema::schema(RecordKind::Logs),
    )
    .unwrap();
    let out = set
        .evaluate(&batch(&[
            Line {
                app: Some("sshd"),
                ..msg("Failed password")
            },
            msg("failed too"),
        ]))
        .unwrap();
    assert_eq!(
        out,
        vec![
            RuleMatches {
                rule: 0,
                rows: vec![0, 1]
            },
            RuleMatches {
                rule: 1,
                rows: vec![0]
            },
        ]
    );
}

#[test]
fn logsource_selects_the_records_a_rule_sees() {
    let lines = [
        Line {
            app: Some("sshd"),
            ..msg("Failed password for root from 203.0.113.9")
        },
        Line {
            app: Some("sshd-session"),
            ..msg("Failed password for admin from 203.0.113.9")
        },
        // Same words from another program: not an sshd event.
        Line {
            app: Some("myapp"),
            ..msg("test fixture: Failed password for root")
        },
        Line {
            sd: Some(r#"{"method":"GET","url":"/login","status":401}"#),
            ..msg("GET /login Failed password")
        },
        Line {
            app: Some("nginx"),
            ..msg("POST /login 401 Failed password")
        },
    ];
    let detection = "  keywords: 'Failed password'\n  condition: keywords\n";
    let with = |logsource: &str| {
        format!(
            "title: t\nid: 6f2b0f0e-0000-4000-8000-000000000002\nlogsource:\n{logsource}detection:\n{detection}"
        )
    };
    let sshd = with("  product: linux\n  service: sshd\n");
    assert_eq!(matches(&sshd, &lines), [0, 1]);
    let web = with("  category: webserver\n");
    assert_eq!(matches(&web, &lines), [3, 4]);
    // Terms the map does not know narrow nothing.
    let windows = with("  product: windows\n  service: security\n");
    assert_eq!(matches(&windows, &lines), [0, 1, 2, 3, 4]);

    // Configured: another term, a replaced one, one made to narrow nothing.
    let overrides = std::collections::BTreeMap::from([
        ("product:windows".to_string(), "{app: myapp}".to_string()),
        ("Category:Webserver".to_string(), String::new()),
    ]);
    let map = FieldMap::default().with_logsources(&overrides).unwrap();
    let eval = |yaml: &str| {
        let set = RuleSet::compile(
            vec![Arc::new(Rule::parse(yaml).unwrap())],
            &map,
            schemas::schema::schema(RecordKind::Logs),
        )
        .unwrap();
        let out = set.evaluate(&batch(&lines)).unwrap();
        out.into_iter().flat_map(|m| m.rows).collect::<Vec<u32>>()
    };
    assert_eq!(eval(&windows), [2]);
    assert_eq!(eval(&web), [0, 1, 2, 3, 4]);
    for bad in [("linux", "{app: x}"), ("service:x", "{app: [x")] {
        let o = std::collections::BTreeMap::from([(bad.0.to_string(), bad.1.to_string())]);
        let err = FieldMap::default().with_logsources(&o).unwrap_err().0;
        assert!(err.contains(bad.0), "{err}");
    }
}

#[test]
fn the_auth_service_is_the_auth_and_authpriv_facilities() {
    let tenant = TenantId::new("acme").unwrap();
    let mut b = LogBatchBuilder::with_capacity(3);
    for facility in [4u8, 10, 3] {
        b.append(&LogRecord {
            ts_ms: 1_795_687_200_000,
            received_ms: 1_795_687_200_000,
            facility: Some(facility),
            message: "session opened for user root".into(),
            input: "test",
            ..Default::default()
        });
    }
    let batch = b.finish(&tenant, uuid::Uuid::now_v7()).unwrap();
    let yaml = "title: t\nlogsource:\n  product: linux\n  service: auth\ndetection:\n  k: 'session opened'\n  condition: k\n";
    let set = RuleSet::compile(
        vec![Arc::new(Rule::parse(yaml).unwrap())],
        &FieldMap::default(),
        schemas::schema::schema(RecordKind::Logs),
    )
    .unwrap();
    let rows: Vec<u32> = set
        .evaluate(&batch)
        .unwrap()
        .into_iter()
        .flat_map(|m| m.rows)
        .collect();
    assert_eq!(rows, [0, 1]);
}
