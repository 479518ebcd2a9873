//! Threat-intelligence lists (`threat_lists`): each organization's named
//! lists of indicators, stored whole as the JSON array the detectors
//! crate parsed and normalized (this crate does not parse indicators).
//! Uploading a list of an existing name replaces it. Pipelines poll
//! [`MetaStore::threat_lists_version`] like the rules' version.

use schemas::TenantId;
use serde::Serialize;

use crate::db::{Row, params};
use crate::error::Result;
use crate::rows::{changed, tenant};
use crate::store::MetaStore;

/// A list without its indicators (what listings show).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreatListInfo {
    pub org_id: TenantId,
    pub name: String,
    /// The level of its detections (Sigma's names).
    pub level: String,
    pub count: u64,
    pub updated_at: i64,
}

/// A list with its indicators (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub struct ThreatList {
    pub info: ThreatListInfo,
    pub indicators: String,
}

fn info_row(r: &Row) -> Result<ThreatListInfo> {
    Ok(ThreatListInfo {
        org_id: tenant(r.get(0)?)?,
        name: r.get(1)?,
        level: r.get(2)?,
        count: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

fn list_row(r: &Row) -> Result<ThreatList> {
    Ok(ThreatList {
        info: info_row(r)?,
        indicators: r.get(5)?,
    })
}

const INFO: &str = "org_id, name, level, count, updated_at";

impl MetaStore {
    /// Stores `list`, replacing one of the same name.
    pub async fn put_threat_list(&self, list: &ThreatList) -> Result<()> {
        let i = &list.info;
        // `updated_at` only moves forward, so the version pipelines poll
        // changes even for two uploads in one millisecond.
        self.db
            .execute(
                "INSERT INTO threat_lists (org_id, name, level, count, updated_at, indicators) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT(org_id, name) DO UPDATE SET level = excluded.level, \
                 count = excluded.count, indicators = excluded.indicators, \
                 updated_at = CASE WHEN threat_lists.updated_at >= excluded.updated_at \
                 THEN threat_lists.updated_at + 1 ELSE excluded.updated_at END",
                params![
                    i.org_id,
                    i.name,
                    i.level,
                    i.count,
                    i.updated_at,
                    list.indicators
                ],
            )
            .await?;
        Ok(())
    }

    /// The organization's lists, by name, without their indicators.
    pub async fn list_threat_lists(&self, org: &TenantId) -> Result<Vec<ThreatListInfo>> {
        self.db
            .query(
                &format!("SELECT {INFO} FROM threat_lists WHERE org_id = ?1 ORDER BY name"),
                params![org],
            )
            .await?
            .iter()
            .map(info_row)
            .collect()
    }

    pub async fn threat_list(&self, org: &TenantId, name: &str) -> Result<Option<ThreatList>> {
        self.db
            .query_opt(
                &format!(
                    "SELECT {INFO}, indicators FROM threat_lists WHERE org_id = ?1 AND name = ?2"
                ),
                params![org, name],
            )
            .await?
            .map(|r| list_row(&r))
            .transpose()
    }

    /// Every list of every organization (what pipelines load).
    pub async fn all_threat_lists(&self) -> Result<Vec<ThreatList>> {
        self.db
            .query(
                &format!("SELECT {INFO}, indicators FROM threat_lists ORDER BY org_id, name"),
                params![],
            )
            .await?
            .iter()
            .map(list_row)
            .collect()
    }

    /// Every organization's lists without their indicators (what a
    /// pipeline compares before fetching the lists that changed).
    pub async fn all_threat_list_infos(&self) -> Result<Vec<ThreatListInfo>> {
        self.db
            .query(
                &format!("SELECT {INFO} FROM threat_lists ORDER BY org_id, name"),
                params![],
            )
            .await?
            .iter()
            .map(info_row)
            .collect()
    }

    /// Changes whenever a list is stored or deleted.
    pub async fn threat_lists_version(&self) -> Result<(i64, i64)> {
        let row = self
            .db
            .query_opt(
                "SELECT COUNT(*), COALESCE(MAX(updated_at), 0) FROM threat_lists",
                params![],
            )
            .await?;
        Ok(match row {
            Some(r) => (r.get(0)?, r.get(1)?),
            None => (0, 0),
        })
    }

    pub async fn delete_threat_list(&self, org: &TenantId, name: &str) -> Result<()> {
        let deleted = self
            .db
            .execute(
                "DELETE FROM threat_lists WHERE org_id = ?1 AND name = ?2",
                params![org, name],
            )
            .await?;
        changed(deleted, "threat-intel list", name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::testing;

    fn list(org: &TenantId, name: &str, count: u64, at: i64) -> ThreatList {
        ThreatList {
            info: ThreatListInfo {
                org_id: org.clone(),
                name: name.into(),
                level: "high".into(),
                count,
                updated_at: at,
            },
            indicators: format!("[{count}]"),
        }
    }

    #[tokio::test]
    async fn lists_are_replaced_by_name_and_kept_per_organization() {
        let (store, acme) = testing::store_with("intel-acme").await;
        store
            .put_threat_list(&list(&acme, "feed", 2, 1000))
            .await
            .unwrap();
        let v1 = store.threat_lists_version().await.unwrap();
        store
            .put_threat_list(&list(&acme, "feed", 3, 1000))
            .await
            .unwrap();
        let v2 = store.threat_lists_version().await.unwrap();
        assert_ne!(v1, v2, "a replacement in the same millisecond still shows");
        let got = store.threat_list(&acme, "feed").await.unwrap().unwrap();
        assert_eq!((got.info.count, got.indicators.as_str()), (3, "[3]"));
        assert_eq!(store.list_threat_lists(&acme).await.unwrap().len(), 1);
        let other = testing::t("intel-other");
        assert!(store.threat_list(&other, "feed").await.unwrap().is_none());
        assert_eq!(store.all_threat_lists().await.unwrap().len(), 1);
        assert_eq!(store.all_threat_list_infos().await.unwrap()[0].count, 3);
        store.delete_threat_list(&acme, "feed").await.unwrap();
        let err = store.delete_threat_list(&acme, "feed").await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert_ne!(store.threat_lists_version().await.unwrap(), v2);
    }
}
