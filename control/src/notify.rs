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

use rusqlite::{OptionalExtension, params};
use schemas::Severity;
use schemas::TenantId;
use serde::Serialize;
use serde_json::Value;

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

fn notification_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        org_id: tenant(r.get(1)?)?,
        kind: r.get(2)?,
        severity: r.get(3)?,
        title: r.get(4)?,
        body: json(r.get(5)?),
        ref_id: r.get(6)?,
        created_at: r.get(7)?,
        read_at: r.get(8)?,
    })
}

impl MetaStore {
    /// Records a notification once per `(org, kind, ref_id)`; returns
    /// whether it was new.
    pub fn add_notification(&self, n: &Notification) -> Result<bool> {
        let inserted = self.conn().execute(
            "INSERT INTO notifications (id, org_id, kind, severity, title, body, ref_id, \
             created_at, read_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
             ON CONFLICT(org_id, kind, ref_id) DO NOTHING",
            params![
                n.id,
                n.org_id.as_str(),
                n.kind,
                n.severity,
                n.title,
                n.body.to_string(),
                n.ref_id,
                n.created_at,
                n.read_at,
            ],
        )?;
        Ok(inserted == 1)
    }

    /// Notifications, newest first; `before` is a cursor (`created_at`,
    /// `id`) from the previous page's last item.
    pub fn list_notifications(
        &self,
        org: &TenantId,
        unread_only: bool,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Notification>> {
        let conn = self.conn();
        let (at, id) = before.unwrap_or((i64::MAX, ""));
        let mut stmt = conn.prepare(
            "SELECT id, org_id, kind, severity, title, body, ref_id, created_at, read_at \
             FROM notifications WHERE org_id = ?1 AND (?2 = 0 OR read_at IS NULL) \
             AND (created_at < ?3 OR (created_at = ?3 AND id < ?4 AND ?4 <> '')) \
             ORDER BY created_at DESC, id DESC LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![org.as_str(), unread_only, at, id, limit as i64],
            notification_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Unread notifications of an organization.
    pub fn unread_notifications(&self, org: &TenantId) -> Result<u64> {
        let n: i64 = self.conn().query_row(
            "SELECT count(*) FROM notifications WHERE org_id = ?1 AND read_at IS NULL",
            [org.as_str()],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Marks a notification read (idempotent).
    pub fn mark_notification_read(&self, org: &TenantId, id: &str) -> Result<()> {
        let changed = self.conn().execute(
            "UPDATE notifications SET read_at = coalesce(read_at, ?3) \
             WHERE org_id = ?1 AND id = ?2",
            params![org.as_str(), id, now_ms()],
        )?;
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

fn channel_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Channel> {
    let kind: String = r.get(2)?;
    Ok(Channel {
        id: r.get(0)?,
        org_id: r.get(1)?,
        kind: if kind == "email" {
            ChannelKind::Email
        } else {
            ChannelKind::Webhook
        },
        target: r.get(3)?,
        secret: r.get(4)?,
        min_severity: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        org_id: r.get(1)?,
        channel_id: r.get(2)?,
        notification_id: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        next_attempt_at: r.get(6)?,
        last_status: r.get(7)?,
        last_error: r.get(8)?,
        created_at: r.get(9)?,
        delivered_at: r.get(10)?,
    })
}

const CHANNEL_COLUMNS: &str = "id, org_id, kind, target, secret, min_severity, created_at";
const DELIVERY_COLUMNS: &str = "id, org_id, channel_id, notification_id, status, attempts, \
     next_attempt_at, last_status, last_error, created_at, delivered_at";

impl MetaStore {
    /// Adds a channel; webhooks get a signing secret (returned, shown once).
    pub fn create_channel(
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
        self.conn().execute(
            &format!("INSERT INTO notification_channels ({CHANNEL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
            params![
                channel.id,
                channel.org_id,
                kind.as_str(),
                channel.target,
                channel.secret,
                channel.min_severity,
                channel.created_at
            ],
        )?;
        Ok(channel)
    }

    pub fn list_channels(&self, org: &TenantId) -> Result<Vec<Channel>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE org_id = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([org.as_str()], channel_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes a channel of `org`; its pending deliveries are dropped, the
    /// delivered and failed ones stay in the log.
    pub fn delete_channel(&self, org: &TenantId, id: &str) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "DELETE FROM notification_channels WHERE id = ?1 AND org_id = ?2",
            params![id, org.as_str()],
        )?;
        if n == 0 {
            return Err(Error::NotFound {
                what: "channel",
                id: id.to_string(),
            });
        }
        tx.execute(
            "DELETE FROM deliveries WHERE channel_id = ?1 AND status = 'pending'",
            [id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Creates a pending delivery for each (channel, notification) pair
    /// that matches (same organization, severity at or above the channel's,
    /// notification created after the channel) and has none yet. Returns how
    /// many were added.
    pub fn enqueue_deliveries(&self) -> Result<usize> {
        let now = now_ms();
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT c.id, c.org_id, c.min_severity, n.id, n.severity FROM notification_channels c \
             JOIN notifications n ON n.org_id = c.org_id AND n.created_at >= c.created_at \
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.channel_id = c.id AND d.notification_id = n.id) \
             LIMIT 1000",
        )?;
        let candidates: Vec<(String, String, String, String, String)> = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut added = 0;
        for (channel, org, min, notification, severity) in candidates {
            // Below the channel's threshold: recorded as skipped, so it is
            // not considered again (and the log says why nothing was sent).
            // A severity below `low` (or unknown) counts as `low`.
            let severity =
                Severity::parse(&severity).map_or(Severity::Low, |s| s.max(Severity::Low));
            let wanted = min_severity(&min).is_some_and(|min| severity >= min);
            added += conn.execute(
                "INSERT INTO deliveries (id, org_id, channel_id, notification_id, status, attempts, \
                 next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6) \
                 ON CONFLICT(channel_id, notification_id) DO NOTHING",
                params![
                    random_id("dl_"),
                    org,
                    channel,
                    notification,
                    if wanted { "pending" } else { "skipped" },
                    now
                ],
            )?;
        }
        Ok(added)
    }

    /// Pending deliveries due at `now`, oldest first.
    pub fn due_deliveries(&self, now: i64, limit: usize) -> Result<Vec<DueDelivery>> {
        let ids: Vec<(String, String, String)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT id, channel_id, notification_id FROM deliveries \
                 WHERE status = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at, id LIMIT ?2",
            )?;
            stmt.query_map(params![now, limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for (id, channel_id, notification_id) in ids {
            let conn = self.conn();
            let delivery = conn
                .prepare_cached(&format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1"
                ))?
                .query_row([&id], delivery_row)?;
            let channel = conn
                .prepare_cached(&format!(
                    "SELECT {CHANNEL_COLUMNS} FROM notification_channels WHERE id = ?1"
                ))?
                .query_row([&channel_id], channel_row)
                .optional()?;
            let notification = conn
                .prepare_cached(
                    "SELECT id, org_id, kind, severity, title, body, ref_id, created_at, read_at \
                     FROM notifications WHERE id = ?1 AND org_id = ?2",
                )?
                .query_row(params![notification_id, delivery.org_id], |r| {
                    let body: String = r.get(5)?;
                    Ok(Notification {
                        id: r.get(0)?,
                        org_id: TenantId::new(&r.get::<_, String>(1)?)
                            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                        kind: r.get(2)?,
                        severity: r.get(3)?,
                        title: r.get(4)?,
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                        ref_id: r.get(6)?,
                        created_at: r.get(7)?,
                        read_at: r.get(8)?,
                    })
                })
                .optional()?;
            if let (Some(channel), Some(notification)) = (channel, notification) {
                out.push(DueDelivery {
                    delivery,
                    channel,
                    notification,
                });
            }
        }
        Ok(out)
    }

    /// Records one attempt: delivered, or retried at `retry_at` (`None`:
    /// given up).
    pub fn record_attempt(
        &self,
        id: &str,
        outcome: std::result::Result<Option<u16>, (Option<u16>, String)>,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let now = now_ms();
        let conn = self.conn();
        match outcome {
            Ok(status) => conn.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, last_status = ?2, \
                 last_error = NULL, delivered_at = ?3 WHERE id = ?1",
                params![id, status, now],
            )?,
            Err((status, error)) => conn.execute(
                "UPDATE deliveries SET status = ?2, attempts = attempts + 1, last_status = ?3, \
                 last_error = ?4, next_attempt_at = ?5 WHERE id = ?1",
                params![
                    id,
                    if retry_at.is_some() { "pending" } else { "failed" },
                    status,
                    error.chars().take(512).collect::<String>(),
                    retry_at.unwrap_or(now)
                ],
            )?,
        };
        Ok(())
    }

    /// The delivery log of `org`, newest first (`before`: a delivery's
    /// `(created_at, id)` from the previous page).
    pub fn list_deliveries(
        &self,
        org: &TenantId,
        channel: Option<&str>,
        before: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let (at, id) = before.unwrap_or((i64::MAX, ""));
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE org_id = ?1 AND (?2 IS NULL OR channel_id = ?2) \
             AND (created_at < ?3 OR (created_at = ?3 AND id < ?4 AND ?4 <> '')) \
             ORDER BY created_at DESC, id DESC LIMIT ?5"
        ))?;
        let rows = stmt.query_map(
            params![org.as_str(), channel, at, id, limit as i64],
            delivery_row,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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

    #[test]
    fn deliveries_follow_severity_once_per_channel_and_retry_until_given_up() {
        let store = MetaStore::open_in_memory().unwrap();
        store.ensure_default_org(Plan::Business, None).unwrap();
        let org = TenantId::new("default").unwrap();
        let hook = store
            .create_channel(&org, ChannelKind::Webhook, "http://x/hook", "high")
            .unwrap();
        assert!(hook.secret.as_deref().unwrap().starts_with("whsec_"));
        let mail = store
            .create_channel(&org, ChannelKind::Email, "ops@example.com", "low")
            .unwrap();
        assert!(mail.secret.is_none());
        assert!(
            store
                .create_channel(&org, ChannelKind::Email, "a@b.c", "urgent")
                .is_err()
        );
        store
            .add_notification(&notification(&org, "n1", "medium"))
            .unwrap();
        store
            .add_notification(&notification(&org, "n2", "critical"))
            .unwrap();
        assert_eq!(store.enqueue_deliveries().unwrap(), 4);
        assert_eq!(store.enqueue_deliveries().unwrap(), 0, "idempotent");
        let due = store.due_deliveries(now_ms() + 10, 10).unwrap();
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
        store
            .record_attempt(
                first,
                Err((Some(500), "server error".into())),
                Some(now_ms() + 60_000),
            )
            .unwrap();
        assert_eq!(store.due_deliveries(now_ms() + 10, 10).unwrap().len(), 2);
        store
            .record_attempt(first, Err((None, "refused".into())), None)
            .unwrap();
        let log = store.list_deliveries(&org, None, None, 10).unwrap();
        let failed = log.iter().find(|d| &d.id == first).unwrap();
        assert_eq!((failed.status.as_str(), failed.attempts), ("failed", 2));
        assert_eq!(log.iter().filter(|d| d.status == "skipped").count(), 1);
        store.delete_channel(&org, &mail.id).unwrap();
        assert!(store.due_deliveries(now_ms() + 10, 10).unwrap().is_empty());
    }

    #[test]
    fn notifications_are_recorded_once_and_paginate() {
        let (store, org) = store_with("acme");
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
            assert!(store.add_notification(&n).unwrap());
            // The same anomaly reported again: still one notification.
            assert!(
                !store
                    .add_notification(&Notification {
                        id: format!("dup{i}"),
                        ..n
                    })
                    .unwrap()
            );
        }
        let page = store.list_notifications(&org, false, None, 2).unwrap();
        let ids: Vec<_> = page.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n4", "n3"]);
        let last = page.last().unwrap();
        let next = store
            .list_notifications(&org, false, Some((last.created_at, &last.id)), 10)
            .unwrap();
        let ids: Vec<_> = next.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["n2", "n1", "n0"]);
        store.mark_notification_read(&org, "n4").unwrap();
        let unread = store.list_notifications(&org, true, None, 10).unwrap();
        assert_eq!(unread.len(), 4);
        assert!(store.mark_notification_read(&org, "nope").is_err());
        // Deleting the organization removes them.
        store.delete_organization(&org).unwrap();
        assert!(
            store
                .list_notifications(&org, false, None, 10)
                .unwrap()
                .is_empty()
        );
    }
}
