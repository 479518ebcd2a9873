//! White-label branding (enterprise and MSP plans, `Feature::WhiteLabel`):
//! the name, logo, colours and sender an organization's notifications
//! carry instead of SecureNet's. An MSP's branding applies to its child
//! organizations that have none of their own. Branding is applied when the
//! owner's plan includes white-label at the moment of use: after a
//! downgrade it is kept but not applied.

use schemas::{Feature, TenantId};
use serde::{Deserialize, Serialize};

use crate::db::params;
use crate::error::{Error, Result};
use crate::orgs::Organization;
use crate::store::{MetaStore, now_ms};

/// An organization's branding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    /// The product name shown in place of "SecureNet" (1–100 characters).
    pub name: String,
    /// An `https://` logo, for webhook receivers and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    /// `#RRGGBB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_color: Option<String>,
    /// `#RRGGBB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accent_color: Option<String>,
    /// The display name of notification e-mails (default: `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    /// The address notification e-mails come from (default: the
    /// configured `api.notify.smtp.from`); the SMTP relay must be allowed
    /// to send as it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_address: Option<String>,
}

fn is_color(s: &str) -> bool {
    s.len() == 7 && s.starts_with('#') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn plain(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

impl Branding {
    /// Checks every field; the error names the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Invalid(format!("branding: {what}")));
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 100 || !plain(name) {
            return bad("name must be 1–100 characters without control characters");
        }
        if let Some(url) = &self.logo_url {
            let ok = url.len() <= 2048
                && url::Url::parse(url).is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
            if !ok {
                return bad("logo_url must be an https:// URL of at most 2048 characters");
            }
        }
        for (field, color) in [
            ("primary_color", &self.primary_color),
            ("accent_color", &self.accent_color),
        ] {
            if color.as_deref().is_some_and(|c| !is_color(c)) {
                return bad(&format!("{field} must be #RRGGBB"));
            }
        }
        if let Some(sender) = &self.sender_name
            && (sender.trim().is_empty() || sender.chars().count() > 100 || !plain(sender))
        {
            return bad("sender_name must be 1–100 characters without control characters");
        }
        if let Some(address) = &self.sender_address {
            let ok = address.len() <= 254
                && plain(address)
                && address
                    .split_once('@')
                    .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
                && !address.contains(char::is_whitespace);
            if !ok {
                return bad("sender_address must be an e-mail address");
            }
        }
        Ok(())
    }
}

/// Branding in force for an organization, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub branding: Branding,
    /// The organization itself, or its MSP.
    pub from: TenantId,
}

impl MetaStore {
    /// The organization's own branding, whatever its plan.
    pub async fn branding(&self, org: &TenantId) -> Result<Option<Branding>> {
        let row = self
            .db
            .query_opt(
                "SELECT branding FROM branding WHERE org_id = ?1",
                params![org],
            )
            .await?;
        Ok(row
            .map(|r| r.get::<String>(0))
            .transpose()?
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// Stores the organization's branding (validated).
    pub async fn set_branding(&self, org: &TenantId, branding: &Branding) -> Result<()> {
        branding.validate()?;
        let json = serde_json::to_string(branding).map_err(|e| Error::Invalid(e.to_string()))?;
        self.db
            .execute(
                "INSERT INTO branding (org_id, branding, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(org_id) DO UPDATE SET branding = excluded.branding, \
                 updated_at = excluded.updated_at",
                params![org, json, now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Removes the organization's own branding (an MSP's applies again).
    pub async fn clear_branding(&self, org: &TenantId) -> Result<()> {
        self.db
            .execute("DELETE FROM branding WHERE org_id = ?1", params![org])
            .await?;
        Ok(())
    }

    /// The branding `org`'s notifications carry now: its own when its plan
    /// includes white-label, else its MSP's when the MSP's plan does; None
    /// means SecureNet's.
    pub async fn applied_branding(&self, org: &Organization) -> Result<Option<Applied>> {
        if org.plan.includes(Feature::WhiteLabel)
            && let Some(branding) = self.branding(&org.id).await?
        {
            return Ok(Some(Applied {
                branding,
                from: org.id.clone(),
            }));
        }
        let Some(parent) = &org.parent_id else {
            return Ok(None);
        };
        let Some(msp) = self.organization(parent).await? else {
            return Ok(None);
        };
        if !msp.plan.includes(Feature::WhiteLabel) {
            return Ok(None);
        }
        Ok(self.branding(&msp.id).await?.map(|branding| Applied {
            branding,
            from: msp.id.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewOrganization;
    use crate::testing::{org, t};
    use schemas::Plan;

    fn brand(name: &str) -> Branding {
        Branding {
            name: name.into(),
            logo_url: Some("https://cdn.acme.test/logo.png".into()),
            primary_color: Some("#0a1B2c".into()),
            accent_color: None,
            sender_name: Some("Acme SOC".into()),
            sender_address: Some("soc@acme.test".into()),
        }
    }

    #[test]
    fn every_field_is_checked_and_named() {
        brand("Acme Shield").validate().unwrap();
        let cases: Vec<(Branding, &str)> = vec![
            (brand(""), "name"),
            (brand(&"x".repeat(101)), "name"),
            (brand("bad\nname"), "name"),
            (
                Branding {
                    logo_url: Some("http://cdn.acme.test/l.png".into()),
                    ..brand("A")
                },
                "logo_url",
            ),
            (
                Branding {
                    logo_url: Some("javascript:alert(1)".into()),
                    ..brand("A")
                },
                "logo_url",
            ),
            (
                Branding {
                    primary_color: Some("red".into()),
                    ..brand("A")
                },
                "primary_color",
            ),
            (
                Branding {
                    accent_color: Some("#12345g".into()),
                    ..brand("A")
                },
                "accent_color",
            ),
            (
                Branding {
                    sender_name: Some(" ".into()),
                    ..brand("A")
                },
                "sender_name",
            ),
            (
                Branding {
                    sender_address: Some("soc at acme".into()),
                    ..brand("A")
                },
                "sender_address",
            ),
            (
                Branding {
                    sender_address: Some("soc@acme.test\r\nBcc: x@y.z".into()),
                    ..brand("A")
                },
                "sender_address",
            ),
        ];
        for (b, field) in cases {
            let err = b.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[tokio::test]
    async fn own_branding_then_the_msps_and_only_while_the_plan_includes_it() {
        let store = crate::testing::store().await;
        let msp = store
            .create_organization(&NewOrganization {
                id: t("msp"),
                name: "MSP".into(),
                owner_email: "o@msp.test".into(),
                plan: Plan::Msp,
                parent_id: None,
                allow_overage: false,
            })
            .await
            .unwrap();
        let kid = store
            .create_organization(&NewOrganization {
                id: t("kid"),
                name: "Kid".into(),
                owner_email: "o@kid.test".into(),
                plan: Plan::Professional,
                parent_id: Some(t("msp")),
                allow_overage: false,
            })
            .await
            .unwrap();
        let loner = org(&store, "loner").await;
        assert_eq!(store.applied_branding(&kid).await.unwrap(), None);
        store
            .set_branding(&msp.id, &brand("MSP Guard"))
            .await
            .unwrap();
        let applied = store.applied_branding(&kid).await.unwrap().unwrap();
        assert_eq!(
            (applied.branding.name.as_str(), applied.from.as_str()),
            ("MSP Guard", "msp")
        );
        // A business organization may store none that applies.
        store
            .set_branding(&loner.id, &brand("Loner"))
            .await
            .unwrap();
        assert_eq!(store.applied_branding(&loner).await.unwrap(), None);
        store.clear_branding(&msp.id).await.unwrap();
        assert_eq!(store.applied_branding(&kid).await.unwrap(), None);
        assert!(store.set_branding(&msp.id, &brand("")).await.is_err());
    }
}
