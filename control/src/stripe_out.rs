//! What SecureNet tells Stripe, as a durable queue: a job per plan change
//! and per issued invoice, queued once (unique per organization, kind and
//! key — replicas and restarts queuing the same thing add nothing), claimed
//! under a lease by one dispatcher at a time, retried with backoff, and
//! every HTTP attempt recorded. The HTTP side is `query_api::stripe_out`.

use schemas::TenantId;
use serde::Serialize;
use serde_json::Value;

use crate::db::params;
use crate::error::{Error, Result};
use crate::ids::random_id;
use crate::store::{MetaStore, now_ms};

/// A queued call (or sequence of calls) to Stripe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StripeJob {
    pub id: String,
    pub org_id: String,
    /// `subscription` (a plan change) or `invoice` (an issued invoice).
    pub kind: String,
    /// What makes it unique within the organization and kind: the invoice
    /// number, or the plan change's time and plan.
    pub key: String,
    pub payload: Value,
    /// `pending`, `succeeded`, `failed` (gave up, or Stripe refused it) or
    /// `skipped` (nothing to tell Stripe: no customer, nothing billed).
    pub status: String,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    /// What Stripe returned (the invoice's id, number, status, total).
    pub result: Option<Value>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
}

/// One HTTP request made for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StripeRequest {
    pub job_id: String,
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    /// The HTTP status; none when no answer came (network error, timeout).
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at: i64,
}

/// How long a claimed job is another dispatcher's to leave alone.
const LEASE_MS: i64 = 120_000;

const JOB_COLUMNS: &str = "id, org_id, kind, job_key, payload, status, attempts, next_attempt_at, \
                           last_error, result, created_at, completed_at";

fn job(r: &crate::db::Row) -> Result<StripeJob> {
    let parse = |s: String| serde_json::from_str(&s).unwrap_or(Value::Null);
    Ok(StripeJob {
        id: r.get(0)?,
        org_id: r.get(1)?,
        kind: r.get(2)?,
        key: r.get(3)?,
        payload: parse(r.get(4)?),
        status: r.get(5)?,
        attempts: u32::try_from(r.get::<i64>(6)?).unwrap_or(u32::MAX),
        next_attempt_at: r.get(7)?,
        last_error: r.get(8)?,
        result: r.get::<Option<String>>(9)?.map(parse),
        created_at: r.get(10)?,
        completed_at: r.get(11)?,
    })
}

impl MetaStore {
    /// Queues a job unless the same (organization, kind, key) is queued
    /// already; true when this call queued it.
    pub async fn enqueue_stripe_job(
        &self,
        org: &TenantId,
        kind: &str,
        key: &str,
        payload: &Value,
    ) -> Result<bool> {
        let payload = serde_json::to_string(payload).map_err(|e| Error::Invalid(e.to_string()))?;
        let now = now_ms();
        let n = self
            .db
            .execute(
                "INSERT INTO stripe_jobs (id, org_id, kind, job_key, payload, status, attempts, \
                 next_attempt_at, lease_until, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, 0, ?6) ON CONFLICT DO NOTHING",
                params![random_id("sj_"), org, kind, key, payload, now],
            )
            .await?;
        Ok(n > 0)
    }

    /// Claims up to `limit` due jobs for `lease` ms: each is this caller's
    /// until it completes, is rescheduled, or the lease runs out (a
    /// dispatcher that died mid-job); oldest first.
    pub async fn claim_stripe_jobs(&self, now: i64, limit: usize) -> Result<Vec<StripeJob>> {
        let due = self
            .db
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM stripe_jobs WHERE status = 'pending' \
                     AND next_attempt_at <= ?1 AND lease_until <= ?1 \
                     ORDER BY created_at, id LIMIT ?2"
                ),
                params![now, limit],
            )
            .await?;
        let mut claimed = Vec::new();
        for r in &due {
            let j = job(r)?;
            // Whoever updates the row first holds it.
            let n = self
                .db
                .execute(
                    "UPDATE stripe_jobs SET lease_until = ?2, attempts = attempts + 1 \
                     WHERE id = ?1 AND status = 'pending' AND lease_until <= ?3",
                    params![j.id, now + LEASE_MS, now],
                )
                .await?;
            if n == 1 {
                claimed.push(StripeJob {
                    attempts: j.attempts + 1,
                    ..j
                });
            }
        }
        Ok(claimed)
    }

    /// Ends a job: `succeeded`, `failed` or `skipped`.
    pub async fn complete_stripe_job(
        &self,
        id: &str,
        status: &str,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<()> {
        let result = result.map(|v| v.to_string());
        self.db
            .execute(
                "UPDATE stripe_jobs SET status = ?2, result = ?3, last_error = ?4, \
                 completed_at = ?5, lease_until = 0 WHERE id = ?1",
                params![id, status, result, error, now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Puts a job back for another attempt at `at`.
    pub async fn retry_stripe_job(&self, id: &str, at: i64, error: &str) -> Result<()> {
        self.db
            .execute(
                "UPDATE stripe_jobs SET next_attempt_at = ?2, last_error = ?3, lease_until = 0 \
                 WHERE id = ?1 AND status = 'pending'",
                params![id, at, error],
            )
            .await?;
        Ok(())
    }

    pub async fn record_stripe_request(&self, org: &str, request: &StripeRequest) -> Result<()> {
        self.db
            .execute(
                "INSERT INTO stripe_requests (job_id, org_id, method, path, idempotency_key, \
                 status, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    request.job_id,
                    org,
                    request.method,
                    request.path,
                    request.idempotency_key,
                    request.status.map(i64::from),
                    request.error,
                    request.at
                ],
            )
            .await?;
        Ok(())
    }

    /// `org`'s jobs, newest first, at most `limit`.
    pub async fn stripe_jobs(&self, org: &TenantId, limit: usize) -> Result<Vec<StripeJob>> {
        self.db
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM stripe_jobs WHERE org_id = ?1 \
                     ORDER BY created_at DESC, id DESC LIMIT ?2"
                ),
                params![org, limit],
            )
            .await?
            .iter()
            .map(job)
            .collect()
    }

    /// The requests made for `job`, oldest first.
    pub async fn stripe_requests(&self, job: &str) -> Result<Vec<StripeRequest>> {
        self.db
            .query(
                "SELECT job_id, method, path, idempotency_key, status, error, at \
                 FROM stripe_requests WHERE job_id = ?1 ORDER BY id",
                params![job],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(StripeRequest {
                    job_id: r.get(0)?,
                    method: r.get(1)?,
                    path: r.get(2)?,
                    idempotency_key: r.get(3)?,
                    status: r.get::<Option<i64>>(4)?.and_then(|s| u16::try_from(s).ok()),
                    error: r.get(5)?,
                    at: r.get(6)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;
    use serde_json::json;

    #[tokio::test]
    async fn a_job_is_queued_once_claimed_by_one_and_retried_after_its_lease() {
        let store = testing::store().await;
        let org = TenantId::new("acme").unwrap();
        let payload = json!({"number": "SN-202611-acme"});
        assert!(
            store
                .enqueue_stripe_job(&org, "invoice", "SN-202611-acme", &payload)
                .await
                .unwrap()
        );
        assert!(
            !store
                .enqueue_stripe_job(&org, "invoice", "SN-202611-acme", &payload)
                .await
                .unwrap()
        );
        let now = now_ms();
        let first = store.claim_stripe_jobs(now, 10).await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].attempts, 1);
        assert_eq!(first[0].payload, payload);
        // Held: another dispatcher gets nothing until the lease runs out.
        assert!(store.claim_stripe_jobs(now, 10).await.unwrap().is_empty());
        let later = store
            .claim_stripe_jobs(now + LEASE_MS + 1, 10)
            .await
            .unwrap();
        assert_eq!(later.len(), 1, "a dead dispatcher's job is taken over");
        assert_eq!(later[0].attempts, 2);
        store
            .retry_stripe_job(&later[0].id, now + 5_000, "503 from Stripe")
            .await
            .unwrap();
        assert!(
            store
                .claim_stripe_jobs(now + 4_999, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let again = store.claim_stripe_jobs(now + 5_000, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        store
            .record_stripe_request(
                "acme",
                &StripeRequest {
                    job_id: again[0].id.clone(),
                    method: "POST".into(),
                    path: "/v1/invoices".into(),
                    idempotency_key: Some("k".into()),
                    status: Some(200),
                    error: None,
                    at: now,
                },
            )
            .await
            .unwrap();
        store
            .complete_stripe_job(
                &again[0].id,
                "succeeded",
                Some(&json!({"id": "in_1"})),
                None,
            )
            .await
            .unwrap();
        assert!(
            store
                .claim_stripe_jobs(now + 10_000_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let jobs = store.stripe_jobs(&org, 10).await.unwrap();
        assert_eq!(jobs[0].status, "succeeded");
        assert_eq!(jobs[0].attempts, 3);
        assert_eq!(jobs[0].result, Some(json!({"id": "in_1"})));
        let requests = store.stripe_requests(&jobs[0].id).await.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].status, Some(200));
    }
}
