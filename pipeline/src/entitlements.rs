//! Plans of every organization, for the pipeline stages a plan gates: the
//! streaming detector (ML detection, professional and up) sees only the
//! batches of organizations whose plan includes it (`schemas::Feature`).
//!
//! The binary refreshes the [`PlanBook`] from the metadata store every few
//! seconds (`PLAN_REFRESH` in `src/serve.rs`), so a plan change reaches
//! every pipeline process within that bound. An organization the book does
//! not know yet (created since the last refresh) is treated as not
//! entitled — a feature is never given away — and wakes the refresher at
//! once ([`PlanBook::unknown_seen`]), so only its batches in flight until
//! that read completes pass the stage by.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::{IntCounterVec, Opts, Registry};
use schemas::{Envelope, Feature, Plan, TenantId};

use crate::consumer::Inline;

/// Each organization's plan, as last read.
#[derive(Default)]
pub struct PlanBook {
    plans: RwLock<HashMap<TenantId, Plan>>,
    unknown: tokio::sync::Notify,
}

impl PlanBook {
    /// Replaces every organization's plan (a refresh).
    pub fn replace(&self, plans: HashMap<TenantId, Plan>) {
        *self.plans.write().unwrap_or_else(|p| p.into_inner()) = plans;
    }

    /// Whether `tenant`'s plan includes `feature` (false when unknown).
    pub fn includes(&self, tenant: &TenantId, feature: Feature) -> bool {
        let plan = self
            .plans
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .copied();
        match plan {
            Some(plan) => plan.includes(feature),
            None => {
                self.unknown.notify_one();
                false
            }
        }
    }

    /// Resolves when an organization the book does not know was asked
    /// about since the last call: time to read the plans again.
    pub async fn unknown_seen(&self) {
        self.unknown.notified().await
    }
}

/// An inline stage run only for organizations whose plan includes
/// `feature`; other organizations' batches pass it by (and are counted).
pub struct Gated {
    inner: Arc<dyn Inline>,
    plans: Arc<PlanBook>,
    feature: Feature,
    passed_by: IntCounterVec,
}

impl Gated {
    pub fn new(
        inner: Arc<dyn Inline>,
        plans: Arc<PlanBook>,
        feature: Feature,
        registry: &Registry,
    ) -> prometheus::Result<Self> {
        let passed_by = IntCounterVec::new(
            Opts::new(
                "securenet_pipeline_batches_not_entitled_total",
                "Batches a plan-gated stage passed by: the organization's plan does not include the feature",
            ),
            &["stage", "feature"],
        )?;
        // Several gated stages share the family: the first registers it.
        let passed_by = match registry.register(Box::new(passed_by.clone())) {
            Ok(()) => passed_by,
            Err(prometheus::Error::AlreadyReg) => passed_by,
            Err(e) => return Err(e),
        };
        Ok(Self {
            inner,
            plans,
            feature,
            passed_by,
        })
    }
}

impl Inline for Gated {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn enrich(&self, envelope: Envelope) -> detectors::Result<Envelope> {
        if self.plans.includes(envelope.tenant(), self.feature) {
            self.inner.enrich(envelope)
        } else {
            Ok(envelope)
        }
    }

    fn derive(&self, envelope: &Envelope) -> detectors::Result<Vec<Envelope>> {
        if self.plans.includes(envelope.tenant(), self.feature) {
            self.inner.derive(envelope)
        } else {
            self.passed_by
                .with_label_values(&[self.inner.name(), self.feature.as_str()])
                .inc();
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Inline for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn derive(&self, _: &Envelope) -> detectors::Result<Vec<Envelope>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        }
    }

    #[test]
    fn only_entitled_organizations_reach_the_stage_and_a_downgrade_stops_it() {
        let t = |s: &str| TenantId::new(s).unwrap();
        let inner = Arc::new(Counting::default());
        let plans = Arc::new(PlanBook::default());
        plans.replace(HashMap::from([
            (t("pro"), Plan::Professional),
            (t("small"), Plan::Starter),
        ]));
        let registry = Registry::new();
        let gated = Gated::new(
            inner.clone(),
            plans.clone(),
            Feature::MlDetection,
            &registry,
        )
        .unwrap();
        let batch = |tenant: &str| crate::testutil::envelope(tenant, 3);
        for tenant in ["pro", "small", "unknown", "pro"] {
            gated.derive(&batch(tenant)).unwrap();
        }
        assert_eq!(inner.0.load(Ordering::Relaxed), 2);
        plans.replace(HashMap::from([(t("pro"), Plan::Starter)]));
        gated.derive(&batch("pro")).unwrap();
        assert_eq!(inner.0.load(Ordering::Relaxed), 2);
        // A second gated stage shares the metric family.
        Gated::new(inner, plans, Feature::MlDetection, &registry).unwrap();
    }
}
