//! Notification delivery: per-organization channels and the dispatcher.
//!
//! Routes (admin): `GET/POST /api/notifications/channels`,
//! `DELETE /api/notifications/channels/{id}`,
//! `POST /api/notifications/channels/{id}/test`,
//! `GET /api/notifications/deliveries` (the delivery log).
//!
//! Webhooks: `POST` of JSON `{"id", "event": "notification",
//! "organization", "notification": {...}}` with `X-SecureNet-Signature:
//! t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body" under the channel's
//! secret>` (Stripe's scheme, so existing verifiers work),
//! `X-SecureNet-Event` and `X-SecureNet-Delivery` (the delivery id, stable
//! across retries: receivers deduplicate on it). 2xx is delivered; anything
//! else — or no answer within the timeout — is retried with exponential
//! backoff until `max_attempts`, then marked `failed`. Webhooks are an
//! integration: the starter plan has email only.
//!
//! Email: plain text over SMTP (`api.notify.smtp.url`, e.g.
//! `smtp://relay:25`, `smtps://user:pass@host:465`, or
//! `smtp://host:587?tls=required`), from `api.notify.smtp.from`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use control::MetaStore;
use control::notify::{Channel, ChannelKind, DueDelivery};
use futures::StreamExt;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prometheus::{IntCounterVec, Opts, Registry};
use schemas::Feature;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::listing::{Cursor, page};
use crate::state::AppState;

/// `[api.notify]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// How often new notifications are matched to channels and due
    /// deliveries are sent.
    pub poll_ms: u64,
    /// Attempts per delivery before it is marked `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub timeout_ms: u64,
    /// Allow webhook targets on loopback and private addresses (off in
    /// production: a tenant must not reach the operator's network).
    pub allow_private_targets: bool,
    pub smtp: Option<SmtpConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            poll_ms: 1_000,
            max_attempts: 8,
            backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            timeout_ms: 10_000,
            allow_private_targets: false,
            smtp: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain), `smtps://…` (TLS) or
    /// `smtp://host:587?tls=required` (STARTTLS); credentials in the URL.
    #[serde(serialize_with = "redact_url")]
    pub url: String,
    pub from: String,
}

/// The SMTP URL may carry credentials: shown without them.
fn redact_url<S: serde::Serializer>(v: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    match url::Url::parse(v) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("redacted"));
            s.serialize_str(u.as_str())
        }
        _ => s.serialize_str(v),
    }
}

/// Delay before attempt `attempts + 1`.
pub fn backoff(config: &NotifyConfig, attempts: u32) -> u64 {
    config
        .backoff_ms
        .saturating_mul(1u64 << attempts.min(30))
        .min(config.max_backoff_ms)
}

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
fn is_forbidden(ip: IpAddr) -> bool {
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
fn own_addresses() -> Vec<IpAddr> {
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
fn names_private_host(url: &url::Url) -> bool {
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
struct PublicAddressesOnly;

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
fn validate_target(config: &NotifyConfig, kind: ChannelKind, target: &str) -> Result<()> {
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

/// Notification channels one organization may have: every notification
/// fans out to each, so the count bounds the delivery work one tenant
/// causes.
pub const MAX_CHANNELS_PER_ORG: usize = 20;

/// `402` unless the organization's plan includes webhooks — checked when a
/// channel is created or tested and again at every delivery.
fn webhooks_included(state: &AppState, tenant: &schemas::TenantId) -> Result<()> {
    let org = state.store.organization(tenant)?;
    match org {
        Some(o) if !o.plan.includes(Feature::Webhooks) => {
            Err(ApiError::Auth(control::Error::PlanLimit(format!(
                "webhooks are an integration of the {} plan and up; the {} plan has email alerts",
                Feature::Webhooks.lowest_plan(),
                o.plan
            ))))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewChannel {
    kind: String,
    target: String,
    min_severity: Option<String>,
}

/// `GET /api/notifications/channels`
pub async fn list_channels(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "channels": state.store.list_channels(&caller.tenant)? }),
    ))
}

/// `POST /api/notifications/channels`
pub async fn create_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<NewChannel>,
) -> Result<(StatusCode, Json<Value>)> {
    let crate::extract::JsonBody(req) = body;
    let kind = match req.kind.as_str() {
        "webhook" => ChannelKind::Webhook,
        "email" => ChannelKind::Email,
        other => {
            return Err(ApiError::BadRequest(format!(
                "kind {other:?}: webhook or email"
            )));
        }
    };
    validate_target(&state.notify.config, kind, req.target.trim())?;
    if kind == ChannelKind::Webhook {
        webhooks_included(&state, &caller.tenant)?;
    }
    let existing = state.store.list_channels(&caller.tenant)?.len();
    if existing >= MAX_CHANNELS_PER_ORG {
        return Err(ApiError::Conflict(format!(
            "this organization has {existing} notification channels, the most allowed \
             ({MAX_CHANNELS_PER_ORG}); delete one first"
        )));
    }
    let channel = state.store.create_channel(
        &caller.tenant,
        kind,
        req.target.trim(),
        req.min_severity.as_deref().unwrap_or("high"),
    )?;
    let mut out = json!({ "channel": channel });
    if let Some(secret) = &channel.secret {
        out["secret"] = json!(secret);
        out["note"] = json!("the signing secret is shown only this once; store it now");
    }
    Ok((StatusCode::CREATED, Json(out)))
}

/// `DELETE /api/notifications/channels/{id}`
pub async fn delete_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    state.store.delete_channel(&caller.tenant, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/notifications/channels/{id}/test` — sends a test message now
/// and answers with the outcome (not retried, not in the log).
pub async fn test_channel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let channel = state
        .store
        .list_channels(&caller.tenant)?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("channel {id:?} not found")))?;
    if channel.kind == ChannelKind::Webhook {
        webhooks_included(&state, &caller.tenant)?;
    }
    let notification = control::insights::Notification {
        id: format!("test-{}", schemas::time::now_ms()),
        org_id: caller.tenant.clone(),
        kind: "test".into(),
        severity: "low".into(),
        title: "SecureNet test notification".into(),
        body: json!({"message": "this channel works"}),
        ref_id: "test".into(),
        created_at: schemas::time::now_ms(),
        read_at: None,
    };
    let outcome = state
        .notify
        .send(&channel, &notification, &notification.id)
        .await;
    Ok(Json(match outcome {
        Ok(status) => json!({"delivered": true, "status": status}),
        Err((status, error)) => json!({"delivered": false, "status": status, "error": error}),
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// One channel's deliveries.
    channel: Option<String>,
    /// Items per page (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// `GET /api/notifications/deliveries` — newest first; `next_cursor`.
pub async fn deliveries(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<DeliveryParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let limit = crate::listing::limit(p.limit)?;
    let before = Cursor::param(p.cursor.as_deref())?;
    let rows = state.store.list_deliveries(
        &caller.tenant,
        p.channel.as_deref(),
        before.as_ref().map(|c| (c.at_ms, c.id.as_str())),
        limit + 1,
    )?;
    let (rows, next) = page(rows, limit, |d| {
        Cursor::new(d.created_at, d.id.clone()).to_string()
    });
    Ok(Json(json!({ "deliveries": rows, "next_cursor": next })))
}

/// Sends notifications; shared by the dispatcher and the test route.
pub struct Notifier {
    pub config: NotifyConfig,
    http: reqwest::Client,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    sent: IntCounterVec,
}

impl Notifier {
    pub fn new(config: NotifyConfig, registry: &Registry) -> std::result::Result<Self, String> {
        // No proxy: a proxy from the environment would make the request
        // from elsewhere, past the address checks below.
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !config.allow_private_targets {
            http = http.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        let http = http.build().map_err(|e| e.to_string())?;
        let smtp = match &config.smtp {
            Some(s) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&s.url)
                    .map_err(|e| format!("api.notify.smtp.url: {e}"))?
                    .timeout(Some(Duration::from_millis(config.timeout_ms)))
                    .build();
                let from: Mailbox = s
                    .from
                    .parse()
                    .map_err(|e| format!("api.notify.smtp.from {:?}: {e}", s.from))?;
                Some((transport, from))
            }
            None => None,
        };
        let sent = IntCounterVec::new(
            Opts::new(
                "securenet_notifications_sent_total",
                "Notification delivery attempts by channel kind and outcome.",
            ),
            &["kind", "outcome"],
        )
        .map_err(|e| e.to_string())?;
        // Every series from the start, so rate() and alerts see the first one.
        for kind in ["webhook", "email"] {
            for outcome in ["delivered", "retry", "failed"] {
                sent.with_label_values(&[kind, outcome]);
            }
        }
        registry
            .register(Box::new(sent.clone()))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            http,
            smtp,
            sent,
        })
    }

    /// One attempt: `Ok(status)` when delivered.
    pub async fn send(
        &self,
        channel: &Channel,
        n: &control::insights::Notification,
        delivery_id: &str,
    ) -> std::result::Result<Option<u16>, (Option<u16>, String)> {
        match channel.kind {
            ChannelKind::Webhook => {
                // A channel stored while private targets were allowed, or
                // written before this check, is refused at delivery too
                // (IP literals never reach the resolver).
                if !self.config.allow_private_targets
                    && url::Url::parse(&channel.target).map_or(true, |u| names_private_host(&u))
                {
                    return Err((
                        None,
                        "the target is a private or loopback address \
                         (api.notify.allow_private_targets)"
                            .into(),
                    ));
                }
                let body = json!({
                    "id": delivery_id,
                    "event": "notification",
                    "organization": n.org_id,
                    "notification": {
                        "id": n.id, "kind": n.kind, "severity": n.severity, "title": n.title,
                        "body": n.body, "ref_id": n.ref_id, "created_at": n.created_at,
                    },
                })
                .to_string();
                let t = schemas::time::now_ms() / 1000;
                let signature = control::billing::sign_v1(
                    channel.secret.as_deref().unwrap_or(""),
                    t,
                    body.as_bytes(),
                );
                let response = self
                    .http
                    .post(&channel.target)
                    .header("content-type", "application/json")
                    .header(
                        "user-agent",
                        concat!("SecureNet/", env!("CARGO_PKG_VERSION")),
                    )
                    .header("x-securenet-signature", signature)
                    .header("x-securenet-event", "notification")
                    .header("x-securenet-delivery", delivery_id)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| (None, e.to_string()))?;
                let status = response.status().as_u16();
                if response.status().is_success() {
                    Ok(Some(status))
                } else {
                    Err((Some(status), format!("the receiver answered {status}")))
                }
            }
            ChannelKind::Email => {
                let Some((transport, from)) = &self.smtp else {
                    return Err((
                        None,
                        "email delivery is not configured (api.notify.smtp)".into(),
                    ));
                };
                let to: Mailbox = channel.target.parse().map_err(|e| (None, format!("{e}")))?;
                let text = format!(
                    "{}\n\nSeverity: {}\nKind: {}\nOrganization: {}\nNotification: {}\n\n{}\n",
                    n.title,
                    n.severity,
                    n.kind,
                    n.org_id,
                    n.id,
                    serde_json::to_string_pretty(&n.body).unwrap_or_default()
                );
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(format!("[SecureNet] {}: {}", n.severity, n.title))
                    .header(lettre::message::header::ContentType::TEXT_PLAIN)
                    .body(text)
                    .map_err(|e| (None, e.to_string()))?;
                transport
                    .send(message)
                    .await
                    .map(|r| Some(r.code().to_string().parse().unwrap_or(250)))
                    .map_err(|e| (None, e.to_string()))
            }
        }
    }

    async fn attempt(&self, store: &MetaStore, due: DueDelivery) {
        let d = &due.delivery;
        // Entitlement at use: a webhook of an organization whose plan no
        // longer includes webhooks (a downgrade) is not delivered, nor
        // retried.
        let entitled = due.channel.kind != ChannelKind::Webhook
            || store
                .organization(&due.notification.org_id)
                .ok()
                .flatten()
                .is_none_or(|o| o.plan.includes(Feature::Webhooks));
        let outcome = if entitled {
            self.send(&due.channel, &due.notification, &d.id).await
        } else {
            Err((
                None,
                format!(
                    "not sent: the organization's plan no longer includes webhooks ({} and up)",
                    Feature::Webhooks.lowest_plan()
                ),
            ))
        };
        let kind = due.channel.kind.as_str();
        let retry_at = match &outcome {
            Ok(_) => None,
            Err(_) if !entitled => None,
            Err(_) if d.attempts + 1 >= self.config.max_attempts => None,
            Err(_) => Some(schemas::time::now_ms() + backoff(&self.config, d.attempts) as i64),
        };
        let label = match (&outcome, retry_at) {
            (Ok(_), _) => "delivered",
            (Err(_), Some(_)) => "retry",
            (Err(_), None) => "failed",
        };
        self.sent.with_label_values(&[kind, label]).inc();
        if let Err((_, e)) = &outcome {
            warn!(delivery = %d.id, channel = %due.channel.id, attempt = d.attempts + 1, error = %e, "notification delivery failed");
        }
        if let Err(e) = store.record_attempt(&d.id, outcome, retry_at) {
            warn!(error = %e, "recording a delivery attempt failed");
        }
    }
}

/// Runs the dispatcher until `stop`: match new notifications to channels,
/// send what is due (8 at a time), sleep `poll_ms`.
pub fn spawn_dispatcher(
    store: Arc<MetaStore>,
    notifier: Arc<Notifier>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let poll = Duration::from_millis(notifier.config.poll_ms.max(10));
        info!(
            poll_ms = poll.as_millis() as u64,
            "notification dispatcher started"
        );
        loop {
            let due = {
                let store = store.clone();
                tokio::task::spawn_blocking(move || {
                    store.enqueue_deliveries()?;
                    store.due_deliveries(schemas::time::now_ms(), 64)
                })
                .await
            };
            match due {
                Ok(Ok(due)) => {
                    futures::stream::iter(due)
                        .for_each_concurrent(8, |d| {
                            let (store, notifier) = (store.clone(), notifier.clone());
                            async move { notifier.attempt(&store, d).await }
                        })
                        .await;
                }
                Ok(Err(e)) => warn!(error = %e, "notification dispatcher: store error"),
                Err(e) => warn!(error = %e, "notification dispatcher task failed"),
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let c = NotifyConfig::default();
        assert_eq!(
            (0..4).map(|a| backoff(&c, a)).collect::<Vec<_>>(),
            [1_000, 2_000, 4_000, 8_000]
        );
        assert_eq!(backoff(&c, 20), 300_000);
        assert_eq!(backoff(&c, 200), 300_000);
    }

    #[test]
    fn targets_are_checked() {
        let c = NotifyConfig::default();
        let hook = |t: &str| validate_target(&c, ChannelKind::Webhook, t);
        assert!(hook("https://hooks.example.com/x").is_ok());
        for bad in [
            "ftp://x/y",
            "not a url",
            "http://127.0.0.1:8080/",
            "http://10.0.0.5/",
            "http://localhost/",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:10.1.2.3]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://app.localhost./",
            // Found by the attack suite: every non-global form.
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[2002:7f00:1::1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[fec0::1]/",
            "http://[fd00::1]/",
            "http://[2001::1]/",
            "http://[2001:db8::1]/",
            "http://[100::1]/",
            "http://198.18.0.1/",
            "http://192.0.0.1/",
            "http://192.0.2.7/",
            "http://198.51.100.1/",
            "http://203.0.113.9/",
            "http://192.88.99.1/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
        ] {
            assert!(hook(bad).is_err(), "{bad}");
        }
        assert!(hook("http://100.128.0.1/").is_ok(), "outside 100.64/10");
        assert!(hook("http://[2606:4700::1111]/").is_ok(), "global IPv6");
        assert!(hook("http://93.184.216.34/").is_ok(), "global IPv4");
        // The host's own addresses, whatever they are.
        for own in own_addresses() {
            let url = match own {
                IpAddr::V4(v4) => format!("http://{v4}/"),
                IpAddr::V6(v6) => format!("http://[{v6}]/"),
            };
            assert!(hook(&url).is_err(), "{url}");
        }
        let open = NotifyConfig {
            allow_private_targets: true,
            ..NotifyConfig::default()
        };
        assert!(validate_target(&open, ChannelKind::Webhook, "http://127.0.0.1:8080/").is_ok());
        // Email needs SMTP configured and a valid address.
        assert!(validate_target(&c, ChannelKind::Email, "ops@example.com").is_err());
        let smtp = NotifyConfig {
            smtp: Some(SmtpConfig {
                url: "smtp://127.0.0.1:25".into(),
                from: "a@b.c".into(),
            }),
            ..NotifyConfig::default()
        };
        assert!(validate_target(&smtp, ChannelKind::Email, "ops@example.com").is_ok());
        assert!(validate_target(&smtp, ChannelKind::Email, "not an address").is_err());
    }

    /// Names are checked when resolved: a name that leads only to private
    /// addresses fails, so DNS cannot route a webhook into our network.
    #[tokio::test]
    async fn webhook_names_resolving_to_private_addresses_are_not_reached() {
        use reqwest::dns::Resolve;
        let name = |n: &str| n.parse::<reqwest::dns::Name>().unwrap();
        let err = PublicAddressesOnly
            .resolve(name("localhost"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("private or loopback"), "{err}");
        // End to end through the delivery client: no connection is made.
        let notifier = Notifier::new(NotifyConfig::default(), &Registry::new()).unwrap();
        let err = notifier
            .http
            .post("http://localhost:9/hook")
            .send()
            .await
            .unwrap_err();
        let chain = format!("{:?}", err);
        assert!(chain.contains("private or loopback"), "{chain}");
        // A channel stored with a private IP literal (e.g. while private
        // targets were allowed) is refused at delivery, before any request.
        let channel = Channel {
            id: "c1".into(),
            org_id: "acme".into(),
            kind: ChannelKind::Webhook,
            target: "http://[::ffff:127.0.0.1]:9/hook".into(),
            secret: None,
            min_severity: "low".into(),
            created_at: 0,
        };
        let n = control::insights::Notification {
            id: "n1".into(),
            org_id: schemas::TenantId::new("acme").unwrap(),
            kind: "anomaly".into(),
            severity: "high".into(),
            title: "t".into(),
            body: json!({}),
            ref_id: "a1".into(),
            created_at: 0,
            read_at: None,
        };
        let (status, err) = notifier.send(&channel, &n, "d1").await.unwrap_err();
        assert_eq!(status, None);
        assert!(err.contains("private or loopback"), "{err}");
    }
}
