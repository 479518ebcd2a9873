//! Plan changes and their history (what invoices are prorated from).
//! Invoice maths is in [`crate::invoice`], Stripe's events in
//! [`crate::stripe`].

use rusqlite::params;
use schemas::{Plan, TenantId};

use crate::error::{Error, Result};
use crate::orgs::Organization;
use crate::store::{MetaStore, now_ms};

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
}
