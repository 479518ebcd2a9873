//! The clock every crate shares: milliseconds since the Unix epoch (UTC)
//! everywhere, as the Arrow schemas store time.

use std::time::{SystemTime, UNIX_EPOCH};

/// One UTC day in milliseconds (days have no leap seconds in Unix time).
pub const DAY_MS: i64 = 86_400_000;

/// Now, in milliseconds since the epoch (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Exponential backoff: `base_ms` doubled per earlier attempt, at most
/// `cap_ms` (no overflow however many attempts). The one schedule of the
/// Kafka consumer's sink retries and the notification dispatcher.
pub fn backoff_ms(base_ms: u64, cap_ms: u64, attempt: u32) -> u64 {
    base_ms.saturating_mul(1u64 << attempt.min(32)).min(cap_ms)
}

/// RFC 3339 text (`2026-12-02T10:00:00.000Z`, any offset) → milliseconds;
/// `None` if it is not RFC 3339.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A duration written as a whole number and a unit — `30s`, `5m`, `1h`,
/// `2d` — in milliseconds; `None` for anything else (or an overflow).
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let unit = t.chars().last()?;
    let n: i64 = t[..t.len() - unit.len_utf8()].parse().ok()?;
    let scale = match unit {
        's' => 1_000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// Milliseconds → RFC 3339 in UTC with milliseconds
/// (`2026-12-02T09:11:12.345Z`); out-of-range values as the epoch.
pub fn to_rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_and_rfc3339() {
        let t = parse_rfc3339_ms("2026-12-02T10:11:12.345+01:00").unwrap();
        assert_eq!(t, 1_796_202_672_345);
        assert_eq!(to_rfc3339(t), "2026-12-02T09:11:12.345Z");
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        for bad in ["", "5", "m", "5 minutes", "1.5h", "5w"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
        assert_eq!(
            t.div_euclid(DAY_MS) * DAY_MS,
            parse_rfc3339_ms("2026-12-02T00:00:00Z").unwrap()
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert!(now_ms() > t - 365 * DAY_MS);
        let delays: Vec<u64> = (0..5).map(|a| backoff_ms(100, 1_000, a)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1_000]);
        assert_eq!(backoff_ms(u64::MAX / 2, 30_000, u32::MAX), 30_000);
    }
}
