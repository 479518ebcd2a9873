//! The HMAC-SHA256 signature scheme of Stripe's webhooks
//! (`Stripe-Signature: t=<unix>,v1=<hex>`), checked on incoming Stripe
//! events and used for our own outgoing webhooks (`X-SecureNet-Signature`).

use ring::hmac;

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Stripe-Signature header is malformed (expected t=<unix time>,v1=<hex>)")]
    Malformed,
    #[error(
        "Stripe-Signature timestamp is {age_secs} s away from now (tolerance {tolerance_secs} s)"
    )]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("no Stripe-Signature v1 signature matches the payload")]
    Mismatch,
}

/// Default `Stripe-Signature` timestamp tolerance (Stripe's libraries use 300 s).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Verifies a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`): HMAC-SHA256 of
/// `"{t}.{body}"` under the endpoint secret, compared in constant time, and
/// `t` within `tolerance_secs` of `now_secs`.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> std::result::Result<i64, SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_secs = now_secs - t;
    if age_secs.abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    sigs.iter()
        .any(|s| hmac::verify(&key, &signed, s).is_ok())
        .then_some(t)
        .ok_or(SignatureError::Mismatch)
}

/// Signs like Stripe does: `t=<unix>,v1=<HMAC-SHA256(t.body)>`. Our
/// outgoing webhooks use the same scheme (`X-SecureNet-Signature`).
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(hmac::sign(&key, &signed).as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_signatures_are_checked_for_secret_time_and_shape() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign("whsec_test", 1_000_000, body);
        assert_eq!(
            verify("whsec_test", &header, body, 1_000_100, 300),
            Ok(1_000_000)
        );
        assert_eq!(
            verify("whsec_other", &header, body, 1_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("whsec_test", &header, b"{}", 1_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify("whsec_test", &header, body, 1_000_301, 300),
            Err(SignatureError::Stale { age_secs: 301, .. })
        ));
        assert_eq!(
            verify("whsec_test", "v1=abcd", body, 0, 300),
            Err(SignatureError::Malformed)
        );
        // Secret rotation: any matching v1 passes.
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert!(verify("whsec_test", &rotated, body, 1_000_000, 300).is_ok());
    }
}
