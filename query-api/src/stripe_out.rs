//! Telling Stripe what SecureNet bills (with `api.stripe.secret_key`):
//! plan changes update the customer's Stripe subscription, and each issued
//! invoice becomes a Stripe invoice — one invoice item per line, SecureNet's
//! number, finalised so Stripe collects it.
//!
//! Jobs are queued in the metadata store ([`control::stripe_out`]) and sent
//! by a dispatcher in every API process. Every POST carries an
//! `Idempotency-Key` derived from what it does (the invoice number and the
//! step, the plan change's time and plan), so a retry, a restart halfway
//! through a job, or two replicas running the same job all land once in
//! Stripe: Stripe answers a repeated key with the first answer. Network
//! errors, `409` (the same key in flight), `429` and `5xx` are retried with
//! exponential backoff; any other `4xx` ends the job as `failed` with
//! Stripe's message. Every attempt is recorded (`GET /api/billing/stripe`).
//!
//! Why not a Stripe SDK crate: the few form-encoded calls below are all we
//! send, and async-stripe, the maintained one, generates the whole API
//! (a build several times the size of this crate's).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use control::MetaStore;
use control::stripe_out::{StripeJob, StripeRequest};
use schemas::TenantId;
use schemas::time::now_ms;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Caller;
use crate::error::Result;
use crate::state::AppState;

/// `[api.stripe]`
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// The secret API key (`sk_live_…`, `sk_test_…`); unset: nothing is
    /// sent to Stripe.
    pub secret_key: Option<schemas::Secret>,
    /// Stripe's API address (a test double's in the test suite).
    pub api_base: String,
    /// Per request.
    pub timeout_ms: u64,
    /// Attempts of a job before it is `failed`.
    pub max_attempts: u32,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            secret_key: None,
            api_base: "https://api.stripe.com".into(),
            timeout_ms: 10_000,
            max_attempts: 8,
        }
    }
}

/// The outbound side, present when a secret key is configured.
pub struct StripeOut {
    http: reqwest::Client,
    base: String,
    key: schemas::Secret,
    max_attempts: u32,
}

enum CallError {
    /// Worth another attempt later.
    Retry(String),
    /// Stripe refused it; another attempt would be refused too.
    Fatal(String),
}

impl StripeOut {
    pub fn new(config: &StripeConfig) -> reqwest::Result<Option<Arc<Self>>> {
        let Some(key) = config.secret_key.clone() else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()?;
        Ok(Some(Arc::new(Self {
            http,
            base: config.api_base.trim_end_matches('/').to_string(),
            key,
            max_attempts: config.max_attempts.max(1),
        })))
    }

    /// One request, recorded. `form` is sent form-encoded (a POST) or as
    /// the query (a GET).
    async fn call(
        &self,
        store: &MetaStore,
        job: &StripeJob,
        method: reqwest::Method,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> std::result::Result<Value, CallError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.key.expose())
            .header("Stripe-Version", "2024-06-20");
        request = if method == reqwest::Method::GET {
            request.query(form)
        } else {
            request.form(form)
        };
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let outcome = request.send().await;
        let mut record = StripeRequest {
            job_id: job.id.clone(),
            method: method.to_string(),
            path: path.to_string(),
            idempotency_key: idempotency_key.map(str::to_string),
            status: None,
            error: None,
            at: now_ms(),
        };
        let result = match outcome {
            Err(e) => Err(CallError::Retry(format!("{method} {path}: {e}"))),
            Ok(response) => {
                let status = response.status();
                record.status = Some(status.as_u16());
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    Ok(body)
                } else {
                    let message = body["error"]["message"]
                        .as_str()
                        .unwrap_or("no error message")
                        .to_string();
                    let text = format!("{method} {path}: {status}: {message}");
                    let retry = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::CONFLICT;
                    Err(if retry {
                        CallError::Retry(text)
                    } else {
                        CallError::Fatal(text)
                    })
                }
            }
        };
        if let Err(CallError::Retry(e) | CallError::Fatal(e)) = &result {
            record.error = Some(e.clone());
        }
        if let Err(e) = store.record_stripe_request(&job.org_id, &record).await {
            warn!(error = %e, "recording a Stripe request failed");
        }
        result
    }

    /// Runs a job's calls in order; `Ok(None)`: nothing to tell Stripe.
    async fn run(
        &self,
        store: &MetaStore,
        job: &StripeJob,
    ) -> std::result::Result<Option<Value>, CallError> {
        let org = TenantId::new(&job.org_id).map_err(|e| CallError::Fatal(e.to_string()))?;
        let subscription = store
            .subscription(&org)
            .await
            .map_err(|e| CallError::Retry(e.to_string()))?;
        match job.kind.as_str() {
            "subscription" => {
                let Some(sub) = subscription.and_then(|s| s.stripe_subscription_id) else {
                    return Ok(None);
                };
                self.update_subscription(store, job, &sub).await.map(Some)
            }
            "invoice" => {
                let Some(customer) = subscription.and_then(|s| s.stripe_customer_id) else {
                    return Ok(None);
                };
                self.send_invoice(store, job, &customer).await
            }
            other => Err(CallError::Fatal(format!("unknown job kind {other:?}"))),
        }
    }

    async fn update_subscription(
        &self,
        store: &MetaStore,
        job: &StripeJob,
        subscription: &str,
    ) -> std::result::Result<Value, CallError> {
        use reqwest::Method;
        let plan = job.payload["plan"].as_str().unwrap_or_default().to_string();
        let prices = self
            .call(
                store,
                job,
                Method::GET,
                "/v1/prices",
                &[
                    ("lookup_keys[]".into(), plan.clone()),
                    ("limit".into(), "1".into()),
                ],
                None,
            )
            .await?;
        let Some(price) = prices["data"][0]["id"].as_str() else {
            return Err(CallError::Fatal(format!(
                "no Stripe price has lookup_key {plan:?}"
            )));
        };
        let path = format!("/v1/subscriptions/{subscription}");
        let current = self.call(store, job, Method::GET, &path, &[], None).await?;
        let Some(item) = current["items"]["data"][0]["id"].as_str() else {
            return Err(CallError::Fatal(format!(
                "subscription {subscription} has no item"
            )));
        };
        let form = vec![
            ("items[0][id]".to_string(), item.to_string()),
            ("items[0][price]".to_string(), price.to_string()),
            // SecureNet's invoice prorates (by day); Stripe must not too.
            ("proration_behavior".to_string(), "none".to_string()),
            ("metadata[plan]".to_string(), plan.clone()),
            ("metadata[org_id]".to_string(), job.org_id.clone()),
        ];
        let key = format!("securenet-{}-subscription-{}", job.org_id, job.key);
        let updated = self
            .call(store, job, Method::POST, &path, &form, Some(&key))
            .await?;
        Ok(json!({"subscription": updated["id"], "price": price, "plan": plan}))
    }

    async fn send_invoice(
        &self,
        store: &MetaStore,
        job: &StripeJob,
        customer: &str,
    ) -> std::result::Result<Option<Value>, CallError> {
        use reqwest::Method;
        let p = &job.payload;
        let number = p["number"].as_str().unwrap_or_default().to_string();
        let lines: Vec<(String, u64)> = p["lines"]
            .as_array()
            .map(|lines| {
                lines
                    .iter()
                    .map(|l| {
                        (
                            l["description"].as_str().unwrap_or_default().to_string(),
                            l["amount_cents"].as_u64().unwrap_or(0),
                        )
                    })
                    .filter(|(_, cents)| *cents > 0)
                    .collect()
            })
            .unwrap_or_default();
        if lines.is_empty() {
            return Ok(None);
        }
        let metadata = |form: &mut Vec<(String, String)>| {
            form.push(("metadata[number]".into(), number.clone()));
            form.push((
                "metadata[period]".into(),
                p["month"].as_str().unwrap_or_default().into(),
            ));
            form.push(("metadata[org_id]".into(), job.org_id.clone()));
        };
        let mut form = vec![
            ("customer".to_string(), customer.to_string()),
            ("currency".to_string(), "usd".to_string()),
            (
                "collection_method".to_string(),
                "charge_automatically".to_string(),
            ),
            ("auto_advance".to_string(), "true".to_string()),
            // Only the items below, never others pending on the customer.
            (
                "pending_invoice_items_behavior".to_string(),
                "exclude".to_string(),
            ),
            ("number".to_string(), number.clone()),
            (
                "description".to_string(),
                format!("SecureNet invoice {number}"),
            ),
        ];
        metadata(&mut form);
        let key = |step: &str| format!("securenet-{number}-{step}");
        let invoice = self
            .call(
                store,
                job,
                Method::POST,
                "/v1/invoices",
                &form,
                Some(&key("create")),
            )
            .await?;
        let Some(id) = invoice["id"].as_str().map(str::to_string) else {
            return Err(CallError::Fatal(
                "Stripe returned an invoice without id".into(),
            ));
        };
        for (i, (description, cents)) in lines.iter().enumerate() {
            let mut form = vec![
                ("customer".to_string(), customer.to_string()),
                ("invoice".to_string(), id.clone()),
                ("amount".to_string(), cents.to_string()),
                ("currency".to_string(), "usd".to_string()),
                ("description".to_string(), description.clone()),
            ];
            metadata(&mut form);
            self.call(
                store,
                job,
                Method::POST,
                "/v1/invoiceitems",
                &form,
                Some(&key(&format!("item-{i}"))),
            )
            .await?;
        }
        let path = format!("/v1/invoices/{id}/finalize");
        let finalized = self
            .call(store, job, Method::POST, &path, &[], Some(&key("finalize")))
            .await?;
        Ok(Some(json!({
            "id": id,
            "number": finalized["number"],
            "status": finalized["status"],
            "total": finalized["total"],
        })))
    }

    /// Claims due jobs and runs them; how many it ran.
    pub async fn dispatch(&self, store: &MetaStore) -> control::Result<usize> {
        let jobs = store.claim_stripe_jobs(now_ms(), 10).await?;
        for job in &jobs {
            match self.run(store, job).await {
                Ok(Some(result)) => {
                    info!(organization = %job.org_id, kind = %job.kind, key = %job.key, "told Stripe");
                    store
                        .complete_stripe_job(&job.id, "succeeded", Some(&result), None)
                        .await?;
                }
                Ok(None) => {
                    let why = match job.kind.as_str() {
                        "invoice" => "no Stripe customer for this organization, or nothing to bill",
                        _ => "no Stripe subscription for this organization",
                    };
                    store
                        .complete_stripe_job(&job.id, "skipped", None, Some(why))
                        .await?;
                }
                Err(CallError::Fatal(e)) => {
                    warn!(organization = %job.org_id, kind = %job.kind, error = %e, "Stripe refused a call");
                    store
                        .complete_stripe_job(&job.id, "failed", None, Some(&e))
                        .await?;
                }
                Err(CallError::Retry(e)) if job.attempts >= self.max_attempts => {
                    warn!(organization = %job.org_id, kind = %job.kind, error = %e, "giving up on a Stripe call");
                    store
                        .complete_stripe_job(&job.id, "failed", None, Some(&e))
                        .await?;
                }
                Err(CallError::Retry(e)) => {
                    store
                        .retry_stripe_job(&job.id, now_ms() + backoff_ms(job.attempts), &e)
                        .await?;
                }
            }
        }
        Ok(jobs.len())
    }
}

/// 1 s after the first failed attempt, doubling, at most 5 minutes.
fn backoff_ms(attempts: u32) -> i64 {
    (1_000i64 << attempts.saturating_sub(1).min(16)).min(300_000)
}

/// Sends due jobs every second until `stop`.
pub fn spawn_dispatcher(
    out: Arc<StripeOut>,
    store: Arc<MetaStore>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = out.dispatch(&store).await {
                warn!(error = %e, "Stripe dispatch failed; retrying");
            }
        }
    })
}

/// Queues the subscription update of a plan change made through
/// SecureNet (not one Stripe told us about, nor a child organization's:
/// its MSP bills it).
pub async fn plan_changed(
    state: &AppState,
    org: &control::Organization,
    at_ms: i64,
) -> control::Result<()> {
    if state.billing.stripe.is_none() || org.parent_id.is_some() {
        return Ok(());
    }
    let key = format!("{at_ms}-{}", org.plan);
    state
        .store
        .enqueue_stripe_job(
            &org.id,
            "subscription",
            &key,
            &json!({"plan": org.plan, "at": at_ms}),
        )
        .await?;
    Ok(())
}

/// Queues an issued invoice for Stripe (once per number). An MSP's carries
/// one more line per child organization at cost (the platform bills the
/// MSP; the MSP bills its children). A child's own invoice is its MSP's to
/// collect and is not sent.
pub async fn invoice_issued(
    state: &AppState,
    org: &control::Organization,
    number: &str,
    invoice: &control::invoice::Invoice,
    children: &[(control::Organization, control::invoice::Invoice)],
) -> control::Result<()> {
    if state.billing.stripe.is_none() || org.parent_id.is_some() {
        return Ok(());
    }
    let mut lines: Vec<Value> = invoice
        .lines
        .iter()
        .map(|l| json!({"description": l.description, "amount_cents": l.amount_cents}))
        .collect();
    for (child, inv) in children {
        lines.push(json!({
            "description": format!("{} ({}) at cost, {}", child.id, inv.plan, inv.month),
            "amount_cents": inv.total_cents - inv.markup_cents,
        }));
    }
    let payload = json!({"number": number, "month": invoice.month, "lines": lines});
    state
        .store
        .enqueue_stripe_job(&org.id, "invoice", number, &payload)
        .await?;
    Ok(())
}

/// `GET /api/billing/stripe` (admin) — whether Stripe is configured, the
/// organization's subscription as Stripe reported it, and what SecureNet
/// sent Stripe: the last 50 jobs, each with every request made for it.
pub async fn calls(State(state): State<AppState>, Caller(caller): Caller) -> Result<Json<Value>> {
    let org = state.caller_org(&caller).await?;
    let mut jobs = Vec::new();
    for job in state.store.stripe_jobs(&org.id, 50).await? {
        let requests = state.store.stripe_requests(&job.id).await?;
        let mut v = serde_json::to_value(&job)
            .map_err(|e| crate::error::ApiError::Internal(e.to_string()))?;
        v["requests"] = json!(requests);
        jobs.push(v);
    }
    Ok(Json(json!({
        "configured": state.billing.stripe.is_some(),
        "subscription": state.store.subscription(&org.id).await?,
        "jobs": jobs,
    })))
}
