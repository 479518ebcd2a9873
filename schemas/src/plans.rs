//! The billing catalogue (../shared/API.md "Plans"). Money is integer cents.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Price per device over the plan's limit, in cents ($5).
pub const DEVICE_OVERAGE_CENTS: u64 = 500;
/// Price per scan over the plan's monthly limit, in cents ($0.10).
pub const SCAN_OVERAGE_CENTS: u64 = 10;

/// Plans in catalogue order (starter lowest); a plan includes what every
/// lower plan includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Starter,
    Professional,
    Business,
    Enterprise,
    Msp,
}

/// Features sold by plan (the catalogue's feature column): the one table
/// every gated path consults, where the feature is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// "ML detection": the pipeline's streaming models (scoring and
    /// training) and the insights models API.
    MlDetection,
    /// Webhook notification channels ("integrations").
    Webhooks,
    /// "Compliance reporting".
    ComplianceReports,
    /// Branding of notifications and reports.
    WhiteLabel,
    /// Reseller capabilities: consolidated invoices, markups, moving a
    /// child between plans.
    Reseller,
}

impl Feature {
    pub const ALL: [Feature; 5] = [
        Feature::MlDetection,
        Feature::Webhooks,
        Feature::ComplianceReports,
        Feature::WhiteLabel,
        Feature::Reseller,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::MlDetection => "ml_detection",
            Feature::Webhooks => "webhooks",
            Feature::ComplianceReports => "compliance_reports",
            Feature::WhiteLabel => "white_label",
            Feature::Reseller => "reseller",
        }
    }

    /// The lowest plan that includes it (every plan above it does too).
    pub fn lowest_plan(self) -> Plan {
        match self {
            Feature::MlDetection | Feature::Webhooks => Plan::Professional,
            Feature::ComplianceReports => Plan::Business,
            Feature::WhiteLabel => Plan::Enterprise,
            Feature::Reseller => Plan::Msp,
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a plan allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanLimits {
    pub max_devices: u64,
    pub max_scans_per_month: u64,
    pub log_retention_days: u32,
}

/// Limits the platform operator sets for one organization (an enterprise
/// contract), each replacing its plan's value; what is unset follows the
/// plan, also across plan changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_devices: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scans_per_month: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_retention_days: Option<u32>,
}

impl LimitsOverride {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl PlanLimits {
    /// These limits with `o`'s values in place of theirs.
    pub fn with(self, o: Option<&LimitsOverride>) -> PlanLimits {
        let Some(o) = o else { return self };
        PlanLimits {
            max_devices: o.max_devices.unwrap_or(self.max_devices),
            max_scans_per_month: o.max_scans_per_month.unwrap_or(self.max_scans_per_month),
            log_retention_days: o.log_retention_days.unwrap_or(self.log_retention_days),
        }
    }
}

impl Plan {
    pub const ALL: [Plan; 5] = [
        Plan::Starter,
        Plan::Professional,
        Plan::Business,
        Plan::Enterprise,
        Plan::Msp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Starter => "starter",
            Plan::Professional => "professional",
            Plan::Business => "business",
            Plan::Enterprise => "enterprise",
            Plan::Msp => "msp",
        }
    }

    /// Monthly base price in cents.
    pub fn price_cents(self) -> u64 {
        match self {
            Plan::Starter => 9_900,
            Plan::Professional => 29_900,
            Plan::Business => 79_900,
            Plan::Enterprise => 199_900,
            Plan::Msp => 299_900,
        }
    }

    pub fn limits(self) -> PlanLimits {
        let (max_devices, max_scans_per_month, log_retention_days) = match self {
            Plan::Starter => (5, 25, 30),
            Plan::Professional => (50, 250, 30),
            Plan::Business => (500, 2_500, 30),
            Plan::Enterprise => (1_000, 5_000, 365),
            Plan::Msp => (1_000, 10_000, 365),
        };
        PlanLimits {
            max_devices,
            max_scans_per_month,
            log_retention_days,
        }
    }

    /// Whether the plan includes `feature` — checked where the feature is
    /// used (a webhook is delivered, a model trains…), not only when it is
    /// set up, so a downgrade stops it at once.
    pub fn includes(self, feature: Feature) -> bool {
        self >= feature.lowest_plan()
    }

    /// The gated features the plan includes.
    pub fn entitlements(self) -> Vec<Feature> {
        Feature::ALL
            .into_iter()
            .filter(|f| self.includes(*f))
            .collect()
    }

    /// Whether devices over the limit are billed as overage rather than
    /// refused even without `allow_overage`: Enterprise and MSP are sold
    /// with "1,000+ devices" (1,000 included, the rest at
    /// [`DEVICE_OVERAGE_CENTS`] each).
    pub fn bills_device_overage(self) -> bool {
        matches!(self, Plan::Enterprise | Plan::Msp)
    }

    pub fn features(self) -> &'static [&'static str] {
        match self {
            Plan::Starter => &["basic scanning", "email alerts"],
            Plan::Professional => &["advanced scanning", "ML detection", "integrations"],
            Plan::Business => &["full suite", "compliance reporting"],
            Plan::Enterprise => &["full suite", "white-label", "compliance"],
            Plan::Msp => &["multi-tenant (child organizations)", "reseller"],
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Plan {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownPlan(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_feature_from_its_plan_up() {
        let names =
            |p: Plan| -> Vec<&str> { p.entitlements().into_iter().map(Feature::as_str).collect() };
        assert!(names(Plan::Starter).is_empty());
        assert_eq!(names(Plan::Professional), ["ml_detection", "webhooks"]);
        assert_eq!(
            names(Plan::Business),
            ["ml_detection", "webhooks", "compliance_reports"]
        );
        assert_eq!(
            names(Plan::Enterprise),
            [
                "ml_detection",
                "webhooks",
                "compliance_reports",
                "white_label"
            ]
        );
        assert_eq!(
            names(Plan::Msp),
            [
                "ml_detection",
                "webhooks",
                "compliance_reports",
                "white_label",
                "reseller"
            ]
        );
        assert!(!Plan::Business.bills_device_overage());
        assert!(Plan::Enterprise.bills_device_overage() && Plan::Msp.bills_device_overage());
    }

    #[test]
    fn features_follow_the_catalogue_order() {
        assert!(!Plan::Starter.includes(Feature::Webhooks));
        for p in [
            Plan::Professional,
            Plan::Business,
            Plan::Enterprise,
            Plan::Msp,
        ] {
            assert!(p.includes(Feature::Webhooks), "{p}");
        }
    }

    #[test]
    fn catalogue_matches_the_product_table() {
        let rows: Vec<_> = Plan::ALL
            .iter()
            .map(|p| {
                let l = p.limits();
                (
                    p.as_str(),
                    p.price_cents(),
                    l.max_devices,
                    l.max_scans_per_month,
                    l.log_retention_days,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("starter", 9_900, 5, 25, 30),
                ("professional", 29_900, 50, 250, 30),
                ("business", 79_900, 500, 2_500, 30),
                ("enterprise", 199_900, 1_000, 5_000, 365),
                ("msp", 299_900, 1_000, 10_000, 365),
            ]
        );
    }

    #[test]
    fn names_round_trip() {
        for p in Plan::ALL {
            assert_eq!(p.as_str().parse::<Plan>().unwrap(), p);
        }
        assert!("gold".parse::<Plan>().is_err());
    }
}
