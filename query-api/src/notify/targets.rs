//! Webhook targets: only globally reachable addresses, checked when a
//! channel is created and again at connect time (DNS answers included).

use std::net::IpAddr;
use std::time::Duration;

use control::notify::ChannelKind;
use lettre::message::Mailbox;

use crate::error::{ApiError, Result};

use super::NotifyConfig;

/// IPv4 ranges that are not globally reachable (IANA IPv4 Special-Purpose
/// Address Registry), refused as webhook targets.
const NON_GLOBAL_V4: &[&str] = &[
    "0.0.0.0/8",       // this network
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // shared address space (CGNAT)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local (cloud metadata)
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation (TEST-NET-1)
    "192.88.99.0/24",  // 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation (TEST-NET-2)
    "203.0.113.0/24",  // documentation (TEST-NET-3)
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, broadcast
];

/// IPv6: only global unicast (2000::/3) is reachable, minus these
/// non-global or translating ranges (IANA IPv6 Special-Purpose Registry):
/// a NAT64 or 6to4 address reaches an IPv4 address through a translator
/// of the operator's network, so none is accepted.
const NON_GLOBAL_V6_IN_2000: &[&str] = &[
    "2001::/23",     // IETF protocol assignments (Teredo, benchmarking, ORCHID)
    "2001:db8::/32", // documentation
    "2002::/16",     // 6to4
    "3fff::/20",     // documentation
];

fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
    list.iter().filter_map(|n| n.parse().ok()).collect()
}

/// Whether a webhook may reach `ip`: a globally reachable address that is
/// not one of this host's own. Everything else — private, loopback,
/// link-local (cloud metadata), CGNAT, documentation and benchmarking
/// ranges, multicast, reserved, IPv4-mapped, IPv4-compatible and
/// IPv4-translated IPv6, NAT64 (well-known and local-use), 6to4, Teredo,
/// unique-local, site-local — is refused.
pub(super) fn is_forbidden(ip: IpAddr) -> bool {
    static V4: std::sync::OnceLock<Vec<ipnet::IpNet>> = std::sync::OnceLock::new();
    static V6: std::sync::OnceLock<Vec<ipnet::IpNet>> = std::sync::OnceLock::new();
    let special = match ip {
        IpAddr::V4(_) => V4
            .get_or_init(|| nets(NON_GLOBAL_V4))
            .iter()
            .any(|n| n.contains(&ip)),
        IpAddr::V6(v6) => {
            let global_unicast = (v6.segments()[0] & 0xe000) == 0x2000;
            !global_unicast
                || V6
                    .get_or_init(|| nets(NON_GLOBAL_V6_IN_2000))
                    .iter()
                    .any(|n| n.contains(&ip))
        }
    };
    special || own_addresses().contains(&ip)
}

/// This host's interface addresses (re-read at most every minute): a
/// webhook to the host's own public address would reach every service it
/// listens on.
pub(super) fn own_addresses() -> Vec<IpAddr> {
    use std::sync::Mutex;
    use std::time::Instant;
    static CACHE: Mutex<Option<(Instant, Vec<IpAddr>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, addrs)) = cache.as_ref()
        && at.elapsed() < Duration::from_secs(60)
    {
        return addrs.clone();
    }
    let addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| list.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    *cache = Some((Instant::now(), addrs.clone()));
    addrs
}

/// Whether a webhook URL names a private address outright (an IP literal,
/// `localhost` or no host); names are checked when they are resolved.
pub(super) fn names_private_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_forbidden(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_forbidden(ip.into()),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.');
            d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost")
        }
        None => true,
    }
}

/// Webhook name resolution that keeps only public addresses: a name that
/// points into the operator's network — from the start, or re-pointed
/// after the channel was checked (DNS rebinding) — fails the delivery
/// instead of reaching it. Redirects are not followed at all.
pub(super) struct PublicAddressesOnly;

impl reqwest::dns::Resolve for PublicAddressesOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves only to private or loopback addresses \
                     (api.notify.allow_private_targets)"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Checks a channel target; webhooks are `http(s)://` URLs.
pub(super) fn validate_target(
    config: &NotifyConfig,
    kind: ChannelKind,
    target: &str,
) -> Result<()> {
    match kind {
        ChannelKind::Email => {
            target.parse::<Mailbox>().map_err(|e| {
                ApiError::BadRequest(format!("{target:?} is not an email address: {e}"))
            })?;
            if config.smtp.is_none() {
                return Err(ApiError::BadRequest(
                    "email delivery is not configured on this server (api.notify.smtp)".into(),
                ));
            }
        }
        ChannelKind::Webhook => {
            let url = url::Url::parse(target)
                .map_err(|e| ApiError::BadRequest(format!("{target:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ApiError::BadRequest(
                    "webhooks are http:// or https:// URLs".into(),
                ));
            }
            if names_private_host(&url) && !config.allow_private_targets {
                return Err(ApiError::BadRequest(format!(
                    "{target:?} is a private or loopback address (api.notify.allow_private_targets)"
                )));
            }
        }
    }
    Ok(())
}
