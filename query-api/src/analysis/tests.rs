use super::summary::*;
use super::threat::*;
use super::*;

fn risk(findings: &[(&str, i64)], anomalies: i64, auth_failures: i64) -> EntityRisk {
    let mut r = EntityRisk {
        entity: "web-1".into(),
        anomalies,
        auth_failures,
        findings: findings.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        ..Default::default()
    };
    r.score();
    r
}

#[test]
fn risk_adds_its_documented_points_and_says_why() {
    // 20·critical + 10·high + 3·medium + 8·anomalies + failures/5 (≤ 30).
    let r = risk(
        &[("critical", 1), ("high", 1), ("medium", 2), ("low", 9)],
        1,
        52,
    );
    assert_eq!(r.risk_score, 20 + 10 + 6 + 8 + 10);
    assert_eq!(r.risk_level, "high");
    assert_eq!(r.reasons.len(), 5, "{:?}", r.reasons);
    assert!(r.reasons[0].starts_with("+20: 1 critical"));
    // Low findings and a handful of failures add nothing.
    let quiet = risk(&[("low", 9)], 0, 4);
    assert_eq!((quiet.risk_score, quiet.risk_level), (0, "low"));
    assert!(quiet.reasons.is_empty());
}

#[test]
fn risk_caps_failures_at_30_and_the_score_at_100() {
    assert_eq!(risk(&[], 0, 1_000_000).risk_score, 30);
    let worst = risk(&[("critical", 10)], 50, 1_000);
    assert_eq!((worst.risk_score, worst.risk_level), (100, "critical"));
    // The level boundaries: 15, 40, 70.
    assert_eq!(risk(&[("medium", 5)], 0, 0).risk_level, "medium");
    assert_eq!(risk(&[("medium", 4)], 0, 10).risk_level, "low");
    assert_eq!(risk(&[("high", 4)], 0, 0).risk_level, "high");
    assert_eq!(risk(&[("high", 7)], 0, 0).risk_level, "critical");
}

#[test]
fn ranges_default_to_a_day_and_refuse_bad_ones() {
    let req = |since: Option<&str>, until: Option<&str>| RangeRequest {
        since: since.map(String::from),
        until: until.map(String::from),
        ..Default::default()
    };
    let (since, until) = range(&req(None, Some("2026-12-02T00:00:00Z"))).unwrap();
    assert_eq!(until - since, DEFAULT_RANGE_MS);
    assert!(
        range(&req(
            Some("2026-12-02T00:00:00Z"),
            Some("2026-12-01T00:00:00Z")
        ))
        .is_err()
    );
    assert!(
        range(&req(
            Some("2026-01-01T00:00:00Z"),
            Some("2026-12-01T00:00:00Z")
        ))
        .is_err()
    );
    assert!(range(&req(Some("yesterday"), None)).is_err());
}

#[test]
fn the_built_in_summary_lists_templates_and_anomalies() {
    let facts = serde_json::json!({
        "range": {"since": "2026-12-01T00:00:00Z", "until": "2026-12-02T00:00:00Z"},
        "messages": 1200, "templates": 7,
        "top_templates": [{"count": 900, "template": "Accepted password for <*> from <IP>"}],
        "new_templates": [{"count": 3, "template": "Failed password for invalid user <*>"}],
        "anomalies": {"count": 1, "top": [{"severity": "high", "entity": "web-1", "score": 0.7123}]},
    });
    let text = summary_text(&facts);
    assert!(text.starts_with(
        "Log summary 2026-12-01T00:00:00Z to 2026-12-02T00:00:00Z: 1200 messages in 7 templates."
    ));
    assert!(
        text.contains("     900  Accepted password for <*> from <IP>"),
        "{text}"
    );
    assert!(
        text.contains("New templates (not seen in the preceding range):\n         3  Failed"),
        "{text}"
    );
    assert!(
        text.contains("Anomalies: 1.\n  high web-1 score 0.712"),
        "{text}"
    );
}
