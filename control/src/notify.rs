//! Notifications and their delivery.
//!
//! Notifications are unique per `(organization, kind, ref_id)`: the detector
//! may report the same anomaly again after a restart, and it still notifies
//! once.
//!
//! Delivery state: channels (a webhook URL or an email
//! address, with the lowest severity to send) and deliveries — one per
//! (channel, notification), retried with backoff, kept as the delivery log.
//!
//! [`MetaStore::enqueue_deliveries`] matches new notifications to channels
//! (only notifications created after the channel, so adding a channel does
//! not replay history); the dispatcher then takes due deliveries and records
//! each attempt. Rows are unique per (channel, notification): enqueuing is
//! idempotent, so several dispatchers sharing a store do not double-send a
//! delivery they both enqueued.

use schemas::Severity;
use schemas::TenantId;
use serde::Serialize;
use serde_json::Value;

use crate::db::{Row, params};
use crate::error::{Error, Result};
use crate::ids::random_id;
use crate::rows::{json, tenant};
use crate::store::{MetaStore, now_ms};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: String,
    pub org_id: TenantId,
    /// `anomaly`, `finding`…
    pub kind: String,
    /// low, medium, high, critical.
    pub severity: String,
    pub title: String,
    pub body: Value,
    /// The record it is about (an anomaly id…).
    pub ref_id: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
}

const NOTIFICATION_COLUMNS: &str =
    "id, org_id, kind, severity, title, body, ref_id, created_at, read_at";

/// The notification in [`NOTIFICATION_COLUMNS`] order from column `at` on.
fn notification_row(r: &Row, at: usize) -> Result<Notification> {
    Ok(Notification {
        id: r.get(at)?,
        org_id: tenant(r.get(at + 1)?)?,
        kind: r.get(at + 2)?,
        severity: r.get(at + 3)?,
        title: r.get(at + 4)?,
        body: json(r.get(at + 5)?),
        ref_id: r.get(at + 6)?,
        created_at: r.get(at + 7)?,
        read_at: r.get(at + 8)?,
    })
}

/// How long a claimed delivery is left to its dispatcher before another
/// may try it: well over an attempt's timeout (`notify.timeout_ms`, 10 s by
/// default).
pub const DELIVERY_LEASE_MS: i64 = 120_000;

impl MetaStore {
    /// Records a notification once per `(org, kind, ref_id)`; returns
    /// whether it was new.
    pub async fn add_notification(&self, n: &Notification) -> Result<bool> {
        let inserted = self
            .db
            .execute(
                &format!(
                    "INSERT INTO notifications ({NOTIFICATION_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(org_id, kind, ref_id) DO NOTHING"
                ),
                params![
                    n.id,
                    n.org_id,
                    n.kind,
                    n.severity,
                    n.title,
                    n.body.to_string(),
                    n.ref_id,
                    n.created_at,
                    n.read_at,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Notifications, newest first; `before` is a cursor (`created_at`,
    /// `id`) from the previous page's last item.
    pub async fn list_notifications(
        &self,
        org: &TenantId,
        unread_only: bool,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let (at, id) = before.unwrap_or((i64::MAX, ""));
        self.db
            .query(
                &format!(
                    "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
                     WHERE org_id = ?1 AND (?2 = 0 OR read_at IS NULL) \
                     AND (created_at < ?3 OR (created_at = ?3 AND id < ?4 AND ?4 <> '')) \
                     ORDER BY created_at DESC, id DESC LIMIT ?5"
                ),
                params![org, unread_only, at, id, limit],
            )
            .await?
            .iter()
            .map(|r| notification_row(r, 0))
            .collect()
    }

    /// Unread notifications of an organization.
    pub async fn unread_notifications(&self, org: &TenantId) -> Result<u64> {
        let n: Option<u64> = self
            .db
            .query_opt(
                "SELECT COUNT(*) FROM notifications WHERE org_id = ?1 AND read_at IS NULL",
                params![org],
            )
            .await?
            .map(|r| r.get(0))
            .transpose()?;
        Ok(n.unwrap_or(0))
    }

    /// Marks a notification read (idempotent).
    pub async fn mark_notification_read(&self, org: &TenantId, id: &str) -> Result<()> {
        let changed = self
            .db
            .execute(
                "UPDATE notifications SET read_at = COALESCE(read_at, ?3) \
                 WHERE org_id = ?1 AND id = ?2",
                params![org, id, now_ms()],
            )
            .await?;
        if changed == 0 {
            return Err(Error::NotFound {
                what: "notification",
                id: id.chars().take(64).collect(),
            });
        }
        Ok(())
    }
}

/// A channel's minimum: one of the alert severities (`low`…`critical`).
fn min_severity(text: &str) -> Option<Severity> {
    Severity::parse(text).filter(|s| Severity::ALERTS.contains(s))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Email,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Channel {
    pub id: String,
    pub org_id: String,
    pub kind: ChannelKind,
    pub target: String,
    /// Webhook signing secret; never serialized in listings.
    #[serde(skip)]
    pub secret: Option<String>,
    pub min_severity: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliverySummary {
    pub channel_kind: String,
    pub status: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub id: String,
    pub org_id: String,
    pub channel_id: String,
    pub notification_id: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A due delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: Delivery,
    pub channel: Channel,
    pub notification: Notification,
}

/// The channel in [`CHANNEL_COLUMNS`] order from column `at` on.
fn channel_row(r: &Row, at: usize) -> Result<Channel> {
    let kind: String = r.get(at + 2)?;
    Ok(Channel {
        id: r.get(at)?,
        org_id: r.get(at + 1)?,
        kind: if kind == "email" {
            ChannelKind::Email
        } else {
            ChannelKind::Webhook
        },
        target: r.get(at + 3)?,
        secret: r.get(at + 4)?,
        min_severity: r.get(at + 5)?,
        created_at: r.get(at + 6)?,
    })
}

/// The delivery in [`DELIVERY_COLUMNS`] order from column `at` on.
fn delivery_row(r: &Row, at: usize) -> Result<Delivery> {
    Ok(Delivery {
        id: r.get(at)?,
        org_id: r.get(at + 1)?,
        channel_id: r.get(at + 2)?,
        notification_id: r.get(at + 3)?,
        status: r.get(at + 4)?,
        attempts: r.get(at + 5)?,
        next_attempt_at: r.get(at + 6)?,
        last_status: r.get(at + 7)?,
        last_error: r.get(at + 8)?,
        created_at: r.get(at + 9)?,
        delivered_at: r.get(at + 10)?,
    })
}

const CHANNEL_COLUMNS: &str = "id, org_id, kind, target, secret, min_severity, created_at";
const DELIVERY_COLUMNS: &str = "id, org_id, channel_id, notification_id, status, attempts, \
     next_attempt_at, last_status, last_error, created_at, delivered_at";

impl MetaStore {
    /// Adds a channel; webhooks get a signing secret (returned, shown once).
    pub async fn create_channel(
        &self,
        org: &TenantId,
        kind: ChannelKind,
        target: &str,
        min_severity: &str,
    ) -> Result<Channel> {
        if self::min_severity(min_severity).is_none() {
            return Err(Error::Invalid(format!(
                "min_severity {min_severity:?} is not one of {}",
                Severity::list(&Severity::ALERTS)
            )));
        }
        let channel = Channel {
            id: random_id("ch_"),
            org_id: org.to_string(),
            kind,
            target: target.to_string(),
            secret: (kind == ChannelKind::Webhook)
                .then(|| format!("whsec_{}", hex::encode(rand::random::<[u8; 24]>()))),
            min_severity: min_severity.to_string(),
            created_at: now_ms(),
        };
        self.db
            .execute(
                &format!(
                    "INSERT INTO notification_channels ({CHANNEL_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    channel.id,
                    channel.org_id,
                    kind.as_str(),
                    channel.target,
                    channel.secret,
                    channel.min_severity,
                    channel.created_at
                ],
            )
            .await?;
        Ok(channel)
    }

    pub async fn list_channels(&self, org: &TenantId) -> Result<Vec<Channel>> {
        self.db
            .query(
                &format!(
                    "SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE org_id = ?1 \
                     ORDER BY created_at, id"
                ),
                params![org],
            )
            .await?
            .iter()
            .map(|r| channel_row(r, 0))
            .collect()
    }

    /// Removes a channel of `org`; its pending deliveries are dropped, the
    /// delivered and failed ones stay in the log.
    pub async fn delete_channel(&self, org: &TenantId, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        let n = tx
            .execute(
                "DELETE FROM notification_channels WHERE id = ?1 AND org_id = ?2",
                params![id, org],
            )
            .await?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "channel",
                id: id.to_string(),
            });
        }
        tx.execute(
            "DELETE FROM deliveries WHERE channel_id = ?1 AND status = 'pending'",
            params![id],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a pending delivery for each (channel, notification) pair
    /// that matches (same organization, severity at or above the channel's,
    /// notification created after the channel) and has none yet. Returns how
    /// many were added (by this call: a pair another dispatcher enqueued
    /// first is not counted).
    pub async fn enqueue_deliveries(&self) -> Result<usize> {
        let now = now_ms();
        // Oldest notifications first; the fixed order also makes
        // dispatchers that insert the same pairs at once (PostgreSQL) take
        // them in the same order, so none waits for another in a cycle.
        let candidates = self
            .db
            .query(
                "SELECT c.id, c.org_id, c.min_severity, n.id, n.severity \
                 FROM notification_channels c \
                 JOIN notifications n ON n.org_id = c.org_id AND n.created_at >= c.created_at \
                 WHERE NOT EXISTS (SELECT 1 FROM deliveries d \
                 WHERE d.channel_id = c.id AND d.notification_id = n.id) \
                 ORDER BY n.created_at, n.id, c.id LIMIT 1000",
                params![],
            )
            .await?;
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        let mut added = 0;
        for r in &candidates {
            let (channel, org, min): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
            let (notification, severity): (String, String) = (r.get(3)?, r.get(4)?);
            // Below the channel's threshold: recorded as skipped, so it is
            // not considered again (and the log says why nothing was sent).
            // A severity below `low` (or unknown) counts as `low`.
            let severity =
                Severity::parse(&severity).map_or(Severity::Low, |s| s.max(Severity::Low));
            let wanted = min_severity(&min).is_some_and(|min| severity >= min);
            added += tx
                .execute(
                    "INSERT INTO deliveries (id, org_id, channel_id, notification_id, status, \
                     attempts, next_attempt_at, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6) \
                     ON CONFLICT(channel_id, notification_id) DO NOTHING",
                    params![
                        random_id("dl_"),
                        org,
                        channel,
                        notification,
                        if wanted { "pending" } else { "skipped" },
                        now
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(usize::try_from(added).unwrap_or(usize::MAX))
    }

    /// Claims up to `limit` pending deliveries due at `now`, oldest
    /// first, with their channel and notification (a delivery whose
    /// channel or notification is gone is left out). A claimed delivery is
    /// not due again for [`DELIVERY_LEASE_MS`]: dispatchers of several
    /// query APIs sharing the store never attempt it twice at once, and one
    /// whose dispatcher died before [`MetaStore::record_attempt`] is tried
    /// again when the lease runs out (at least once, never lost).
    pub async fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<DueDelivery>> {
        // PostgreSQL: concurrent claims skip the rows another claim holds
        // (the usual queue pattern) instead of waiting for them, and the
        // outer condition, checked again on each row as the update reaches
        // it, leaves out a row another dispatcher claimed meanwhile. SQLite
        // runs one write at a time.
        let skip_locked = match self.db.backend() {
            crate::db::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            crate::db::Backend::Sqlite => "",
        };
        let claimed: Vec<String> = self
            .db
            .write_query(
                &format!(
                    "UPDATE deliveries SET next_attempt_at = ?2 \
                     WHERE status = 'pending' AND next_attempt_at <= ?1 AND id IN ( \
                       SELECT id FROM deliveries \
                       WHERE status = 'pending' AND next_attempt_at <= ?1 \
                       ORDER BY next_attempt_at, id LIMIT ?3{skip_locked}) \
                     RETURNING id"
                ),
                params![now, now.saturating_add(DELIVERY_LEASE_MS), limit],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect::<Result<_, _>>()?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let list = (1..=claimed.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let ids: Vec<crate::db::Param<'_>> = claimed
            .iter()
            .map(|id| crate::db::ToParam::to_param(id))
            .collect();
        self.db
            .write_query(
                &format!(
                    "SELECT d.id, d.org_id, d.channel_id, d.notification_id, d.status, \
                     d.attempts, d.next_attempt_at, d.last_status, d.last_error, d.created_at, \
                     d.delivered_at, \
                     c.id, c.org_id, c.kind, c.target, c.secret, c.min_severity, c.created_at, \
                     n.id, n.org_id, n.kind, n.severity, n.title, n.body, n.ref_id, \
                     n.created_at, n.read_at \
                     FROM deliveries d \
                     JOIN notification_channels c ON c.id = d.channel_id \
                     JOIN notifications n ON n.id = d.notification_id AND n.org_id = d.org_id \
                     WHERE d.id IN ({list}) ORDER BY d.created_at, d.id"
                ),
                &ids,
            )
            .await?
            .iter()
            .map(|r| {
                Ok(DueDelivery {
                    delivery: delivery_row(r, 0)?,
                    channel: channel_row(r, 11)?,
                    notification: notification_row(r, 18)?,
                })
            })
            .collect()
    }

    /// Records one attempt: delivered, or retried at `retry_at` (`None`:
    /// given up).
    pub async fn record_attempt(
        &self,
        id: &str,
        outcome: std::result::Result<Option<u16>, (Option<u16>, String)>,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        match outcome {
            Ok(status) => {
                self.db
                    .execute(
                        "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, \
                         last_status = ?2, last_error = NULL, delivered_at = ?3 WHERE id = ?1",
                        params![id, status, now],
                    )
                    .await?
            }
            Err((status, error)) => {
                self.db
                    .execute(
                        "UPDATE deliveries SET status = ?2, attempts = attempts + 1, \
                         last_status = ?3, last_error = ?4, next_attempt_at = ?5 WHERE id = ?1",
                        params![
                            id,
                            if retry_at.is_some() {
                                "pending"
                            } else {
                                "failed"
                            },
                            status,
                            error.chars().take(512).collect::<String>(),
                            retry_at.unwrap_or(now)
                        ],
                    )
                    .await?
            }
        };
        Ok(())
    }

    /// `org`'s notification deliveries created from `from` to before
    /// `until` (ms), counted per channel kind and status (a deleted
    /// channel's as `deleted channel`).
    pub async fn delivery_summary(
        &self,
        org: &TenantId,
        from: i64,
        until: i64,
    ) -> Result<Vec<DeliverySummary>> {
        self.db
            .query(
                "SELECT COALESCE(c.kind, 'deleted channel') AS kind, d.status, COUNT(*) \
                 FROM deliveries d LEFT JOIN notification_channels c ON c.id = d.channel_id \
                 WHERE d.org_id = ?1 AND d.created_at >= ?2 AND d.created_at < ?3 \
                 GROUP BY COALESCE(c.kind, 'deleted channel'), d.status ORDER BY 1, 2",
                params![org, from, until],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(DeliverySummary {
                    channel_kind: r.get(0)?,
                    status: r.get(1)?,
                    count: r.get::<i64>(2)?.max(0) as u64,
                })
            })
            .collect()
    }

    /// The delivery log of `org`, newest first (`before`: a delivery's
    /// `(created_at, id)` from the previous page).
    pub async fn list_deliveries(
        &self,
        org: &TenantId,
        channel: Option<&str>,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let (at, id) = before.unwrap_or((i64::MAX, ""));
        self.db
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries \
                     WHERE org_id = ?1 AND (?2 IS NULL OR channel_id = ?2) \
                     AND (created_at < ?3 OR (created_at = ?3 AND id < ?4 AND ?4 <> '')) \
                     ORDER BY created_at DESC, id DESC LIMIT ?5"
                ),
                params![org, channel, at, id, limit],
            )
            .await?
            .iter()
            .map(|r| delivery_row(r, 0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::store_with;
    use schemas::Plan;
    use serde_json::json;

    fn notification(org: &TenantId, id: &str, severity: &str) -> Notification {
        Notification {
            id: id.into(),
            org_id: org.clone(),
            kind: "anomaly".into(),
            severity: severity.into(),
            title: format!("n {id}"),
            body: json!({}),
            ref_id: id.into(),
            created_at: now_ms() + 1,
            read_at: None,
        }
    }

    #[tokio::test]
    async fn deliveries_follow_severity_once_per_channel_and_retry_until_given_up() {
        let store = crate::testing::store().await;
        store
            .ensure_default_org(Plan::Business, None)
            .await
            .unwrap();
        let org = TenantId::new("default").unwrap();
        let hook = store
            .create_channel(&org, ChannelKind::Webhook, "http://x/hook", "high")
            .await
            .unwrap();
        assert!(hook.secret.as_deref().unwrap().starts_with("whsec_"));
        let mail = store
            .create_channel(&org, ChannelKind::Email, "ops@example.com", "low")
            .await
            .unwrap();
        assert!(mail.secret.is_none());
        assert!(
            store
                .create_channel(&org, ChannelKind::Email, "a@b.c", "urgent")
                .await
                .is_err()
        );
        store
            .add_notification(&notification(&org, "n1", "medium"))
            .await
            .unwrap();
        store
            .add_notification(&notification(&org, "n2", "critical"))
            .await
            .unwrap();
        assert_eq!(store.enqueue_deliveries().await.unwrap(), 4);
        assert_eq!(store.enqueue_deliveries().await.unwrap(), 0, "idempotent");
        let due = store.due_deliveries(now_ms() + 10, 10).await.unwrap();
        // The webhook skips the medium one; email takes both.
        let mut pairs: Vec<(String, String)> = due
            .iter()
            .map(|d| (d.channel.target.clone(), d.notification.id.clone()))
            .collect();
        pairs.sort();
        assert_eq!(
            pairs,
            [
                ("http://x/hook".to_string(), "n2".to_string()),
                ("ops@example.com".to_string(), "n1".to_string()),
                ("ops@example.com".to_string(), "n2".to_string()),
            ]
        );
        // The webhook's one: retried, then given up.
        let first = &due
            .iter()
            .find(|d| d.channel.id == hook.id)
            .unwrap()
            .delivery
            .id;
        // Claimed: another dispatcher does not get them.
        assert!(
            store
                .due_deliveries(now_ms() + 10, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store
            .record_attempt(
                first,
                Err((Some(500), "server error".into())),
                Some(now_ms() + 60_000),
            )
            .await
            .unwrap();
        // The two email deliveries were never recorded (their dispatcher
        // died): due again when the lease runs out, with the retried one.
        assert_eq!(
            store
                .due_deliveries(now_ms() + DELIVERY_LEASE_MS + 10, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        store
            .record_attempt(first, Err((None, "refused".into())), None)
            .await
            .unwrap();
        let log = store.list_deliveries(&org, None, None, 10).await.unwrap();
        let failed = log.iter().find(|d| &d.id == first).unwrap();
        assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 2));
        assert_eq!(log.iter().filter(|d| d.status == "skipped").count(), 1);
        store.delete_channel(&org, &mail.id).await.unwrap();
        assert!(
            store
                .due_deliveries(now_ms() + 10 * DELIVERY_LEASE_MS, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    /// Dispatchers claiming at the same moment (on PostgreSQL, on
    /// connections of their own) never get the same delivery.
    #[tokio::test]
    async fn concurrent_claims_are_disjoint() {
        let (store, org) = store_with("acme").await;
        store
            .create_channel(&org, ChannelKind::Webhook, "http://x/hook", "low")
            .await
            .unwrap();
        for i in 0..40 {
            store
                .add_notification(&notification(&org, &format!("n{i}"), "high"))
                .await
                .unwrap();
        }
        assert_eq!(store.enqueue_deliveries().await.unwrap(), 40);
        // Rounds of four concurrent claims until nothing is due: every
        // delivery is claimed, and by one claim only. (A round may leave
        // some for the next: a claim that lost a race for a row skips it.)
        let now = now_ms() + 10;
        let mut ids: Vec<String> = Vec::new();
        for _ in 0..20 {
            let claims =
                futures::future::join_all((0..4).map(|_| store.due_deliveries(now, 15))).await;
            let round: Vec<String> = claims
                .into_iter()
                .flat_map(|c| c.unwrap())
                .map(|d| d.delivery.id)
                .collect();
            if round.is_empty() {
                break;
            }
            ids.extend(round);
        }
        let claimed = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!((claimed, ids.len()), (40, 40));
    }

    #[tokio::test]
    async fn notifications_are_recorded_once_and_paginate() {
        let (store, org) = store_with("acme").await;
        for i in 0..5 {
            let n = Notification {
                id: format!("n{i}"),
                org_id: org.clone(),
                kind: "anomaly".into(),
                severity: "high".into(),
                title: format!("anomaly {i}"),
                body: serde_json::json!({"score": 0.8}),
                ref_id: format!("a{i}"),
                created_at: 100 + i,
                read_at: None,
            };
            assert!(store.add_notification(&n).await.unwrap());
            // The same anomaly reported again: still one notification.
            assert!(
                !store
                    .add_notification(&Notification {
                        id: format!("dup{i}"),
                        ..n
                    })
                    .await
                    .unwrap()
            );
        }
        let page = store
            .list_notifications(&org, false, None, 2)
            .await
            .unwrap();
        let ids: Vec<_> = page.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n4", "n3"]);
        let last = page.last().unwrap();
        let next = store
            .list_notifications(&org, false, Some((last.created_at, &last.id)), 10)
            .await
            .unwrap();
        let ids: Vec<_> = next.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n2", "n1", "n0"]);
        store.mark_notification_read(&org, "n4").await.unwrap();
        let unread = store
            .list_notifications(&org, true, None, 10)
            .await
            .unwrap();
        assert_eq!(unread.len(), 4);
        assert_eq!(store.unread_notifications(&org).await.unwrap(), 4);
        assert!(store.mark_notification_read(&org, "nope").await.is_err());
        // Deleting the organization removes them.
        store.delete_organization(&org).await.unwrap();
        assert!(
            store
                .list_notifications(&org, false, None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
