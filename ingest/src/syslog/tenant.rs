//! Which organization a syslog message belongs to.
//!
//! In order: an API key carried in the message's structured data
//! (`[securenet@32473 key="…"]`); on TLS, the tenant the connection's
//! client certificate maps to (`client_certificates`); the sender's address
//! matched against the listener's `sources` (most specific network first);
//! the listener's `default_tenant`. A key that is unknown or revoked rejects
//! the message — it never falls back to another tenant (nor does a
//! certificate no rule claims: the connection is refused at the handshake).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::MetaStore;
use ipnet::IpNet;
use schemas::TenantId;

/// How long a verified (or refused) key is remembered. Syslog can carry a
/// key on every message; checking each against the store would cap the
/// rate, so a revocation (or a key created on another host) reaches
/// syslog within this long — the same bound as HTTP's on a shared
/// control plane (`control::auth::SHARED_KEY_CACHE_TTL`).
const KEY_TTL: Duration = control::auth::SHARED_KEY_CACHE_TTL;
const KEY_CACHE_MAX: usize = 10_000;

/// Why a message has no tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No key, no matching source rule, no default tenant.
    UnknownSender,
    /// The message carried a key that is unknown or revoked.
    BadKey,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownSender => "unknown_sender",
            Rejection::BadKey => "bad_key",
        }
    }
}

/// API key → (its tenant, or None for an unknown key; when it was looked up).
type KeyCache = HashMap<String, (Option<TenantId>, Instant)>;

#[derive(Clone)]
pub struct TenantResolver {
    default: Option<TenantId>,
    /// Sorted most specific first.
    sources: Arc<[(IpNet, TenantId)]>,
    store: Arc<MetaStore>,
    keys: Arc<Mutex<KeyCache>>,
}

impl TenantResolver {
    pub fn new(
        default: Option<TenantId>,
        mut sources: Vec<(IpNet, TenantId)>,
        store: Arc<MetaStore>,
    ) -> Self {
        sources.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        Self {
            default,
            sources: sources.into(),
            store,
            keys: Arc::default(),
        }
    }

    /// The tenant of a message with this key (if any) from `peer`, whose
    /// connection's client certificate maps to `certified` (if any).
    pub async fn resolve(
        &self,
        api_key: Option<&str>,
        peer: IpAddr,
        certified: Option<&TenantId>,
    ) -> Result<TenantId, Rejection> {
        if let Some(key) = api_key {
            return self.by_key(key).await.ok_or(Rejection::BadKey);
        }
        if let Some(tenant) = certified {
            return Ok(tenant.clone());
        }
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(peer),
            v4 => v4,
        };
        if let Some((_, tenant)) = self.sources.iter().find(|(net, _)| net.contains(&peer)) {
            return Ok(tenant.clone());
        }
        self.default.clone().ok_or(Rejection::UnknownSender)
    }

    async fn by_key(&self, key: &str) -> Option<TenantId> {
        let now = Instant::now();
        {
            // A poisoned lock only means another thread panicked mid-insert
            // of a cache entry; the map itself is still valid.
            let cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((tenant, at)) = cache.get(key)
                && now.duration_since(*at) < KEY_TTL
            {
                return tenant.clone();
            }
        }
        let tenant = self.store.verify_key(key).await.ok().map(|p| p.tenant);
        let mut cache = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= KEY_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key.to_string(), (tenant.clone(), now));
        tenant
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::{NewOrganization, Role};
    use schemas::Plan;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).unwrap()
    }

    async fn store_with_key() -> (Arc<MetaStore>, String) {
        let store = MetaStore::open_in_memory().unwrap();
        store
            .create_organization(&NewOrganization {
                id: t("acme"),
                name: "Acme".into(),
                owner_email: "a@acme.test".into(),
                plan: Plan::Business,
                parent_id: None,
                allow_overage: false,
            })
            .await
            .unwrap();
        let key = store
            .create_key(&t("acme"), "syslog", Role::Member)
            .await
            .unwrap();
        (Arc::new(store), key.secret)
    }

    #[tokio::test]
    async fn key_then_most_specific_source_then_default() {
        let (store, key) = store_with_key().await;
        let r = TenantResolver::new(
            Some(t("fallback")),
            vec![
                ("10.0.0.0/8".parse().unwrap(), t("wide")),
                ("10.1.0.0/16".parse().unwrap(), t("narrow")),
            ],
            store,
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cert = t("certified");
        assert_eq!(
            r.resolve(Some(&key), ip("10.1.2.3"), Some(&cert)).await,
            Ok(t("acme"))
        );
        assert_eq!(
            r.resolve(None, ip("10.1.2.3"), Some(&cert)).await,
            Ok(cert.clone())
        );
        assert_eq!(r.resolve(None, ip("10.1.2.3"), None).await, Ok(t("narrow")));
        assert_eq!(r.resolve(None, ip("10.9.2.3"), None).await, Ok(t("wide")));
        assert_eq!(
            r.resolve(None, ip("::ffff:10.9.2.3"), None).await,
            Ok(t("wide"))
        );
        assert_eq!(
            r.resolve(None, ip("192.0.2.1"), None).await,
            Ok(t("fallback"))
        );
        assert_eq!(
            r.resolve(Some("sn_0000000000000000_bad"), ip("10.1.2.3"), Some(&cert))
                .await,
            Err(Rejection::BadKey)
        );
    }

    #[tokio::test]
    async fn without_default_unknown_senders_are_rejected() {
        let (store, _) = store_with_key().await;
        let r = TenantResolver::new(None, vec![], store);
        assert_eq!(
            r.resolve(None, "192.0.2.1".parse().unwrap(), None).await,
            Err(Rejection::UnknownSender)
        );
    }
}
