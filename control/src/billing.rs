//! Plan changes and their history (what invoices are prorated from), and
//! issued (finalised) invoices. Invoice maths is in [`crate::invoice`],
//! Stripe's events in [`crate::stripe`].

use schemas::{Plan, TenantId};
use serde::Serialize;

use crate::invoice::{self, Invoice};

use crate::db::params;
use crate::error::{Error, Result};
use crate::orgs::Organization;
use crate::store::{MetaStore, now_ms};

impl MetaStore {
    /// Plan history of `org`, oldest first, starting with the plan it was
    /// created with.
    pub async fn plan_history(&self, org: &Organization) -> Result<Vec<(i64, Plan)>> {
        let rows = self
            .db
            .write_query(
                "SELECT at, plan FROM plan_changes WHERE org_id = ?1 ORDER BY at, id",
                params![org.id],
            )
            .await?;
        if rows.is_empty() {
            return Ok(vec![(org.created_at, org.plan)]);
        }
        rows.iter()
            .map(|r| Ok((r.get(0)?, r.get::<String>(1)?.parse()?)))
            .collect()
    }

    /// Moves `org` to `plan` now (limits follow); the organization after.
    /// Changing to the current plan changes nothing.
    pub async fn change_plan(
        &self,
        org: &TenantId,
        plan: Plan,
        source: &str,
    ) -> Result<Organization> {
        let current = self
            .organization(org)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "organization",
                id: org.to_string(),
            })?;
        if current.plan == plan {
            return Ok(current);
        }
        let limits = plan.limits().with(current.limits_override.as_ref());
        let now = now_ms().max(current.created_at);
        let mut tx = self.db.begin().await?;
        let recorded: i64 = match tx
            .query_opt(
                "SELECT COUNT(*) FROM plan_changes WHERE org_id = ?1",
                params![org],
            )
            .await?
        {
            Some(r) => r.get(0)?,
            None => 0,
        };
        if recorded == 0 {
            tx.execute(
                "INSERT INTO plan_changes (org_id, plan, at, source) VALUES (?1, ?2, ?3, 'created')",
                params![org, current.plan.as_str(), current.created_at],
            )
            .await?;
        }
        tx.execute(
            "INSERT INTO plan_changes (org_id, plan, at, source) VALUES (?1, ?2, ?3, ?4)",
            params![org, plan.as_str(), now, source],
        )
        .await?;
        tx.execute(
            "UPDATE organizations SET plan = ?2, max_devices = ?3, max_scans_per_month = ?4, \
             log_retention_days = ?5 WHERE id = ?1",
            params![
                org,
                plan.as_str(),
                limits.max_devices,
                limits.max_scans_per_month,
                limits.log_retention_days
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Organization {
            plan,
            limits,
            ..current
        })
    }

    /// Issues `invoice` (a closed month's) for `org`: stores it under its
    /// number unless that month was issued already — by this process
    /// earlier, another replica or before a restart — in which case the
    /// stored one stands. True when this call issued it.
    pub async fn issue_invoice(&self, org: &TenantId, invoice: &Invoice) -> Result<bool> {
        let document = serde_json::to_string(invoice).map_err(|e| Error::Invalid(e.to_string()))?;
        let total = i64::try_from(invoice.total_cents).unwrap_or(i64::MAX);
        let n = self
            .db
            .execute(
                "INSERT INTO issued_invoices (org_id, month, number, total_cents, document, finalized_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    org,
                    invoice.month.as_str(),
                    invoice::number(org, &invoice.month),
                    total,
                    document,
                    now_ms()
                ],
            )
            .await?;
        Ok(n > 0)
    }

    /// `org`'s issued invoices, newest month first.
    pub async fn issued_invoices(&self, org: &TenantId) -> Result<Vec<IssuedInvoice>> {
        let rows = self
            .db
            .query(
                "SELECT number, finalized_at, document FROM issued_invoices \
                 WHERE org_id = ?1 ORDER BY month DESC",
                params![org],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let document: String = r.get(2)?;
                Ok(IssuedInvoice {
                    number: r.get(0)?,
                    finalized_at: r.get(1)?,
                    invoice: serde_json::from_str(&document)
                        .map_err(|e| Error::Invalid(format!("issued invoice: {e}")))?,
                })
            })
            .collect()
    }
}

/// A finalised invoice as it was issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuedInvoice {
    pub number: String,
    pub finalized_at: i64,
    pub invoice: Invoice,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    #[tokio::test]
    async fn an_invoice_is_issued_once_and_the_first_one_stands() {
        let store = testing::store().await;
        let org = TenantId::new("acme").unwrap();
        let first = Invoice {
            month: "2026-10".into(),
            plan: Plan::Starter,
            lines: Vec::new(),
            base_cents: 9_900,
            overage_cents: 0,
            markup_cents: 0,
            total_cents: 9_900,
            devices: 1,
            scans: 2,
        };
        assert!(store.issue_invoice(&org, &first).await.unwrap());
        // A second replica (or a restart) computing it again, with late
        // usage in between, changes nothing.
        let late = Invoice {
            total_cents: 10_000,
            ..first.clone()
        };
        assert!(!store.issue_invoice(&org, &late).await.unwrap());
        let november = Invoice {
            month: "2026-11".into(),
            ..first.clone()
        };
        assert!(store.issue_invoice(&org, &november).await.unwrap());
        let issued = store.issued_invoices(&org).await.unwrap();
        assert_eq!(issued.len(), 2);
        assert_eq!(issued[0].number, "SN-202611-acme");
        assert_eq!(issued[1].number, "SN-202610-acme");
        assert_eq!(issued[1].invoice, first);
        let other = TenantId::new("globex").unwrap();
        assert!(store.issued_invoices(&other).await.unwrap().is_empty());
    }
}
