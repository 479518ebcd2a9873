//! API keys: `sn_<16 hex id>_<64 hex secret>`.
//!
//! The id is public (listings, audit logs, revocation); only the SHA-256 of
//! the whole key is stored. Keys carry 256 bits of entropy, so a fast hash is
//! the right tool (as for GitHub or Stripe tokens): a slow password hash would
//! only add latency to every ingest call. Keys supplied from configuration may
//! have any shape; their id is derived from their hash.

use rand::RngCore;
use sha2::{Digest, Sha256};

pub const PREFIX: &str = "sn_";
/// Shortest key accepted from configuration.
pub const MIN_CONFIGURED_KEY_LEN: usize = 20;

/// A freshly issued key: `secret` is shown once and never stored.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub id: String,
    pub secret: String,
}

pub fn generate() -> IssuedKey {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = format!("{PREFIX}{id}_{}", hex::encode(secret));
    IssuedKey { id, secret }
}

/// The id a presented key is looked up by.
pub fn key_id(key: &str) -> String {
    if let Some(rest) = key.strip_prefix(PREFIX)
        && let Some((id, _)) = rest.split_once('_')
        && id.len() == 16
        && id.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return id.to_ascii_lowercase();
    }
    // Configured keys of another shape: a stable id from the hash.
    format!("h{}", &hex::encode(hash(key))[..15])
}

pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_to_their_id() {
        let k = generate();
        assert!(k.secret.starts_with("sn_"));
        assert_eq!(k.secret.len(), 3 + 16 + 1 + 64);
        assert_eq!(key_id(&k.secret), k.id);
        assert_ne!(generate().secret, k.secret);
    }

    #[test]
    fn foreign_keys_get_a_stable_hash_id() {
        let a = key_id("my-configured-development-key");
        assert_eq!(a, key_id("my-configured-development-key"));
        assert!(a.starts_with('h') && a.len() == 16);
        assert_ne!(a, key_id("another-configured-key-value"));
    }
}
