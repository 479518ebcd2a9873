//! Password work is bounded: sign-in attempts are throttled per account
//! and per client address, and Argon2 (19 MiB and tens of milliseconds per
//! hash) runs at most `api.max_concurrent_password_hashes` at a time.
//!
//! Without these, 60 wrong passwords in 5 s met no throttle, and 48
//! concurrent anonymous sign-ins added ~700 MiB to the process. Limits are
//! per process: with several query-api replicas an attacker gets each
//! replica's budget (documented in docs/api.md).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use control::RateLimits;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// How long a password check waits for a hashing slot.
const HASH_WAIT: Duration = Duration::from_secs(10);

pub struct SignInGuard {
    per_account: RateLimits<String>,
    per_address: RateLimits<IpAddr>,
    hashing: Arc<Semaphore>,
}

impl SignInGuard {
    pub fn new(config: &crate::ApiConfig) -> Self {
        Self {
            per_account: RateLimits::per_minute(
                config.sign_in_per_minute_per_account,
                config.sign_in_per_minute_per_account,
            ),
            per_address: RateLimits::per_minute(
                config.sign_in_per_minute_per_address,
                config.sign_in_per_minute_per_address,
            ),
            hashing: Arc::new(Semaphore::new(config.max_concurrent_password_hashes.max(1))),
        }
    }

    /// Counts a sign-in attempt for `email` from `address`; `429` once
    /// either has used its budget.
    pub fn attempt(&self, email: &str, address: Option<IpAddr>) -> Result<(), ApiError> {
        if let Some(ip) = address {
            self.per_address.check(&ip).map_err(ApiError::RateLimited)?;
        }
        self.per_account
            .check(&email.trim().to_lowercase())
            .map_err(ApiError::RateLimited)
    }

    /// A slot to run password hashing in; `429` if none frees up soon.
    pub async fn hashing_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(HASH_WAIT, self.hashing.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::TooBusy(
                "too many sign-ins in progress; retry shortly".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_limited_per_account_and_per_address() {
        let guard = SignInGuard::new(&crate::ApiConfig {
            sign_in_per_minute_per_account: 3,
            sign_in_per_minute_per_address: 5,
            ..Default::default()
        });
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for _ in 0..3 {
            guard.attempt("Ana@x.test", ip("192.0.2.1")).unwrap();
        }
        assert!(matches!(
            guard.attempt("ana@X.test", ip("192.0.2.2")),
            Err(ApiError::RateLimited(_))
        ));
        // Another account from the first address: the address budget is 5.
        guard.attempt("bo@x.test", ip("192.0.2.1")).unwrap();
        guard.attempt("cy@x.test", ip("192.0.2.1")).unwrap();
        assert!(matches!(
            guard.attempt("di@x.test", ip("192.0.2.1")),
            Err(ApiError::RateLimited(_))
        ));
        guard.attempt("di@x.test", ip("192.0.2.3")).unwrap();
    }
}
