//! The dispatcher: due deliveries sent by webhook or e-mail, retried with
//! backoff, recorded in the delivery log.

use std::sync::Arc;
use std::time::Duration;

use control::MetaStore;
use control::notify::{Channel, ChannelKind, DueDelivery};
use futures::StreamExt;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use prometheus::{IntCounterVec, Opts, Registry};
use schemas::Feature;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::targets::{PublicAddressesOnly, names_private_host};
use super::{NotifyConfig, backoff};

/// Why the notifier could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum NotifierError {
    #[error("building the webhook HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("api.notify.smtp.url: {0}")]
    SmtpUrl(#[from] lettre::transport::smtp::Error),
    #[error("api.notify.smtp.from {address:?}: {source}")]
    From {
        address: String,
        source: lettre::address::AddressError,
    },
    #[error("registering the notification metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Sends notifications; shared by the dispatcher and the test route.
pub struct Notifier {
    pub config: NotifyConfig,
    pub(super) http: reqwest::Client,
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    sent: IntCounterVec,
}

impl Notifier {
    pub fn new(
        config: NotifyConfig,
        registry: &Registry,
    ) -> std::result::Result<Self, NotifierError> {
        // No proxy: a proxy from the environment would make the request
        // from elsewhere, past the address checks below.
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if !config.allow_private_targets {
            http = http.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        let http = http.build()?;
        let smtp = match &config.smtp {
            Some(s) => {
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&s.url)?
                    .timeout(Some(Duration::from_millis(config.timeout_ms)))
                    .build();
                let from: Mailbox = s.from.parse().map_err(|source| NotifierError::From {
                    address: s.from.clone(),
                    source,
                })?;
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
        )?;
        // Every series from the start, so rate() and alerts see the first one.
        for kind in ["webhook", "email"] {
            for outcome in ["delivered", "retry", "failed"] {
                sent.with_label_values(&[kind, outcome]);
            }
        }
        registry.register(Box::new(sent.clone()))?;
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
        n: &control::notify::Notification,
        delivery_id: &str,
        brand: Option<&control::branding::Applied>,
    ) -> std::result::Result<Option<u16>, (Option<u16>, String)> {
        // White-label: the organization's (or its MSP's) name, logo and
        // sender in place of SecureNet's.
        let name = brand.map_or("SecureNet", |b| b.branding.name.as_str());
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
                let source = match brand {
                    Some(b) => json!({
                        "name": b.branding.name,
                        "logo_url": b.branding.logo_url,
                        "primary_color": b.branding.primary_color,
                        "accent_color": b.branding.accent_color,
                        "branded_by": b.from,
                    }),
                    None => json!({ "name": name }),
                };
                let body = json!({
                    "id": delivery_id,
                    "event": "notification",
                    "source": source,
                    "organization": n.org_id,
                    "notification": {
                        "id": n.id, "kind": n.kind, "severity": n.severity, "title": n.title,
                        "body": n.body, "ref_id": n.ref_id, "created_at": n.created_at,
                    },
                })
                .to_string();
                let t = schemas::time::now_ms() / 1000;
                let signature = control::signature::sign(
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
                    "{}\n\nSeverity: {}\nKind: {}\nOrganization: {}\nNotification: {}\n\n{}\n\n-- \n{name}\n",
                    n.title,
                    n.severity,
                    n.kind,
                    n.org_id,
                    n.id,
                    serde_json::to_string_pretty(&n.body).unwrap_or_default()
                );
                let from = match brand {
                    Some(b) => {
                        let address = b
                            .branding
                            .sender_address
                            .as_deref()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or_else(|| from.email.clone());
                        let display = b.branding.sender_name.as_deref().unwrap_or(name);
                        Mailbox::new(Some(display.to_string()), address)
                    }
                    None => from.clone(),
                };
                let message = Message::builder()
                    .from(from)
                    .to(to)
                    .subject(format!("[{name}] {}: {}", n.severity, n.title))
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
        let org = store
            .organization(&due.notification.org_id)
            .await
            .ok()
            .flatten();
        let refused = match due.channel.kind {
            ChannelKind::Webhook => org
                .as_ref()
                .and_then(|o| o.require(Feature::Webhooks).err()),
            _ => None,
        };
        // Branding as of this attempt (a downgrade drops it at once).
        let brand = match &org {
            Some(o) => store.applied_branding(o).await.ok().flatten(),
            None => None,
        };
        let entitled = refused.is_none();
        let outcome = match refused {
            None => {
                self.send(&due.channel, &due.notification, &d.id, brand.as_ref())
                    .await
            }
            Some(why) => Err((None, format!("not sent: {why}"))),
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
        if let Err(e) = store.record_attempt(&d.id, outcome, retry_at).await {
            warn!(error = %e, "recording a delivery attempt failed");
        }
    }
}

/// Runs the dispatcher until `stop`: match new notifications to channels,
/// send what is due (8 at a time), sleep `poll_ms`.
/// Deliveries a dispatcher attempts at once (and claims per round).
const PARALLEL_ATTEMPTS: usize = 8;

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
            // Claim only what is sent at once: every claimed delivery is
            // attempted within one timeout of its claim, well inside the
            // claim's lease (control::notify::DELIVERY_LEASE_MS), so no
            // other dispatcher sharing the store takes it meanwhile.
            let due = match store.enqueue_deliveries().await {
                Ok(_) => {
                    store
                        .due_deliveries(schemas::time::now_ms(), PARALLEL_ATTEMPTS)
                        .await
                }
                Err(e) => Err(e),
            };
            let full = match due {
                Ok(due) => {
                    let full = due.len() == PARALLEL_ATTEMPTS;
                    futures::stream::iter(due)
                        .for_each_concurrent(PARALLEL_ATTEMPTS, |d| {
                            let (store, notifier) = (store.clone(), notifier.clone());
                            async move { notifier.attempt(&store, d).await }
                        })
                        .await;
                    full
                }
                Err(e) => {
                    warn!(error = %e, "notification dispatcher: store error");
                    false
                }
            };
            if full && !stop.is_cancelled() {
                // More may be due: no pause between full rounds.
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    })
}
