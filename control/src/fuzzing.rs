//! Fuzzing entry point (`fuzz/`, `scripts/fuzz.sh`) for bearer tokens;
//! the unit test replays every kept input.

use std::sync::OnceLock;

use crate::MetaStore;

fn store() -> &'static MetaStore {
    static STORE: OnceLock<MetaStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = MetaStore::open_in_memory().expect("in-memory store");
        s.ensure_default_org(schemas::Plan::Business, None)
            .expect("default org");
        s
    })
}

/// Anything presented as a bearer token (JWT or API key) must be
/// refused, never crash.
pub fn token(data: &[u8]) {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = store().verify_jwt(token);
        let _ = store().verify_key(token);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_fuzz_inputs_are_refused() {
        for data in schemas::fuzzing::inputs("jwt") {
            super::token(&data);
        }
    }
}
