//! Fuzzing entry point (`fuzz/`, `scripts/fuzz.sh`) for bearer tokens;
//! the unit test replays every kept input.

use std::sync::OnceLock;

use crate::MetaStore;

/// The store and the runtime its async calls run on.
fn store() -> &'static (tokio::runtime::Runtime, MetaStore) {
    static STORE: OnceLock<(tokio::runtime::Runtime, MetaStore)> = OnceLock::new();
    STORE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s = MetaStore::open_in_memory().expect("in-memory store");
        rt.block_on(s.ensure_default_org(schemas::Plan::Business, None))
            .expect("default org");
        (rt, s)
    })
}

/// Anything presented as a bearer token (JWT or API key) must be
/// refused, never crash.
pub fn token(data: &[u8]) {
    if let Ok(token) = std::str::from_utf8(data) {
        let (rt, store) = store();
        rt.block_on(async {
            let _ = store.verify_jwt(token).await;
            let _ = store.verify_key(token).await;
        });
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
