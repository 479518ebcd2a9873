//! Billing routes: the plan catalogue, the current subscription, limits,
//! plan changes, invoices and the Stripe webhook. The money rules live in
//! [`control::invoice`] (integer cents; plan changes are immediate and
//! prorated by day).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use chrono::{Months, NaiveDate};
use control::invoice::{self, Invoice};
use control::signature;
use control::stripe::StripeOutcome;
use schemas::Plan;
use schemas::plans::{DEVICE_OVERAGE_CENTS, SCAN_OVERAGE_CENTS};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use crate::auth::Caller;
use crate::error::{ApiError, Result};
use crate::state::AppState;
use crate::usage::{parse_month, recorded};

/// Billing settings.
pub struct Billing {
    /// The Stripe endpoint secret; `None`: the webhook answers 503.
    pub stripe_secret: Option<schemas::Secret>,
    pub tolerance_secs: i64,
    /// Calls to Stripe (`api.stripe.secret_key`); `None`: nothing is sent.
    pub stripe: Option<std::sync::Arc<crate::stripe_out::StripeOut>>,
}

use schemas::time::now_ms;

/// `GET /api/billing/plans`
pub async fn plans() -> Json<Value> {
    let plans: Vec<Value> = Plan::ALL
        .iter()
        .map(|p| {
            json!({
                "id": p.as_str(),
                "price_cents": p.price_cents(),
                "limits": p.limits(),
                "features": p.features(),
                "entitlements": p.entitlements(),
                "device_overage_billed": p.bills_device_overage(),
            })
        })
        .collect();
    Json(json!({
        "plans": plans,
        "overage": {
            "device_cents": DEVICE_OVERAGE_CENTS,
            "scan_cents": SCAN_OVERAGE_CENTS,
        },
        "plan_changes": "effective immediately, prorated by day",
    }))
}

/// `GET /api/billing/current-plan`
pub async fn current_plan(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>> {
    let org = state.caller_org(&caller).await?;
    let history: Vec<Value> = state
        .store
        .plan_history(&org)
        .await?
        .into_iter()
        .map(|(at, plan)| json!({ "plan": plan, "since": at }))
        .collect();
    Ok(Json(json!({
        "organization": org.id,
        "plan": org.plan,
        "price_cents": org.plan.price_cents(),
        "limits": org.limits,
        "features": org.plan.features(),
        "allow_overage": org.allow_overage,
        "subscription": state.store.subscription(&org.id).await?,
        "history": history,
    })))
}

/// Largest "N more" a limits check answers for.
const MAX_ADDITIONAL: u64 = 1_000_000_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LimitParams {
    /// Devices to add to this month's count.
    #[serde(default)]
    additional_devices: u64,
    /// Scans to add to this month's count.
    #[serde(default)]
    additional_scans: u64,
}

/// `GET /api/billing/limits/check[?additional_devices=N&additional_scans=N]`
/// — usage against the plan's limits, and whether that many more devices
/// or scans would be accepted (and at what overage).
pub async fn limits_check(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<LimitParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    for (name, n) in [
        ("additional_devices", p.additional_devices),
        ("additional_scans", p.additional_scans),
    ] {
        if n > MAX_ADDITIONAL {
            return Err(ApiError::BadRequest(format!(
                "{name} is {n}; ask about at most {MAX_ADDITIONAL}"
            )));
        }
    }
    let org = state.caller_org(&caller).await?;
    let devices = state.store.device_count(&org, now_ms()).await?;
    let scans = state.store.scans_in_month(&org, now_ms()).await?;
    let check = |name: &str, used: u64, more: u64, limit: u64, unit: u64, overage: bool| {
        // Bounded above, and saturating anyway: numbers from a request
        // never overflow.
        let after = used.saturating_add(more);
        let over = after.saturating_sub(limit);
        json!({
            "limit": name,
            "used": used,
            "requested": more,
            "max": limit,
            "remaining": limit.saturating_sub(used),
            "exceeded": after > limit,
            "allowed": after <= limit || overage,
            "overage_units": over,
            "overage_cents": over.saturating_mul(unit),
        })
    };
    let checks = [
        check(
            "devices",
            devices,
            p.additional_devices,
            org.limits.max_devices,
            DEVICE_OVERAGE_CENTS,
            org.device_overage_allowed(),
        ),
        check(
            "scans_per_month",
            scans,
            p.additional_scans,
            org.limits.max_scans_per_month,
            SCAN_OVERAGE_CENTS,
            org.allow_overage,
        ),
    ];
    let within = checks.iter().all(|c| c["exceeded"] == false);
    let allowed = checks.iter().all(|c| c["allowed"] == true);
    Ok(Json(json!({
        "organization": org.id,
        "plan": org.plan,
        "within_limits": within,
        "allowed": allowed,
        "allow_overage": org.allow_overage,
        "checks": checks,
    })))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    plan: String,
}

/// `POST /api/billing/upgrade` — `{"plan": "business"}`; upgrades and
/// downgrades alike, effective now.
pub async fn change_plan(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: crate::extract::JsonBody<PlanChange>,
) -> Result<Json<Value>> {
    let crate::extract::JsonBody(req) = body;
    let plan: Plan = req.plan.parse()?;
    let before = state.caller_org(&caller).await?;
    if before.plan == Plan::Msp && plan != Plan::Msp {
        let children = state
            .store
            .list_organizations()
            .await?
            .into_iter()
            .filter(|o| o.parent_id.as_ref() == Some(&before.id))
            .count();
        if children > 0 {
            return Err(ApiError::BadRequest(format!(
                "the organization has {children} child organizations; only the msp plan has children"
            )));
        }
    }
    let after = state.store.change_plan(&caller.tenant, plan, "api").await?;
    info!(org = %after.id, from = %before.plan, to = %after.plan, "plan changed");
    if before.plan != after.plan {
        crate::stripe_out::plan_changed(&state, &after, now_ms()).await?;
    }
    Ok(Json(json!({
        "organization": after.id,
        "previous_plan": before.plan,
        "plan": after.plan,
        "limits": after.limits,
        "changed": before.plan != after.plan,
        "effective": "now; this month is prorated by day",
    })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InvoiceParams {
    /// YYYY-MM (UTC): that month only; default the last 12.
    #[param(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
    month: Option<String>,
}

/// How many months `GET /api/billing/invoices` lists at most.
const MAX_INVOICES: usize = 12;

async fn invoice_for(
    state: &AppState,
    org: &control::Organization,
    history: &[(i64, Plan)],
    first: NaiveDate,
) -> Result<Option<Invoice>> {
    let usage = recorded(&state.sql, &org.id, first).await?;
    let total = |m: &str| usage.totals.get(m).copied().unwrap_or(0).max(0) as u64;
    Ok(invoice::compute_invoice(
        first,
        org.created_at,
        history,
        total("devices"),
        total("scans"),
        org.limits_override.as_ref(),
    ))
}

/// An organization's invoice of one month as it is billed (a child of an
/// MSP: at cost plus its markup).
pub(crate) struct MonthInvoice {
    pub invoice: Invoice,
    pub number: String,
    /// `open` (the current month), `draft` (a closed month not finalised
    /// yet) or `final` (issued: served as stored from then on).
    pub status: &'static str,
    pub finalized_at: Option<i64>,
}

/// The invoice of the month starting `first`: the issued one once the
/// month is finalised, else computed from the usage recorded so far.
async fn month_invoice(
    state: &AppState,
    org: &control::Organization,
    history: &[(i64, Plan)],
    issued: &[control::IssuedInvoice],
    first: NaiveDate,
) -> Result<Option<MonthInvoice>> {
    let month = first.format("%Y-%m").to_string();
    if let Some(i) = issued.iter().find(|i| i.invoice.month == month) {
        return Ok(Some(MonthInvoice {
            invoice: i.invoice.clone(),
            number: i.number.clone(),
            status: "final",
            finalized_at: Some(i.finalized_at),
        }));
    }
    let Some(at_cost) = invoice_for(state, org, history, first).await? else {
        return Ok(None);
    };
    // A child of an MSP is billed by its reseller: at cost plus its markup.
    let markup = match org.parent_id {
        Some(_) => state.store.markup_bps(&org.id).await?,
        None => 0,
    };
    let current = invoice::month_start(now_ms());
    Ok(Some(MonthInvoice {
        invoice: invoice::with_markup(at_cost, markup),
        number: invoice::number(&org.id, &month),
        status: if first >= current { "open" } else { "draft" },
        finalized_at: None,
    }))
}

impl MonthInvoice {
    fn to_json(&self, payments: &[control::stripe::InvoicePayment]) -> Result<Value> {
        let payment = payments
            .iter()
            .rev()
            .find(|pay| pay.period.as_deref() == Some(self.invoice.month.as_str()));
        let mut v =
            serde_json::to_value(&self.invoice).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["number"] = json!(self.number);
        v["status"] = json!(self.status);
        v["finalized_at"] = json!(self.finalized_at);
        v["payment"] = json!(payment);
        v["currency"] = json!("usd");
        Ok(v)
    }
}

/// `GET /api/billing/invoices[?month=YYYY-MM]` — newest first; the current
/// month's invoice is `open` (its usage is still growing), a closed month's
/// `draft` until the monthly job issues it, then `final`, with Stripe's
/// payment status when one was reported.
pub async fn invoices(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<InvoiceParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let org = state.caller_org(&caller).await?;
    let history = state.store.plan_history(&org).await?;
    let current = invoice::month_start(now_ms());
    let months: Vec<NaiveDate> = match &p.month {
        Some(m) => vec![parse_month(m)?],
        None => recent_months(org.created_at, current)?,
    };
    if months.first().is_some_and(|m| *m > current) {
        return Err(ApiError::BadRequest("no invoices for future months".into()));
    }
    let payments = state.store.invoice_payments(&org.id).await?;
    let issued = state.store.issued_invoices(&org.id).await?;
    let sent = state.store.stripe_jobs(&org.id, 100).await?;
    let mut out = Vec::new();
    for first in months {
        if let Some(m) = month_invoice(&state, &org, &history, &issued, first).await? {
            let mut v = m.to_json(&payments)?;
            v["stripe"] = stripe_status(&sent, &m.number);
            out.push(v);
        }
    }
    Ok(Json(json!({ "organization": org.id, "invoices": out })))
}

/// What Stripe was told of invoice `number`: the job's status and, once
/// sent, Stripe's invoice (`null` when nothing was queued).
fn stripe_status(jobs: &[control::stripe_out::StripeJob], number: &str) -> Value {
    jobs.iter()
        .find(|j| j.kind == "invoice" && j.key == number)
        .map_or(
            Value::Null,
            |j| json!({"status": j.status, "invoice": j.result, "error": j.last_error}),
        )
}

/// The first days of the months from `current` back to the one of
/// `created_at`, at most [`MAX_INVOICES`], newest first.
fn recent_months(created_at: i64, current: NaiveDate) -> Result<Vec<NaiveDate>> {
    let created = invoice::month_start(created_at);
    let mut out = Vec::new();
    let mut m = current;
    while m >= created && out.len() < MAX_INVOICES {
        out.push(m);
        m = m
            .checked_sub_months(Months::new(1))
            .ok_or_else(|| ApiError::Internal("month out of range".into()))?;
    }
    Ok(out)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DocumentParams {
    /// `json` (default) or `pdf`; `Accept: application/pdf` also asks for
    /// the PDF.
    #[param(pattern = "^(json|pdf)$")]
    format: Option<String>,
}

/// `GET /api/billing/invoices/{number}[?format=json|pdf]` — one invoice by
/// its number (`SN-YYYYMM-<organization>`), the caller's own only (another
/// organization's number answers 404, as an unknown one does).
pub async fn invoice_document(
    State(state): State<AppState>,
    Caller(caller): Caller,
    axum::extract::Path(number): axum::extract::Path<String>,
    headers: HeaderMap,
    params: crate::extract::QueryParams<DocumentParams>,
) -> Result<axum::response::Response> {
    let crate::extract::QueryParams(p) = params;
    let pdf = crate::document::wants_pdf(p.format.as_deref(), &headers)?;
    let org = state.caller_org(&caller).await?;
    let not_found = || ApiError::NotFound(format!("invoice {number:?}"));
    let (month, owner) = invoice::parse_number(&number).ok_or_else(not_found)?;
    if owner != org.id.as_str() {
        return Err(not_found());
    }
    let first = parse_month(&month).map_err(|_| not_found())?;
    if first > invoice::month_start(now_ms()) {
        return Err(not_found());
    }
    let history = state.store.plan_history(&org).await?;
    let issued = state.store.issued_invoices(&org.id).await?;
    let m = month_invoice(&state, &org, &history, &issued, first)
        .await?
        .ok_or_else(not_found)?;
    if !pdf {
        let payments = state.store.invoice_payments(&org.id).await?;
        let mut v = m.to_json(&payments)?;
        v["organization"] = json!(org.id);
        v["organization_name"] = json!(org.name);
        return Ok(Json(v).into_response());
    }
    let letterhead = crate::document::letterhead_for(&state, &org).await?;
    let doc = invoice_pdf(&m, &org, letterhead);
    Ok(crate::document::pdf_response(doc.to_pdf(), &m.number))
}

fn money(cents: u64) -> String {
    let dollars = cents / 100;
    let mut grouped = String::new();
    let digits = dollars.to_string();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{:02}", cents % 100)
}

fn invoice_pdf(
    m: &MonthInvoice,
    org: &control::Organization,
    letterhead: crate::document::Letterhead,
) -> crate::document::Document {
    use crate::document::Document;
    let inv = &m.invoice;
    let mut doc = Document::new(letterhead, format!("Invoice {}", m.number));
    doc.subtitle.push(format!("{} ({})", org.name, org.id));
    doc.subtitle.push(format!("Period: {} (UTC)", inv.month));
    let status = match (m.status, m.finalized_at) {
        ("final", Some(at)) => format!("final, issued {}", crate::document::utc(at)),
        ("draft", _) => "draft: the month is closed, the invoice is not issued yet".into(),
        _ => "open: the month is not over, usage is still counted".into(),
    };
    doc.subtitle.push(format!("Status: {status}"));
    let rows = inv
        .lines
        .iter()
        .map(|l| {
            vec![
                l.description.clone(),
                l.quantity.to_string(),
                money(l.unit_cents),
                money(l.amount_cents),
            ]
        })
        .collect();
    doc.heading("Lines")
        .table(&["description", "quantity", "unit", "amount"], rows)
        .heading("Totals")
        .facts([
            ("Plan billed for overage", inv.plan.to_string()),
            ("Devices counted", inv.devices.to_string()),
            ("Scans counted", inv.scans.to_string()),
            ("Base", money(inv.base_cents)),
            ("Overage", money(inv.overage_cents)),
            ("Reseller markup", money(inv.markup_cents)),
            ("Total (USD)", money(inv.total_cents)),
        ]);
    doc
}

/// How long after a month ends its invoices are issued: records that
/// arrive late (forwarder buffers, replays from the bus) still count until
/// then.
pub const DEFAULT_INVOICE_GRACE_HOURS: u32 = 6;

/// Issues every closed month's invoice not issued yet — the last
/// [`MAX_INVOICES`] months, for every organization — once the month is
/// `grace_hours` behind `now`. Each is issued once: the store keeps the
/// first writer's, so replicas and restarts running this at the same time
/// issue each invoice exactly once. Returns how many this call issued.
pub async fn finalize_due(state: &AppState, now: i64, grace_hours: u32) -> Result<usize> {
    let closed_before = invoice::month_start(now - i64::from(grace_hours) * 3_600_000);
    let mut orgs = state.store.list_organizations().await?;
    // Children first: an MSP's invoice for Stripe carries its children's
    // issued invoices.
    orgs.sort_by_key(|o| (o.parent_id.is_none(), o.id.clone()));
    let mut issued_now = 0;
    // (MSP, month) → its children's issued invoices of that month.
    let mut children: std::collections::HashMap<
        (String, String),
        Vec<(control::Organization, Invoice)>,
    > = Default::default();
    for org in &orgs {
        let history = state.store.plan_history(org).await?;
        let mut issued = state.store.issued_invoices(&org.id).await?;
        for first in recent_months(org.created_at, closed_before)? {
            if first >= closed_before {
                continue;
            }
            let Some(m) = month_invoice(state, org, &history, &issued, first).await? else {
                continue;
            };
            let newly =
                m.status != "final" && state.store.issue_invoice(&org.id, &m.invoice).await?;
            if newly {
                issued_now += 1;
                info!(organization = %org.id, number = %m.number, total_cents = m.invoice.total_cents, "invoice issued");
            }
            if m.status != "final" {
                // The stored one stands (another replica may have issued
                // it): read back only when this pass tried to issue.
                issued = state.store.issued_invoices(&org.id).await?;
            }
            let Some(stored) = issued
                .iter()
                .find(|i| i.invoice.month == m.invoice.month)
                .cloned()
            else {
                continue;
            };
            if let Some(parent) = &org.parent_id {
                children
                    .entry((parent.to_string(), stored.invoice.month.clone()))
                    .or_default()
                    .push((org.clone(), stored.invoice.clone()));
            }
            // Queued once per number (a no-op when it is queued already):
            // also covers a crash between issuing and queuing.
            if newly || first.checked_add_months(Months::new(1)) == Some(closed_before) {
                let kids = children
                    .get(&(org.id.to_string(), stored.invoice.month.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                crate::stripe_out::invoice_issued(
                    state,
                    org,
                    &stored.number,
                    &stored.invoice,
                    kids,
                )
                .await?;
            }
        }
    }
    Ok(issued_now)
}

/// Runs [`finalize_due`] at start and every 10 minutes until `stop`; a
/// failed run is logged and retried at the next tick.
pub fn spawn_finalizer(
    state: AppState,
    grace_hours: u32,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = finalize_due(&state, now_ms(), grace_hours).await {
                tracing::warn!(error = %e, "issuing invoices failed; retrying in 10 minutes");
            }
        }
    })
}

/// `GET /api/billing/invoices/consolidated[?month=YYYY-MM]` (the current
/// month by default) — an MSP's month as a reseller sees it: its own
/// invoice, one line per child organization (plan, usage, base and overage
/// at cost, the markup set on it and what the child is billed), and the
/// totals: what the platform bills the MSP (its own invoice and every
/// child's at cost) and what the MSP bills its children.
pub async fn consolidated(
    State(state): State<AppState>,
    Caller(caller): Caller,
    params: crate::extract::QueryParams<InvoiceParams>,
) -> Result<Json<Value>> {
    let crate::extract::QueryParams(p) = params;
    let msp = state
        .entitled_org(&caller, schemas::Feature::Reseller)
        .await?;
    let current = invoice::month_start(now_ms());
    let first = match &p.month {
        Some(m) => parse_month(m)?,
        None => current,
    };
    if first > current {
        return Err(ApiError::BadRequest("no invoices for future months".into()));
    }
    let history = state.store.plan_history(&msp).await?;
    let issued = state.store.issued_invoices(&msp.id).await?;
    let own = month_invoice(&state, &msp, &history, &issued, first).await?;
    let mut children: Vec<Value> = Vec::new();
    let (mut cost, mut markup, mut billed) = (0u64, 0u64, 0u64);
    let mut every_final = own.as_ref().is_none_or(|m| m.status == "final");
    let mut kids: Vec<control::Organization> = state
        .store
        .list_organizations()
        .await?
        .into_iter()
        .filter(|o| o.parent_id.as_ref() == Some(&msp.id))
        .collect();
    kids.sort_by(|a, b| a.id.cmp(&b.id));
    for child in kids {
        let history = state.store.plan_history(&child).await?;
        let issued = state.store.issued_invoices(&child.id).await?;
        let Some(sold) = month_invoice(&state, &child, &history, &issued, first).await? else {
            continue;
        };
        every_final &= sold.status == "final";
        let inv = &sold.invoice;
        let at_cost = inv.total_cents - inv.markup_cents;
        // The markup in force now; an issued invoice keeps the one it was
        // issued with (in `markup_cents`).
        let bps = match sold.status {
            "final" => None,
            _ => Some(state.store.markup_bps(&child.id).await?),
        };
        cost += at_cost;
        markup += inv.markup_cents;
        billed += inv.total_cents;
        children.push(json!({
            "organization": child.id,
            "name": child.name,
            "number": sold.number,
            "status": sold.status,
            "plan": inv.plan,
            "devices": inv.devices,
            "scans": inv.scans,
            "base_cents": inv.base_cents,
            "overage_cents": inv.overage_cents,
            "cost_cents": at_cost,
            "markup_bps": bps,
            "markup_cents": inv.markup_cents,
            "billed_cents": inv.total_cents,
        }));
    }
    let own_cents = own.as_ref().map_or(0, |m| m.invoice.total_cents);
    let status = if first == current {
        "open"
    } else if every_final {
        "final"
    } else {
        "draft"
    };
    Ok(Json(json!({
        "organization": msp.id,
        "month": first.format("%Y-%m").to_string(),
        "status": status,
        "currency": "usd",
        "own": own.as_ref().map(|m| &m.invoice),
        "own_number": own.as_ref().map(|m| &m.number),
        "children": children,
        "children_cost_cents": cost,
        "markup_cents": markup,
        "children_billed_cents": billed,
        "due_cents": own_cents + cost,
    })))
}

/// `POST /api/billing/webhook/stripe` — verified with `Stripe-Signature`
/// (v1 HMAC-SHA256 over `t.body`, 300 s tolerance); each event id is
/// handled once (a replay answers 200 `duplicate` and changes nothing).
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    let Some(secret) = &state.billing.stripe_secret else {
        return Err(ApiError::Unavailable(
            "the Stripe webhook is not configured (api.stripe_webhook_secret)".into(),
        ));
    };
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("missing Stripe-Signature header".into()))?;
    signature::verify(
        secret.expose(),
        header,
        &body,
        now_ms() / 1000,
        state.billing.tolerance_secs,
    )
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("Stripe event is not JSON: {e}")))?;
    let outcome = state.store.apply_stripe_event(&event).await?;
    if let StripeOutcome::Applied(what) = &outcome {
        info!(event = %event["id"], kind = %event["type"], %what, "Stripe event applied");
    }
    Ok(Json(json!({ "received": true, "result": outcome })))
}
