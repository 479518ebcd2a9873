//! Detection rules (`detection_rules`): each organization's Sigma rules,
//! and MSP rule packs.
//!
//! A rule is stored as the YAML it was uploaded as, with the metadata the
//! API lists (title, level) read from it by the caller, which validates
//! and compiles it first: this crate does not parse Sigma. Scope `own`
//! applies to the organization's own stream; `children` (an MSP's pack)
//! to each of its child organizations' streams instead.
//!
//! Pipelines poll [`MetaStore::detection_rules_version`] and reload every
//! enabled rule when it changes, so a change reaches every pipeline
//! process within its refresh interval.

use schemas::TenantId;
use serde::Serialize;

use crate::db::{Row, params};
use crate::error::{Error, Result};
use crate::rows::{changed, tenant};
use crate::store::MetaStore;

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleScope {
    /// The organization's own stream.
    Own,
    /// An MSP's rule pack: every child organization's stream.
    Children,
}

impl RuleScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleScope::Own => "own",
            RuleScope::Children => "children",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "own" => Ok(RuleScope::Own),
            "children" => Ok(RuleScope::Children),
            other => Err(Error::Invalid(format!(
                "scope {other:?}: expected own or children"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionRule {
    pub org_id: TenantId,
    pub id: String,
    pub title: String,
    /// Sigma's level: informational, low, medium, high, critical.
    pub level: String,
    pub yaml: String,
    pub enabled: bool,
    pub scope: RuleScope,
    /// ms since the epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str = "org_id, id, title, level, yaml, enabled, scope, created_at, updated_at";

fn rule_row(r: &Row) -> Result<DetectionRule> {
    Ok(DetectionRule {
        org_id: tenant(r.get(0)?)?,
        id: r.get(1)?,
        title: r.get(2)?,
        level: r.get(3)?,
        yaml: r.get(4)?,
        enabled: r.get(5)?,
        scope: RuleScope::parse(&r.get::<String>(6)?)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

impl MetaStore {
    /// Stores a new rule; [`Error::Conflict`] if the organization has one
    /// of this id.
    pub async fn add_detection_rule(&self, rule: &DetectionRule) -> Result<()> {
        let inserted = self
            .db
            .execute(
                &format!(
                    "INSERT INTO detection_rules ({COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                     ON CONFLICT(org_id, id) DO NOTHING"
                ),
                params![
                    rule.org_id,
                    rule.id,
                    rule.title,
                    rule.level,
                    rule.yaml,
                    rule.enabled,
                    rule.scope.as_str(),
                    rule.created_at,
                    rule.updated_at,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(Error::Conflict {
                what: "detection rule",
                id: rule.id.clone(),
            });
        }
        Ok(())
    }

    pub async fn count_detection_rules(&self, org: &TenantId) -> Result<usize> {
        let row = self
            .db
            .query_opt(
                "SELECT COUNT(*) FROM detection_rules WHERE org_id = ?1",
                params![org],
            )
            .await?;
        Ok(match row {
            Some(r) => r.get(0)?,
            None => 0,
        })
    }

    pub async fn detection_rule(&self, org: &TenantId, id: &str) -> Result<Option<DetectionRule>> {
        self.db
            .query_opt(
                &format!("SELECT {COLUMNS} FROM detection_rules WHERE org_id = ?1 AND id = ?2"),
                params![org, id],
            )
            .await?
            .map(|r| rule_row(&r))
            .transpose()
    }

    /// The organization's own rules (both scopes), by id.
    pub async fn list_detection_rules(&self, org: &TenantId) -> Result<Vec<DetectionRule>> {
        self.db
            .query(
                &format!("SELECT {COLUMNS} FROM detection_rules WHERE org_id = ?1 ORDER BY id"),
                params![org],
            )
            .await?
            .iter()
            .map(rule_row)
            .collect()
    }

    /// The rule packs of `org`'s parent (scope `children`), by id.
    pub async fn inherited_detection_rules(&self, org: &TenantId) -> Result<Vec<DetectionRule>> {
        self.db
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM detection_rules WHERE scope = 'children' AND org_id = \
                     (SELECT parent_id FROM organizations WHERE id = ?1) ORDER BY id"
                ),
                params![org],
            )
            .await?
            .iter()
            .map(rule_row)
            .collect()
    }

    /// Every enabled rule of every organization (what pipelines load).
    pub async fn enabled_detection_rules(&self) -> Result<Vec<DetectionRule>> {
        self.db
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM detection_rules WHERE enabled = 1 ORDER BY org_id, id"
                ),
                params![],
            )
            .await?
            .iter()
            .map(rule_row)
            .collect()
    }

    /// Changes whenever a rule is added, changed or deleted (the number of
    /// rules and their latest change): one cheap query a pipeline polls
    /// before reloading every rule.
    pub async fn detection_rules_version(&self) -> Result<(i64, i64)> {
        let row = self
            .db
            .query_opt(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM detection_rules",
                params![],
            )
            .await?;
        Ok(match row {
            Some(r) => (r.get(0)?, r.get(1)?),
            None => (0, 0),
        })
    }

    /// Enables or disables a rule; [`Error::NotFound`] if there is none.
    pub async fn set_detection_rule_enabled(
        &self,
        org: &TenantId,
        id: &str,
        enabled: bool,
        now: i64,
    ) -> Result<()> {
        // `updated_at` only moves forward, so the version pipelines poll
        // changes even when two changes fall in one millisecond.
        let n = self
            .db
            .execute(
                "UPDATE detection_rules SET enabled = ?1, \
                 updated_at = CASE WHEN updated_at >= ?2 THEN updated_at + 1 ELSE ?2 END \
                 WHERE org_id = ?3 AND id = ?4",
                params![enabled, now, org, id],
            )
            .await?;
        changed(n, "detection rule", id)
    }

    pub async fn delete_detection_rule(&self, org: &TenantId, id: &str) -> Result<()> {
        let deleted = self
            .db
            .execute(
                "DELETE FROM detection_rules WHERE org_id = ?1 AND id = ?2",
                params![org, id],
            )
            .await?;
        changed(deleted, "detection rule", id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewOrganization, testing};
    use schemas::Plan;

    async fn org(store: &MetaStore, id: &str, plan: Plan, parent: Option<&TenantId>) -> TenantId {
        store
            .create_organization(&NewOrganization {
                id: testing::t(id),
                name: id.into(),
                owner_email: format!("owner@{id}.test"),
                plan,
                parent_id: parent.cloned(),
                allow_overage: false,
            })
            .await
            .unwrap()
            .id
    }

    fn rule(org: &TenantId, id: &str, scope: RuleScope) -> DetectionRule {
        DetectionRule {
            org_id: org.clone(),
            id: id.into(),
            title: format!("rule {id}"),
            level: "high".into(),
            yaml: "title: x".into(),
            enabled: true,
            scope,
            created_at: 1000,
            updated_at: 1000,
        }
    }

    #[tokio::test]
    async fn rules_are_per_organization_with_msp_packs_for_children() {
        let store = testing::store().await;
        let msp = org(&store, "rules-msp", Plan::Msp, None).await;
        let child = org(&store, "rules-child", Plan::Business, Some(&msp)).await;
        let other = org(&store, "rules-other", Plan::Starter, None).await;
        store
            .add_detection_rule(&rule(&child, "a", RuleScope::Own))
            .await
            .unwrap();
        store
            .add_detection_rule(&rule(&msp, "pack-1", RuleScope::Children))
            .await
            .unwrap();
        store
            .add_detection_rule(&rule(&other, "a", RuleScope::Own))
            .await
            .unwrap();
        let dup = store
            .add_detection_rule(&rule(&child, "a", RuleScope::Own))
            .await
            .unwrap_err();
        assert!(matches!(dup, Error::Conflict { .. }), "{dup}");
        let ids = |v: Vec<DetectionRule>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_detection_rules(&child).await.unwrap()),
            ["a"]
        );
        assert_eq!(
            ids(store.inherited_detection_rules(&child).await.unwrap()),
            ["pack-1"]
        );
        assert!(
            store
                .inherited_detection_rules(&other)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .detection_rule(&other, "pack-1")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(store.count_detection_rules(&child).await.unwrap(), 1);

        let before = store.detection_rules_version().await.unwrap();
        store
            .set_detection_rule_enabled(&child, "a", false, 1000)
            .await
            .unwrap();
        let after = store.detection_rules_version().await.unwrap();
        assert_ne!(
            before, after,
            "a change in the same millisecond still shows"
        );
        assert!(
            !store
                .detection_rule(&child, "a")
                .await
                .unwrap()
                .unwrap()
                .enabled
        );
        let enabled = store.enabled_detection_rules().await.unwrap();
        assert!(enabled.iter().all(|r| r.id != "a" || r.org_id != child));
        assert_eq!(enabled.len(), 2);

        let missing = store
            .set_detection_rule_enabled(&other, "nope", true, 2000)
            .await
            .unwrap_err();
        assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
        store.delete_detection_rule(&child, "a").await.unwrap();
        assert!(store.delete_detection_rule(&child, "a").await.is_err());
        assert_ne!(store.detection_rules_version().await.unwrap(), after);
    }
}
