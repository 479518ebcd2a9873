//! Plan changes and their history (what invoices are prorated from).
//! Invoice maths is in [`crate::invoice`], Stripe's events in
//! [`crate::stripe`].

use schemas::{Plan, TenantId};

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
}
