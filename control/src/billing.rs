//! Billing: plan changes with their history, invoices (integer cents), and
//! the Stripe webhook (signature check, idempotent event handling).
//!
//! Plan changes take effect immediately and the month is prorated by day:
//! a change on day *d* (UTC) bills the new plan from day *d* on, and the
//! day's plan is the last one chosen that day. Overage is counted against
//! the limits of the plan in effect on the period's last billed day: the
//! distinct devices seen in the month over its device limit at $5 each,
//! the scans in the month over its scan limit at $0.10 each.

use chrono::{DateTime, Datelike, Months, NaiveDate};
use ring::hmac;
use rusqlite::{OptionalExtension, params};
use schemas::plans::{DEVICE_OVERAGE_CENTS, SCAN_OVERAGE_CENTS};
use schemas::{Plan, TenantId};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{MetaStore, Organization, now_ms};

/// One plan held for a number of days of an invoice's month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvoiceLine {
    pub description: String,
    pub quantity: u64,
    pub unit_cents: u64,
    pub amount_cents: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invoice {
    pub month: String,
    /// The plan billed for overage: the one on the last billed day.
    pub plan: Plan,
    pub lines: Vec<InvoiceLine>,
    pub base_cents: u64,
    pub overage_cents: u64,
    pub total_cents: u64,
    pub devices: u64,
    pub scans: u64,
}

fn day_of(ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// Rounds `a / b` half up (integers only).
fn div_round(a: u64, b: u64) -> u64 {
    (2 * a + b) / (2 * b)
}

/// The invoice of the month starting `first` for an organization created at
/// `created_at` whose plan history is `history` (`(at ms, plan)`, oldest
/// first; the first entry is the plan it was created with). `None` when the
/// organization did not exist that month.
/// `terms` are the organization's own limits (an operator override),
/// applied over the billed plan's for overage.
pub fn compute_invoice(
    first: NaiveDate,
    created_at: i64,
    history: &[(i64, Plan)],
    devices: u64,
    scans: u64,
    terms: Option<&schemas::LimitsOverride>,
) -> Option<Invoice> {
    let next = first.checked_add_months(Months::new(1))?;
    let days_in_month = (next - first).num_days() as u64;
    let start = first.max(day_of(created_at));
    if start >= next || history.is_empty() {
        return None;
    }
    // Segments of consecutive days on one plan. A day is billed at the
    // highest-priced plan held at any moment of it (the plan at its start
    // and every plan changed to during it): using a plan's features for
    // part of a day and downgrading before midnight still pays that day.
    let mut segments: Vec<(Plan, u64)> = Vec::new();
    let mut day = start;
    while day < next {
        let day_start = day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis();
        // In effect at 00:00:00.000 (a change at midnight sharp replaces
        // the previous plan for the whole day).
        let at_start = history
            .iter()
            .rev()
            .find(|(at, _)| *at <= day_start)
            .map_or(history[0].1, |(_, p)| *p);
        let plan = history
            .iter()
            .filter(|(at, _)| *at > day_start && day_of(*at) == day)
            .map(|(_, p)| *p)
            .chain(std::iter::once(at_start))
            .max_by_key(|p| p.price_cents())
            .unwrap_or(at_start);
        match segments.last_mut() {
            Some((p, n)) if *p == plan => *n += 1,
            _ => segments.push((plan, 1)),
        }
        day = day.succ_opt()?;
    }
    let mut lines: Vec<InvoiceLine> = segments
        .iter()
        .map(|&(plan, days)| InvoiceLine {
            description: format!("{plan} plan, {days} of {days_in_month} days"),
            quantity: days,
            unit_cents: plan.price_cents(),
            amount_cents: div_round(plan.price_cents() * days, days_in_month),
        })
        .collect();
    let base_cents = lines.iter().map(|l| l.amount_cents).sum();
    let plan = segments.last()?.0;
    let limits = plan.limits().with(terms);
    let mut overage_cents = 0;
    for (what, used, limit, unit) in [
        ("devices", devices, limits.max_devices, DEVICE_OVERAGE_CENTS),
        (
            "scans",
            scans,
            limits.max_scans_per_month,
            SCAN_OVERAGE_CENTS,
        ),
    ] {
        let over = used.saturating_sub(limit);
        if over > 0 {
            lines.push(InvoiceLine {
                description: format!("{what} over the {plan} limit of {limit}"),
                quantity: over,
                unit_cents: unit,
                amount_cents: over * unit,
            });
            overage_cents += over * unit;
        }
    }
    Some(Invoice {
        month: first.format("%Y-%m").to_string(),
        plan,
        lines,
        base_cents,
        overage_cents,
        total_cents: base_cents + overage_cents,
        devices,
        scans,
    })
}

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

/// Why a `Stripe-Signature` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("Stripe-Signature header is malformed (expected t=<unix time>,v1=<hex>)")]
    Malformed,
    #[error(
        "Stripe-Signature timestamp is {age_secs} s away from now (tolerance {tolerance_secs} s)"
    )]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("no Stripe-Signature v1 signature matches the payload")]
    Mismatch,
}

/// Default `Stripe-Signature` timestamp tolerance (Stripe's libraries use 300 s).
pub const STRIPE_TOLERANCE_SECS: i64 = 300;

/// Verifies a `Stripe-Signature` header (`t=…,v1=…[,v1=…]`): HMAC-SHA256 of
/// `"{t}.{body}"` under the endpoint secret, compared in constant time, and
/// `t` within `tolerance_secs` of `now_secs`.
pub fn verify_stripe_signature(
    secret: &str,
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> std::result::Result<i64, SignatureError> {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => sigs.push(hex::decode(v).map_err(|_| SignatureError::Malformed)?),
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if sigs.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age_secs = now_secs - t;
    if age_secs.abs() > tolerance_secs {
        return Err(SignatureError::Stale {
            age_secs,
            tolerance_secs,
        });
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    sigs.iter()
        .any(|s| hmac::verify(&key, &signed, s).is_ok())
        .then_some(t)
        .ok_or(SignatureError::Mismatch)
}

/// Signs like Stripe does: `t=<unix>,v1=<HMAC-SHA256(t.body)>`. Our
/// outgoing webhooks use the same scheme (`X-SecureNet-Signature`).
pub fn sign_v1(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(hmac::sign(&key, &signed).as_ref())
    )
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

impl MetaStore {
    /// Plan history of `org`, oldest first, starting with the plan it was
    /// created with.
    pub fn plan_history(&self, org: &Organization) -> Result<Vec<(i64, Plan)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT at, plan FROM plan_changes WHERE org_id = ?1 ORDER BY at, id",
        )?;
        let rows: Vec<(i64, String)> = stmt
            .query_map([org.id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            return Ok(vec![(org.created_at, org.plan)]);
        }
        rows.into_iter()
            .map(|(at, p)| Ok((at, p.parse()?)))
            .collect()
    }

    /// Moves `org` to `plan` now (limits follow); the organization after.
    /// Changing to the current plan changes nothing.
    pub fn change_plan(&self, org: &TenantId, plan: Plan, source: &str) -> Result<Organization> {
        let current = self.organization(org)?.ok_or_else(|| Error::NotFound {
            what: "organization",
            id: org.to_string(),
        })?;
        if current.plan == plan {
            return Ok(current);
        }
        let limits = plan.limits().with(current.limits_override.as_ref());
        let now = now_ms().max(current.created_at);
        {
            let mut conn = self.conn();
            let tx = conn.transaction()?;
            let recorded: i64 = tx.query_row(
                "SELECT COUNT(*) FROM plan_changes WHERE org_id = ?1",
                [org.as_str()],
                |r| r.get(0),
            )?;
            if recorded == 0 {
                tx.execute(
                    "INSERT INTO plan_changes (org_id, plan, at, source) VALUES (?1, ?2, ?3, 'created')",
                    params![org.as_str(), current.plan.as_str(), current.created_at],
                )?;
            }
            tx.execute(
                "INSERT INTO plan_changes (org_id, plan, at, source) VALUES (?1, ?2, ?3, ?4)",
                params![org.as_str(), plan.as_str(), now, source],
            )?;
            tx.execute(
                "UPDATE organizations SET plan = ?2, max_devices = ?3, max_scans_per_month = ?4, \
                 log_retention_days = ?5 WHERE id = ?1",
                params![
                    org.as_str(),
                    plan.as_str(),
                    limits.max_devices as i64,
                    limits.max_scans_per_month as i64,
                    limits.log_retention_days
                ],
            )?;
            tx.commit()?;
        }
        Ok(Organization {
            plan,
            limits,
            ..current
        })
    }

    pub fn subscription(&self, org: &TenantId) -> Result<Option<Subscription>> {
        Ok(self
            .conn()
            .prepare_cached(
                "SELECT stripe_customer_id, stripe_subscription_id, status, updated_at \
                 FROM subscriptions WHERE org_id = ?1",
            )?
            .query_row([org.as_str()], |r| {
                Ok(Subscription {
                    stripe_customer_id: r.get(0)?,
                    stripe_subscription_id: r.get(1)?,
                    status: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            })
            .optional()?)
    }

    pub fn invoice_payments(&self, org: &TenantId) -> Result<Vec<InvoicePayment>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT stripe_invoice_id, status, amount_cents, period, at FROM invoice_payments \
             WHERE org_id = ?1 ORDER BY at",
        )?;
        let rows = stmt.query_map([org.as_str()], |r| {
            Ok(InvoicePayment {
                stripe_invoice_id: r.get(0)?,
                status: r.get(1)?,
                amount_cents: r.get(2)?,
                period: r.get(3)?,
                at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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
    pub fn apply_stripe_event(&self, event: &Value) -> Result<StripeOutcome> {
        let id = str_at(event, &["id"])
            .ok_or_else(|| Error::Invalid("Stripe event without an id".into()))?;
        let kind = str_at(event, &["type"])
            .ok_or_else(|| Error::Invalid("Stripe event without a type".into()))?;
        let created_ms = event.get("created").and_then(Value::as_i64).unwrap_or(0) * 1000;
        let seen: Option<String> = self
            .conn()
            .query_row(
                "SELECT outcome FROM stripe_events WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        if seen.is_some() {
            return Ok(StripeOutcome::Duplicate);
        }
        let object = event
            .get("data")
            .and_then(|d| d.get("object"))
            .ok_or_else(|| Error::Invalid("Stripe event without data.object".into()))?;
        let (org, outcome) = self.stripe_effect(id, kind, object, created_ms)?;
        let detail = match &outcome {
            StripeOutcome::Applied(d) | StripeOutcome::Ignored(d) => d.clone(),
            StripeOutcome::Duplicate => "duplicate".into(),
        };
        let inserted = self.conn().execute(
            "INSERT INTO stripe_events (id, type, org_id, outcome, received_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT(id) DO NOTHING",
            params![id, kind, org.as_ref().map(TenantId::as_str), detail, now_ms()],
        )?;
        // Two deliveries racing: the second insert loses, and says so.
        Ok(if inserted == 0 {
            StripeOutcome::Duplicate
        } else {
            outcome
        })
    }

    fn org_for_stripe(&self, object: &Value, subscription_field: &str) -> Result<Option<TenantId>> {
        if let Some(org) = str_at(object, &["metadata", "org_id"])
            && let Ok(id) = TenantId::new(org)
            && self.organization(&id)?.is_some()
        {
            return Ok(Some(id));
        }
        let sub = str_at(object, &[subscription_field]);
        let customer = str_at(object, &["customer"]);
        let found: Option<String> = self
            .conn()
            .query_row(
                "SELECT org_id FROM subscriptions WHERE stripe_subscription_id = ?1 \
                 OR (?1 IS NULL AND stripe_customer_id = ?2) LIMIT 1",
                params![sub, customer],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.and_then(|o| TenantId::new(&o).ok()))
    }

    fn set_subscription_status(
        &self,
        org: &TenantId,
        object: &Value,
        status: &str,
        event_ms: i64,
        sub_id: Option<&str>,
    ) -> Result<bool> {
        let n = self.conn().execute(
            "INSERT INTO subscriptions (org_id, stripe_customer_id, stripe_subscription_id, status, last_event_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT(org_id) DO UPDATE SET \
               stripe_customer_id = COALESCE(excluded.stripe_customer_id, stripe_customer_id), \
               stripe_subscription_id = COALESCE(excluded.stripe_subscription_id, stripe_subscription_id), \
               status = excluded.status, last_event_at = excluded.last_event_at, updated_at = excluded.updated_at \
             WHERE excluded.last_event_at >= subscriptions.last_event_at",
            params![org.as_str(), str_at(object, &["customer"]), sub_id, status, event_ms, now_ms()],
        )?;
        Ok(n > 0)
    }

    fn stripe_effect(
        &self,
        event_id: &str,
        kind: &str,
        object: &Value,
        event_ms: i64,
    ) -> Result<(Option<TenantId>, StripeOutcome)> {
        let subscription_event = kind.starts_with("customer.subscription.");
        let invoice_event = matches!(kind, "invoice.paid" | "invoice.payment_failed");
        if !subscription_event && !invoice_event {
            return Ok((
                None,
                StripeOutcome::Ignored(format!("event type {kind} is not handled")),
            ));
        }
        let field = if subscription_event {
            "id"
        } else {
            "subscription"
        };
        let Some(org) = self.org_for_stripe(object, field)? else {
            return Ok((
                None,
                StripeOutcome::Ignored("no organization for this event".into()),
            ));
        };
        let sub_id = str_at(object, &[field]);
        let outcome = match kind {
            "customer.subscription.created" | "customer.subscription.updated" => {
                let status = str_at(object, &["status"]).unwrap_or("active");
                if !self.set_subscription_status(&org, object, status, event_ms, sub_id)? {
                    StripeOutcome::Ignored("older than the last applied event".into())
                } else {
                    let plan = str_at(object, &["metadata", "plan"]).or_else(|| {
                        object
                            .pointer("/items/data/0/price/lookup_key")
                            .and_then(Value::as_str)
                    });
                    match plan.map(str::parse::<Plan>).transpose()? {
                        Some(plan) => {
                            let before = self.organization(&org)?.map(|o| o.plan);
                            let org = self.change_plan(&org, plan, "stripe")?;
                            if before != Some(org.plan) {
                                self.append_audit(&crate::insights::AuditEntry::system(
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
                                ))?;
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
            "customer.subscription.deleted" => {
                if self.set_subscription_status(&org, object, "canceled", event_ms, sub_id)? {
                    StripeOutcome::Applied("subscription canceled".into())
                } else {
                    StripeOutcome::Ignored("older than the last applied event".into())
                }
            }
            _ => {
                let paid = kind == "invoice.paid";
                let invoice = str_at(object, &["id"])
                    .ok_or_else(|| Error::Invalid("invoice without an id".into()))?;
                let amount = object
                    .get(if paid { "amount_paid" } else { "amount_due" })
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let period = str_at(object, &["metadata", "period"])
                    .map(str::to_string)
                    .or_else(|| {
                        object
                            .get("period_start")
                            .and_then(Value::as_i64)
                            .map(|s| day_of(s * 1000).format("%Y-%m").to_string())
                    });
                let status = if paid { "paid" } else { "failed" };
                self.conn().execute(
                    "INSERT INTO invoice_payments (stripe_invoice_id, org_id, status, amount_cents, period, at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(stripe_invoice_id) DO UPDATE SET \
                     status = excluded.status, amount_cents = excluded.amount_cents, at = excluded.at",
                    params![invoice, org.as_str(), status, amount, period, event_ms],
                )?;
                self.set_subscription_status(
                    &org,
                    object,
                    if paid { "active" } else { "past_due" },
                    event_ms,
                    sub_id,
                )?;
                StripeOutcome::Applied(format!("invoice {invoice} {status}"))
            }
        };
        Ok((Some(org), outcome))
    }
}

/// The first day of the UTC month containing `ms`.
pub fn month_start(ms: i64) -> NaiveDate {
    let d = day_of(ms);
    d.with_day(1).unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn ms(s: &str) -> i64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp_millis()
    }

    fn month(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").unwrap()
    }

    #[test]
    fn a_full_month_with_overage() {
        // Starter, all of November: $99 + 2 devices × $5 + 5 scans × $0.10.
        let inv = compute_invoice(
            month("2026-11"),
            ms("2026-10-03 09:00"),
            &[(ms("2026-10-03 09:00"), Plan::Starter)],
            7,
            30,
            None,
        )
        .unwrap();
        assert_eq!(inv.base_cents, 9_900);
        assert_eq!(inv.overage_cents, 1_000 + 50);
        assert_eq!(inv.total_cents, 10_950);
        assert_eq!(inv.lines.len(), 3);
    }

    #[test]
    fn the_first_month_is_prorated_from_the_day_of_creation() {
        // Created 16 November: 15 of 30 days of $299.
        let inv = compute_invoice(
            month("2026-11"),
            ms("2026-11-16 23:59"),
            &[(ms("2026-11-16 23:59"), Plan::Professional)],
            3,
            0,
            None,
        )
        .unwrap();
        assert_eq!(inv.base_cents, 14_950);
        assert_eq!(inv.total_cents, 14_950);
        assert_eq!(
            compute_invoice(
                month("2026-10"),
                ms("2026-11-16 23:59"),
                &[(0, Plan::Starter)],
                0,
                0,
                None
            ),
            None
        );
    }

    #[test]
    fn an_upgrade_mid_month_prorates_both_plans_and_uses_the_new_limits() {
        // Starter 1–10 November (10 days: 9900·10/30 = 3300), Business from
        // the 11th (20 days: 79900·20/30 = 53266.67 → 53267). 6 devices are
        // over Starter's 5 but within Business's 500: no overage.
        let history = [
            (ms("2026-10-01 00:00"), Plan::Starter),
            (ms("2026-11-11 08:30"), Plan::Business),
        ];
        let inv = compute_invoice(month("2026-11"), history[0].0, &history, 6, 30, None).unwrap();
        assert_eq!(
            inv.lines.iter().map(|l| l.amount_cents).collect::<Vec<_>>(),
            [3_300, 53_267]
        );
        assert_eq!(
            (inv.base_cents, inv.overage_cents, inv.total_cents),
            (56_567, 0, 56_567)
        );
        assert_eq!(inv.plan, Plan::Business);
    }

    #[test]
    fn a_downgrade_in_february_bills_overage_on_the_lower_plan() {
        // MSP 1–14 February 2027 (14/28 of $2,999 = 149950), Enterprise from
        // the 15th (14/28 of $1,999 = 99950); 5,100 scans over Enterprise's
        // 5,000 = 100 × 10 cents.
        let history = [
            (ms("2026-01-01 00:00"), Plan::Msp),
            (ms("2027-02-15 00:00"), Plan::Enterprise),
        ];
        let inv =
            compute_invoice(month("2027-02"), history[0].0, &history, 900, 5_100, None).unwrap();
        assert_eq!(inv.base_cents, 149_950 + 99_950);
        assert_eq!(inv.overage_cents, 1_000);
        assert_eq!(inv.total_cents, 250_900);
    }

    #[test]
    fn an_operator_override_sets_the_limits_overage_is_counted_against() {
        let history = [(ms("2026-01-01 00:00"), Plan::Enterprise)];
        let terms = schemas::LimitsOverride {
            max_devices: Some(2_500),
            ..Default::default()
        };
        let inv = compute_invoice(
            month("2026-11"),
            history[0].0,
            &history,
            2_600,
            0,
            Some(&terms),
        )
        .unwrap();
        // 100 devices over the contract's 2,500 (not 1,600 over the plan's 1,000).
        assert_eq!(inv.overage_cents, 100 * 500);
    }

    #[test]
    fn a_day_with_several_plans_bills_the_highest() {
        let history = [
            (ms("2026-01-01 00:00"), Plan::Starter),
            (ms("2026-11-30 08:00"), Plan::Enterprise),
            (ms("2026-11-30 09:00"), Plan::Professional),
        ];
        let inv = compute_invoice(month("2026-11"), history[0].0, &history, 0, 0, None).unwrap();
        // 29 days of 9900/30 = 9570, 1 day of 199900/30 = 6663.33 → 6663.
        assert_eq!(
            inv.lines.iter().map(|l| l.amount_cents).collect::<Vec<_>>(),
            [9_570, 6_663]
        );
        // Created on professional, downgraded to starter the same day: that
        // day is professional, the rest starter.
        let history = [
            (ms("2026-11-10 09:00"), Plan::Professional),
            (ms("2026-11-10 17:00"), Plan::Starter),
        ];
        let inv = compute_invoice(month("2026-11"), history[0].0, &history, 0, 0, None).unwrap();
        // 1 day of 29900/30 = 996.67 → 997; 20 days of 9900/30 = 6600.
        assert_eq!(
            inv.lines.iter().map(|l| l.amount_cents).collect::<Vec<_>>(),
            [997, 6_600]
        );
        assert_eq!(inv.plan, Plan::Starter);
    }

    #[test]
    fn stripe_signatures_are_checked_for_secret_time_and_shape() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign_v1("whsec_test", 1_000_000, body);
        assert_eq!(
            verify_stripe_signature("whsec_test", &header, body, 1_000_100, 300),
            Ok(1_000_000)
        );
        assert_eq!(
            verify_stripe_signature("whsec_other", &header, body, 1_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_stripe_signature("whsec_test", &header, b"{}", 1_000_100, 300),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify_stripe_signature("whsec_test", &header, body, 1_000_301, 300),
            Err(SignatureError::Stale { age_secs: 301, .. })
        ));
        assert_eq!(
            verify_stripe_signature("whsec_test", "v1=abcd", body, 0, 300),
            Err(SignatureError::Malformed)
        );
        // Secret rotation: any matching v1 passes.
        let rotated = format!("{header},v1={}", "00".repeat(32));
        assert!(verify_stripe_signature("whsec_test", &rotated, body, 1_000_000, 300).is_ok());
    }
}
