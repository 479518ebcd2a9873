//! Organizations (tenants): plan, limits and the operator's terms, and
//! the parent organization of an MSP's customers.

use schemas::{Plan, PlanLimits, TenantId};
use serde::Serialize;

use crate::db::{Constraint, Row, params};
use crate::error::{Error, Result};
use crate::store::{MetaStore, now_ms};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Organization {
    pub id: TenantId,
    pub name: String,
    pub owner_email: String,
    pub plan: Plan,
    pub limits: PlanLimits,
    pub parent_id: Option<TenantId>,
    /// Accept devices and scans beyond the plan's limits and bill them as
    /// overage, instead of refusing them.
    pub allow_overage: bool,
    /// The operator's limits for this organization, over its plan's
    /// (`limits` already includes them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits_override: Option<schemas::LimitsOverride>,
    /// ms since the epoch.
    pub created_at: i64,
}

impl Organization {
    /// `Ok` when the plan includes `feature`; otherwise the `402` every
    /// gated path answers (the feature, the plan, the plan that has it).
    pub fn require(&self, feature: schemas::Feature) -> crate::Result<()> {
        if self.plan.includes(feature) {
            Ok(())
        } else {
            Err(crate::Error::NotInPlan {
                feature,
                plan: self.plan,
            })
        }
    }

    /// Devices over the limit are billed rather than refused: the operator
    /// allowed overage, or the plan is sold with "1,000+ devices".
    pub fn device_overage_allowed(&self) -> bool {
        self.allow_overage || self.plan.bills_device_overage()
    }
}

#[derive(Debug, Clone)]
pub struct NewOrganization {
    pub id: TenantId,
    pub name: String,
    pub owner_email: String,
    pub plan: Plan,
    pub parent_id: Option<TenantId>,
    pub allow_overage: bool,
}

impl MetaStore {
    pub async fn create_organization(&self, org: &NewOrganization) -> Result<Organization> {
        if !org.owner_email.contains('@') {
            return Err(Error::Invalid(format!(
                "owner email {:?} is not an email address",
                org.owner_email
            )));
        }
        if org.name.trim().is_empty() {
            return Err(Error::Invalid("organization name must not be empty".into()));
        }
        let limits = org.plan.limits();
        let created_at = now_ms();
        let inserted = self
            .db
            .execute(
                "INSERT INTO organizations (id, name, owner_email, plan, max_devices, \
             max_scans_per_month, log_retention_days, parent_id, created_at, allow_overage) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(id) DO NOTHING",
                params![
                    org.id.as_str(),
                    org.name,
                    org.owner_email,
                    org.plan.as_str(),
                    limits.max_devices as i64,
                    limits.max_scans_per_month as i64,
                    limits.log_retention_days,
                    org.parent_id.as_ref().map(TenantId::as_str),
                    created_at,
                    org.allow_overage
                ],
            )
            .await;
        match inserted {
            Ok(0) => Err(Error::Conflict {
                what: "organization",
                id: org.id.to_string(),
            }),
            Ok(_) => {
                // Re-using a deleted organization's id: its new data is not
                // to be purged.
                self.db
                    .execute(
                        "DELETE FROM deleted_organizations WHERE id = ?1",
                        params![org.id],
                    )
                    .await?;
                Ok(Organization {
                    id: org.id.clone(),
                    name: org.name.clone(),
                    owner_email: org.owner_email.clone(),
                    plan: org.plan,
                    limits,
                    parent_id: org.parent_id.clone(),
                    allow_overage: org.allow_overage,
                    limits_override: None,
                    created_at,
                })
            }
            Err(e) if e.violated() == Some(Constraint::ForeignKey) => Err(Error::NotFound {
                what: "parent organization",
                id: org
                    .parent_id
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets the organization's own limits (each given value replaces its
    /// plan's and any earlier override of that limit; `Some(None)` clears
    /// them all) and whether it may go over them, billed as overage — the
    /// platform operator's contract terms. Returns the organization.
    pub async fn set_terms(
        &self,
        id: &TenantId,
        limits: Option<Option<schemas::LimitsOverride>>,
        allow_overage: Option<bool>,
    ) -> Result<Organization> {
        let current = self
            .organization(id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "organization",
                id: id.to_string(),
            })?;
        let over = match limits {
            Some(None) => None,
            Some(Some(new)) => {
                let old = current.limits_override.clone().unwrap_or_default();
                Some(schemas::LimitsOverride {
                    max_devices: new.max_devices.or(old.max_devices),
                    max_scans_per_month: new.max_scans_per_month.or(old.max_scans_per_month),
                    log_retention_days: new.log_retention_days.or(old.log_retention_days),
                })
            }
            None => current.limits_override.clone(),
        }
        .filter(|o| !o.is_empty());
        let effective = current.plan.limits().with(over.as_ref());
        let allow = allow_overage.unwrap_or(current.allow_overage);
        let json = over
            .as_ref()
            .map(|o| serde_json::to_string(o).unwrap_or_default());
        self.db
            .execute(
                "UPDATE organizations SET max_devices = ?2, max_scans_per_month = ?3, \
             log_retention_days = ?4, allow_overage = ?5, limits_override = ?6 WHERE id = ?1",
                params![
                    id.as_str(),
                    effective.max_devices as i64,
                    effective.max_scans_per_month as i64,
                    effective.log_retention_days,
                    allow,
                    json
                ],
            )
            .await?;
        Ok(Organization {
            limits: effective,
            allow_overage: allow,
            limits_override: over,
            ..current
        })
    }

    /// The markup (basis points; 0: none) `child`'s reseller puts on its
    /// invoices.
    pub async fn markup_bps(&self, child: &TenantId) -> Result<u32> {
        let row = self
            .db
            .query_opt(
                "SELECT markup_bps FROM reseller_markups WHERE org_id = ?1",
                params![child],
            )
            .await?;
        Ok(match row {
            Some(r) => u32::try_from(r.get::<i64>(0)?).unwrap_or(u32::MAX),
            None => 0,
        })
    }

    /// Sets `child`'s markup (0 removes it).
    pub async fn set_markup(&self, child: &TenantId, bps: u32) -> Result<()> {
        if bps == 0 {
            self.db
                .execute(
                    "DELETE FROM reseller_markups WHERE org_id = ?1",
                    params![child],
                )
                .await?;
            return Ok(());
        }
        self.db
            .execute(
                "INSERT INTO reseller_markups (org_id, markup_bps, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(org_id) DO UPDATE SET markup_bps = excluded.markup_bps, \
                 updated_at = excluded.updated_at",
                params![child, i64::from(bps), now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Deleted organizations whose data the maintenance job still purges.
    pub async fn deleted_organizations(&self) -> Result<Vec<TenantId>> {
        let rows = self
            .db
            .query(
                "SELECT id FROM deleted_organizations ORDER BY id",
                params![],
            )
            .await?;
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            if let Ok(id) = TenantId::new(&r.get::<String>(0)?) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    pub async fn organization(&self, id: &TenantId) -> Result<Option<Organization>> {
        self.db
            .query_opt(
                "SELECT id, name, owner_email, plan, max_devices, max_scans_per_month, \
                 log_retention_days, parent_id, created_at, allow_overage, limits_override \
                 FROM organizations WHERE id = ?1",
                params![id],
            )
            .await?
            .map(|r| raw_org(&r)?.into_org())
            .transpose()
    }

    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        self.db
            .query(
                "SELECT id, name, owner_email, plan, max_devices, max_scans_per_month, \
                 log_retention_days, parent_id, created_at, allow_overage, limits_override \
                 FROM organizations ORDER BY id",
                params![],
            )
            .await?
            .iter()
            .map(|r| raw_org(r)?.into_org())
            .collect()
    }
}

struct RawOrg {
    id: String,
    name: String,
    owner_email: String,
    plan: String,
    max_devices: i64,
    max_scans: i64,
    retention: u32,
    parent_id: Option<String>,
    created_at: i64,
    allow_overage: bool,
    limits_override: Option<String>,
}

fn raw_org(r: &Row) -> Result<RawOrg> {
    Ok(RawOrg {
        id: r.get(0)?,
        name: r.get(1)?,
        owner_email: r.get(2)?,
        plan: r.get(3)?,
        max_devices: r.get(4)?,
        max_scans: r.get(5)?,
        retention: r.get(6)?,
        parent_id: r.get(7)?,
        created_at: r.get(8)?,
        allow_overage: r.get(9)?,
        limits_override: r.get(10)?,
    })
}

impl RawOrg {
    fn into_org(self) -> Result<Organization> {
        Ok(Organization {
            id: TenantId::new(&self.id)?,
            name: self.name,
            owner_email: self.owner_email,
            plan: self.plan.parse()?,
            limits: PlanLimits {
                max_devices: self.max_devices.max(0) as u64,
                max_scans_per_month: self.max_scans.max(0) as u64,
                log_retention_days: self.retention,
            },
            parent_id: self.parent_id.as_deref().map(TenantId::new).transpose()?,
            allow_overage: self.allow_overage,
            limits_override: self
                .limits_override
                .as_deref()
                .and_then(|j| serde_json::from_str(j).ok()),
            created_at: self.created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{org, t};

    #[tokio::test]
    async fn a_markup_is_set_replaced_and_removed() {
        let store = crate::testing::store().await;
        org(&store, "kid").await;
        assert_eq!(store.markup_bps(&t("kid")).await.unwrap(), 0);
        store.set_markup(&t("kid"), 1_500).await.unwrap();
        store.set_markup(&t("kid"), 2_000).await.unwrap();
        assert_eq!(store.markup_bps(&t("kid")).await.unwrap(), 2_000);
        store.set_markup(&t("kid"), 0).await.unwrap();
        assert_eq!(store.markup_bps(&t("kid")).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn organizations_are_unique_and_validated() {
        let store = crate::testing::store().await;
        org(&store, "acme").await;
        let dup = store
            .create_organization(&NewOrganization {
                id: t("acme"),
                name: "x".into(),
                owner_email: "a@b.c".into(),
                plan: Plan::Starter,
                parent_id: None,
                allow_overage: false,
            })
            .await;
        assert_eq!(
            dup.unwrap_err().to_string(),
            "organization \"acme\" already exists"
        );
        let orphan = store
            .create_organization(&NewOrganization {
                id: t("child"),
                name: "x".into(),
                owner_email: "a@b.c".into(),
                plan: Plan::Starter,
                parent_id: Some(t("nobody")),
                allow_overage: false,
            })
            .await;
        assert!(matches!(orphan, Err(Error::NotFound { .. })), "{orphan:?}");
        let ids: Vec<_> = store
            .list_organizations()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, [t("acme")]);
    }
}
