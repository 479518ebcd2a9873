//! Ids of the rows the metadata store creates (channels, deliveries, users,
//! devices): a kind prefix and 64 random bits in hex. They only need to be
//! unique, not secret (API keys have their own scheme, `keys`).

/// `prefix` + 16 random hex digits, e.g. `ch_9f86d081884c7d65`.
pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 8]>()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefixed_and_random() {
        let (a, b) = (super::random_id("dev-"), super::random_id("dev-"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 16);
        assert!(a.starts_with("dev-") && a[4..].chars().all(|c| c.is_ascii_hexdigit()));
    }
}
