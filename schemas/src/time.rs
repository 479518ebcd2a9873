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

/// RFC 3339 text (`2026-12-02T10:00:00.000Z`, any offset) → milliseconds;
/// `None` if it is not RFC 3339.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_and_rfc3339() {
        let t = parse_rfc3339_ms("2026-12-02T10:11:12.345+01:00").unwrap();
        assert_eq!(t, 1_796_202_672_345);
        assert_eq!(
            t.div_euclid(DAY_MS) * DAY_MS,
            parse_rfc3339_ms("2026-12-02T00:00:00Z").unwrap()
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert!(now_ms() > t - 365 * DAY_MS);
    }
}
