//! Billing routes: the plan catalogue, the current subscription, limits,
//! plan changes, invoices and the Stripe webhook. The money rules live in
//! [`control::invoice`] (integer cents; plan changes are immediate and
//! prorated by day).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
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

/// `GET /api/billing/invoices[?month=YYYY-MM]` — newest first; the current
/// month's invoice is `open` (its usage is still growing), earlier ones
/// `final`, with Stripe's payment status when one was reported.
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
        None => {
            let created = invoice::month_start(org.created_at);
            let mut out = Vec::new();
            let mut m = current;
            while m >= created && out.len() < MAX_INVOICES {
                out.push(m);
                m = m
                    .checked_sub_months(Months::new(1))
                    .ok_or_else(|| ApiError::Internal("month out of range".into()))?;
            }
            out
        }
    };
    if months.first().is_some_and(|m| *m > current) {
        return Err(ApiError::BadRequest("no invoices for future months".into()));
    }
    let payments = state.store.invoice_payments(&org.id).await?;
    // A child of an MSP is billed by its reseller: at cost plus its markup.
    let markup = match org.parent_id {
        Some(_) => state.store.markup_bps(&org.id).await?,
        None => 0,
    };
    let mut out = Vec::new();
    for first in months {
        let Some(invoice) = invoice_for(&state, &org, &history, first).await? else {
            continue;
        };
        let invoice = invoice::with_markup(invoice, markup);
        let payment = payments
            .iter()
            .rev()
            .find(|pay| pay.period.as_deref() == Some(invoice.month.as_str()));
        let mut v =
            serde_json::to_value(&invoice).map_err(|e| ApiError::Internal(e.to_string()))?;
        v["status"] = json!(if first == current { "open" } else { "final" });
        v["payment"] = json!(payment);
        v["currency"] = json!("usd");
        out.push(v);
    }
    Ok(Json(json!({ "organization": org.id, "invoices": out })))
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
    let own = invoice_for(&state, &msp, &history, first).await?;
    let mut children: Vec<Value> = Vec::new();
    let (mut cost, mut markup, mut billed) = (0u64, 0u64, 0u64);
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
        let Some(at_cost) = invoice_for(&state, &child, &history, first).await? else {
            continue;
        };
        let bps = state.store.markup_bps(&child.id).await?;
        let sold = invoice::with_markup(at_cost.clone(), bps);
        cost += at_cost.total_cents;
        markup += sold.markup_cents;
        billed += sold.total_cents;
        children.push(json!({
            "organization": child.id,
            "name": child.name,
            "plan": at_cost.plan,
            "devices": at_cost.devices,
            "scans": at_cost.scans,
            "base_cents": at_cost.base_cents,
            "overage_cents": at_cost.overage_cents,
            "cost_cents": at_cost.total_cents,
            "markup_bps": bps,
            "markup_cents": sold.markup_cents,
            "billed_cents": sold.total_cents,
        }));
    }
    let own_cents = own.as_ref().map_or(0, |i| i.total_cents);
    Ok(Json(json!({
        "organization": msp.id,
        "month": first.format("%Y-%m").to_string(),
        "status": if first == current { "open" } else { "final" },
        "currency": "usd",
        "own": own,
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
