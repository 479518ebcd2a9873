//! Stripe's webhook events, applied exactly once: the subscription's status
//! and plan, and invoice payments.
//!
//! Events are read into typed structs holding only the fields used. Stripe
//! adds fields, and some are objects or strings depending on the request
//! that produced them (`customer` is an id unless expanded), so every field
//! is optional and a field of an unexpected shape reads as absent rather
//! than refusing the event — the same leniency Stripe's own libraries have.
//! The signature is checked before this (see [`crate::signature`]).

use schemas::{Plan, TenantId};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::AuditEntry;
use crate::db::params;
use crate::error::{Error, Result};
use crate::store::{MetaStore, now_ms};

/// A Stripe subscription as SecureNet keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub status: String,
    pub updated_at: i64,
}

/// A payment Stripe reported for an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoicePayment {
    pub stripe_invoice_id: String,
    pub status: String,
    pub amount_cents: i64,
    pub period: Option<String>,
    pub at: i64,
}

/// What handling a Stripe event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum StripeOutcome {
    Applied(String),
    /// Seen before (Stripe retries, or a replay): nothing done again.
    Duplicate,
    /// Valid but not for us (unknown type or organization, or older than
    /// what was already applied).
    Ignored(String),
}

/// A field that reads as `None` when absent, null or of another shape.
fn lenient<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    Ok(T::deserialize(Value::deserialize(d)?).ok())
}

/// The envelope of every event.
#[derive(Debug, Default, Deserialize)]
pub struct Event {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(rename = "type", default, deserialize_with = "lenient")]
    pub kind: Option<String>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient")]
    pub created: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub data: Option<EventData>,
}

#[derive(Debug, Default, Deserialize)]
pub struct EventData {
    /// The subscription or invoice, read by [`Event::kind`].
    #[serde(default)]
    pub object: Option<Value>,
}

/// The metadata SecureNet sets on Stripe objects it creates.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default, deserialize_with = "lenient")]
    pub org_id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub plan: Option<String>,
    /// An invoice's billing month, `YYYY-MM`.
    #[serde(default, deserialize_with = "lenient")]
    pub period: Option<String>,
}

/// `data.object` of `customer.subscription.*` events.
#[derive(Debug, Default, Deserialize)]
pub struct SubscriptionObject {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub metadata: Option<Metadata>,
    #[serde(default, deserialize_with = "lenient")]
    pub items: Option<List<SubscriptionItem>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct List<T> {
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default, deserialize_with = "lenient")]
    pub price: Option<Price>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Price {
    #[serde(default, deserialize_with = "lenient")]
    pub lookup_key: Option<String>,
}

/// `data.object` of `invoice.paid` and `invoice.payment_failed` events.
#[derive(Debug, Default, Deserialize)]
pub struct InvoiceObject {
    #[serde(default, deserialize_with = "lenient")]
    pub id: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub subscription: Option<String>,
    #[serde(default, deserialize_with = "lenient")]
    pub amount_paid: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub amount_due: Option<i64>,
    /// Unix seconds.
    #[serde(default, deserialize_with = "lenient")]
    pub period_start: Option<i64>,
    #[serde(default, deserialize_with = "lenient")]
    pub metadata: Option<Metadata>,
}

impl SubscriptionObject {
    /// The plan it is for: `metadata.plan`, else the first item's price
    /// `lookup_key`.
    fn plan(&self) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.plan.as_deref())
            .or_else(|| {
                self.items
                    .as_ref()?
                    .data
                    .first()?
                    .price
                    .as_ref()?
                    .lookup_key
                    .as_deref()
            })
    }
}

/// The events handled, with their objects.
enum Kind {
    SubscriptionChanged(SubscriptionObject),
    SubscriptionDeleted(SubscriptionObject),
    Invoice { paid: bool, invoice: InvoiceObject },
}

impl Kind {
    /// `None` for event types SecureNet does not handle.
    fn read(kind: &str, object: &Value) -> Option<Self> {
        fn object_of<T: DeserializeOwned + Default>(v: &Value) -> T {
            T::deserialize(v).unwrap_or_default()
        }
        Some(match kind {
            "customer.subscription.created" | "customer.subscription.updated" => {
                Self::SubscriptionChanged(object_of(object))
            }
            "customer.subscription.deleted" => Self::SubscriptionDeleted(object_of(object)),
            "invoice.paid" | "invoice.payment_failed" => Self::Invoice {
                paid: kind == "invoice.paid",
                invoice: object_of(object),
            },
            _ => return None,
        })
    }

    /// What identifies the organization: the metadata's `org_id`, the
    /// subscription id, the customer id.
    fn owner(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        match self {
            Self::SubscriptionChanged(s) | Self::SubscriptionDeleted(s) => (
                s.metadata.as_ref().and_then(|m| m.org_id.as_deref()),
                s.id.as_deref(),
                s.customer.as_deref(),
            ),
            Self::Invoice { invoice: i, .. } => (
                i.metadata.as_ref().and_then(|m| m.org_id.as_deref()),
                i.subscription.as_deref(),
                i.customer.as_deref(),
            ),
        }
    }
}

impl MetaStore {
    pub async fn subscription(&self, org: &TenantId) -> Result<Option<Subscription>> {
        self.db
            .query_opt(
                "SELECT stripe_customer_id, stripe_subscription_id, status, updated_at \
                 FROM subscriptions WHERE org_id = ?1",
                params![org],
            )
            .await?
            .map(|r| {
                Ok(Subscription {
                    stripe_customer_id: r.get(0)?,
                    stripe_subscription_id: r.get(1)?,
                    status: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            })
            .transpose()
    }

    pub async fn invoice_payments(&self, org: &TenantId) -> Result<Vec<InvoicePayment>> {
        self.db
            .query(
                "SELECT stripe_invoice_id, status, amount_cents, period, at FROM invoice_payments \
                 WHERE org_id = ?1 ORDER BY at",
                params![org],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(InvoicePayment {
                    stripe_invoice_id: r.get(0)?,
                    status: r.get(1)?,
                    amount_cents: r.get(2)?,
                    period: r.get(3)?,
                    at: r.get(4)?,
                })
            })
            .collect()
    }

    /// Handles one verified Stripe event exactly once (by event id).
    ///
    /// - `customer.subscription.created|updated`: the subscription's status,
    ///   and its plan (`metadata.plan`, else the first item's price
    ///   `lookup_key`) when it changed; the organization is
    ///   `metadata.org_id`, else the one the subscription is known for.
    ///   Events older than the last applied one are ignored (Stripe does
    ///   not order deliveries).
    /// - `customer.subscription.deleted`: status `canceled` (the plan stays
    ///   until an operator or a new subscription changes it).
    /// - `invoice.paid|invoice.payment_failed`: the payment, and status
    ///   `active` or `past_due`.
    pub async fn apply_stripe_event(&self, event: &Value) -> Result<StripeOutcome> {
        let event = Event::deserialize(event).unwrap_or_default();
        let id = event
            .id
            .as_deref()
            .ok_or_else(|| Error::Invalid("Stripe event without an id".into()))?;
        let kind = event
            .kind
            .as_deref()
            .ok_or_else(|| Error::Invalid("Stripe event without a type".into()))?;
        let created_ms = event.created.unwrap_or(0) * 1000;
        let seen = self
            .db
            .query_opt(
                "SELECT outcome FROM stripe_events WHERE id = ?1",
                params![id],
            )
            .await?;
        if seen.is_some() {
            return Ok(StripeOutcome::Duplicate);
        }
        let object = event
            .data
            .as_ref()
            .and_then(|d| d.object.as_ref())
            .ok_or_else(|| Error::Invalid("Stripe event without data.object".into()))?;
        let (org, outcome) = self.stripe_effect(id, kind, object, created_ms).await?;
        let detail = match &outcome {
            StripeOutcome::Applied(d) | StripeOutcome::Ignored(d) => d.clone(),
            StripeOutcome::Duplicate => "duplicate".into(),
        };
        let inserted = self
            .db
            .execute(
                "INSERT INTO stripe_events (id, type, org_id, outcome, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(id) DO NOTHING",
                params![id, kind, org, detail, now_ms()],
            )
            .await?;
        // Two deliveries racing: the second insert loses, and says so.
        Ok(if inserted == 0 {
            StripeOutcome::Duplicate
        } else {
            outcome
        })
    }

    async fn org_for_stripe(
        &self,
        org_id: Option<&str>,
        subscription: Option<&str>,
        customer: Option<&str>,
    ) -> Result<Option<TenantId>> {
        if let Some(org) = org_id
            && let Ok(id) = TenantId::new(org)
            && self.organization(&id).await?.is_some()
        {
            return Ok(Some(id));
        }
        let found: Option<String> = self
            .db
            .query_opt(
                "SELECT org_id FROM subscriptions WHERE stripe_subscription_id = ?1 \
                 OR (?1 IS NULL AND stripe_customer_id = ?2) LIMIT 1",
                params![subscription, customer],
            )
            .await?
            .map(|r| r.get(0))
            .transpose()?;
        Ok(found.and_then(|o| TenantId::new(&o).ok()))
    }

    async fn set_subscription_status(
        &self,
        org: &TenantId,
        customer: Option<&str>,
        status: &str,
        event_ms: i64,
        sub_id: Option<&str>,
    ) -> Result<bool> {
        // The stored values are named by their table: PostgreSQL finds a bare
        // column name ambiguous between the row and `excluded`.
        let n = self
            .db
            .execute(
                "INSERT INTO subscriptions (org_id, stripe_customer_id, stripe_subscription_id, \
                 status, last_event_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(org_id) DO UPDATE SET \
                 stripe_customer_id = COALESCE(excluded.stripe_customer_id, \
                 subscriptions.stripe_customer_id), \
                 stripe_subscription_id = COALESCE(excluded.stripe_subscription_id, \
                 subscriptions.stripe_subscription_id), \
                 status = excluded.status, last_event_at = excluded.last_event_at, \
                 updated_at = excluded.updated_at \
                 WHERE excluded.last_event_at >= subscriptions.last_event_at",
                params![org, customer, sub_id, status, event_ms, now_ms()],
            )
            .await?;
        Ok(n > 0)
    }

    async fn stripe_effect(
        &self,
        event_id: &str,
        kind: &str,
        object: &Value,
        event_ms: i64,
    ) -> Result<(Option<TenantId>, StripeOutcome)> {
        let Some(effect) = Kind::read(kind, object) else {
            return Ok((
                None,
                StripeOutcome::Ignored(format!("event type {kind} is not handled")),
            ));
        };
        let (org_id, sub_id, customer) = effect.owner();
        let Some(org) = self.org_for_stripe(org_id, sub_id, customer).await? else {
            return Ok((
                None,
                StripeOutcome::Ignored("no organization for this event".into()),
            ));
        };
        let outcome = match &effect {
            Kind::SubscriptionChanged(sub) => {
                let status = sub.status.as_deref().unwrap_or("active");
                if !self
                    .set_subscription_status(&org, customer, status, event_ms, sub_id)
                    .await?
                {
                    StripeOutcome::Ignored("older than the last applied event".into())
                } else {
                    match sub.plan().map(str::parse::<Plan>).transpose()? {
                        Some(plan) => {
                            let before = self.organization(&org).await?.map(|o| o.plan);
                            let org = self.change_plan(&org, plan, "stripe").await?;
                            if before != Some(org.plan) {
                                self.append_audit(&AuditEntry::system(
                                    &org.id,
                                    format!("stripe:{event_id}"),
                                    "system",
                                    "POST",
                                    "/api/billing/webhook/stripe",
                                    format!(
                                        "{kind}: plan {} → {}",
                                        before.map_or("-", Plan::as_str),
                                        org.plan
                                    ),
                                    200,
                                ))
                                .await?;
                            }
                            StripeOutcome::Applied(format!(
                                "subscription {status}, plan {}",
                                org.plan
                            ))
                        }
                        None => StripeOutcome::Applied(format!("subscription {status}")),
                    }
                }
            }
            Kind::SubscriptionDeleted(_) => {
                if self
                    .set_subscription_status(&org, customer, "canceled", event_ms, sub_id)
                    .await?
                {
                    StripeOutcome::Applied("subscription canceled".into())
                } else {
                    StripeOutcome::Ignored("older than the last applied event".into())
                }
            }
            Kind::Invoice { paid, invoice } => {
                let id = invoice
                    .id
                    .as_deref()
                    .ok_or_else(|| Error::Invalid("invoice without an id".into()))?;
                let amount = if *paid {
                    invoice.amount_paid
                } else {
                    invoice.amount_due
                }
                .unwrap_or(0);
                let period = invoice
                    .metadata
                    .as_ref()
                    .and_then(|m| m.period.clone())
                    .or_else(|| {
                        invoice.period_start.map(|s| {
                            crate::invoice::month_start(s * 1000)
                                .format("%Y-%m")
                                .to_string()
                        })
                    });
                let status = if *paid { "paid" } else { "failed" };
                self.db
                    .execute(
                        "INSERT INTO invoice_payments (stripe_invoice_id, org_id, status, \
                         amount_cents, period, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                         ON CONFLICT(stripe_invoice_id) DO UPDATE SET status = excluded.status, \
                         amount_cents = excluded.amount_cents, at = excluded.at",
                        params![id, org, status, amount, period, event_ms],
                    )
                    .await?;
                self.set_subscription_status(
                    &org,
                    customer,
                    if *paid { "active" } else { "past_due" },
                    event_ms,
                    sub_id,
                )
                .await?;
                StripeOutcome::Applied(format!("invoice {id} {status}"))
            }
        };
        Ok((Some(org), outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{org, t};
    use serde_json::json;

    #[test]
    fn events_read_leniently_into_their_types() {
        let sub: SubscriptionObject = serde_json::from_value(json!({
            "id": "sub_1",
            "customer": {"id": "cus_expanded"},
            "status": "active",
            "metadata": {"org_id": "acme", "extra": 3},
            "items": {"data": [{"price": {"lookup_key": "business"}}]},
            "unknown": [1, 2]
        }))
        .unwrap();
        assert_eq!(sub.id.as_deref(), Some("sub_1"));
        assert_eq!(sub.customer, None, "an expanded customer reads as absent");
        assert_eq!(sub.plan(), Some("business"));
        let event: Event =
            serde_json::from_value(json!({"id": 7, "type": "x", "created": "soon"})).unwrap();
        assert_eq!(
            (event.id, event.kind.as_deref(), event.created),
            (None, Some("x"), None)
        );
        assert!(matches!(
            Kind::read("invoice.payment_failed", &json!("not an object")),
            Some(Kind::Invoice { paid: false, .. })
        ));
        assert!(Kind::read("charge.refunded", &json!({})).is_none());
    }

    /// Each event once, none older than the last applied; an event that
    /// leaves out the customer keeps the stored one.
    #[tokio::test]
    async fn events_apply_once_and_in_order() {
        fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
            json!({"id": id, "type": kind, "created": created, "data": {"object": object}})
        }
        let store = crate::testing::store().await;
        org(&store, "acme").await;
        let updated = event(
            "evt_1",
            "customer.subscription.updated",
            100,
            json!({"id": "sub_1", "customer": "cus_1", "status": "active",
                   "metadata": {"org_id": "acme", "plan": "enterprise"}}),
        );
        assert_eq!(
            store.apply_stripe_event(&updated).await.unwrap(),
            StripeOutcome::Applied("subscription active, plan enterprise".into())
        );
        assert_eq!(
            store.apply_stripe_event(&updated).await.unwrap(),
            StripeOutcome::Duplicate
        );
        assert_eq!(
            store.organization(&t("acme")).await.unwrap().unwrap().plan,
            Plan::Enterprise
        );
        let older = event(
            "evt_0",
            "customer.subscription.updated",
            50,
            json!({"id": "sub_1", "status": "past_due", "metadata": {"org_id": "acme"}}),
        );
        assert_eq!(
            store.apply_stripe_event(&older).await.unwrap(),
            StripeOutcome::Ignored("older than the last applied event".into())
        );
        // Known by its subscription alone.
        let paid = event(
            "evt_2",
            "invoice.paid",
            200,
            json!({"id": "in_1", "subscription": "sub_1", "amount_paid": 4900}),
        );
        assert_eq!(
            store.apply_stripe_event(&paid).await.unwrap(),
            StripeOutcome::Applied("invoice in_1 paid".into())
        );
        let deleted = event(
            "evt_3",
            "customer.subscription.deleted",
            300,
            json!({"id": "sub_1", "metadata": {"org_id": "acme"}}),
        );
        assert_eq!(
            store.apply_stripe_event(&deleted).await.unwrap(),
            StripeOutcome::Applied("subscription canceled".into())
        );
        let stored = store.subscription(&t("acme")).await.unwrap().unwrap();
        assert_eq!(
            (
                stored.stripe_customer_id.as_deref(),
                stored.stripe_subscription_id.as_deref(),
                stored.status.as_str()
            ),
            (Some("cus_1"), Some("sub_1"), "canceled")
        );
        let payments = store.invoice_payments(&t("acme")).await.unwrap();
        assert_eq!(payments.len(), 1);
        assert_eq!(
            (
                payments[0].stripe_invoice_id.as_str(),
                payments[0].status.as_str()
            ),
            ("in_1", "paid")
        );
        assert_eq!((payments[0].amount_cents, payments[0].at), (4900, 200_000));
        let unknown = event("evt_4", "charge.refunded", 400, json!({}));
        assert!(matches!(
            store.apply_stripe_event(&unknown).await.unwrap(),
            StripeOutcome::Ignored(_)
        ));
    }
}
