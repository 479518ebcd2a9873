use std::time::Duration;

use arrow::array::AsArray;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

const T0: i64 = 1_795_687_200_000;
const MIN: i64 = 60_000;

fn tenant(t: &str) -> TenantId {
    TenantId::new(t).unwrap()
}

/// A regular host-minute: ~50 events, a few apps and sources, rare errors.
fn normal(rng: &mut ChaCha8Rng, t: &str, entity: usize, minute: i64) -> ClosedWindow {
    let events = rng.random_range(40.0..60.0_f64).round();
    ClosedWindow {
        tenant: tenant(t),
        entity: format!("host-{entity}"),
        start_ms: T0 + minute * MIN,
        end_ms: T0 + (minute + 1) * MIN,
        values: [
            events,
            rng.random_range(2.0..5.0_f64).round(),
            rng.random_range(1.0..4.0_f64).round(),
            rng.random_range(0.0..2.0_f64).round(),
            rng.random_range(0.0..0.05),
            events * rng.random_range(90.0..110.0),
            0.0,
            0.0,
        ],
    }
}

fn config() -> ModelConfig {
    ModelConfig {
        min_windows: 300,
        retrain_after_windows: 1_000_000,
        ..Default::default()
    }
}

/// Waits for the training thread and collects its result.
fn wait_trained(d: &mut StreamingDetector) {
    let until = Instant::now() + Duration::from_secs(30);
    while d.training() {
        assert!(Instant::now() < until, "training did not finish");
        std::thread::sleep(Duration::from_millis(5));
        d.collect_trained();
    }
}

fn trained_detector(rng: &mut ChaCha8Rng) -> StreamingDetector {
    let mut d = StreamingDetector::new(WindowConfig::default(), config());
    let windows: Vec<_> = (0..400)
        .map(|i| normal(rng, "acme", i % 20, i as i64 / 20))
        .collect();
    // Cold start: no model, so nothing is scored and nothing reported.
    let out = d.process_closed(windows, T0).unwrap();
    assert!(out.is_empty());
    assert!(d.training(), "enough windows start the first training");
    wait_trained(&mut d);
    d
}

#[test]
fn a_tenant_gets_a_model_once_it_has_enough_windows_then_anomalies_are_reported() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut d = StreamingDetector::new(WindowConfig::default(), config());
    let few: Vec<_> = (0..299).map(|i| normal(&mut rng, "acme", 0, i)).collect();
    d.process_closed(few, T0).unwrap();
    assert!(!d.training() && d.model(&tenant("acme")).is_none());

    let mut d = trained_detector(&mut rng);
    let model = d.model(&tenant("acme")).expect("a model");
    assert_eq!(
        (model.version, model.model_id.as_str()),
        (1, WINDOW_MODEL_ID)
    );
    assert_eq!(model.training_windows, 400);
    assert!(model.threshold >= config().min_score);
    let events = d.drain_events();
    assert!(matches!(&events[..], [Event::ModelTrained { model, .. }] if model.version == 1));

    // 100 normal windows and one brute-force burst.
    let mut windows: Vec<_> = (0..100)
        .map(|i| normal(&mut rng, "acme", i % 20, 100))
        .collect();
    let mut burst = normal(&mut rng, "acme", 99, 100);
    burst.values[3] = 400.0; // auth_failures
    burst.values[0] = 450.0; // events
    burst.values[5] = 45_000.0;
    windows.push(burst);
    let out = d.process_closed(windows, T0).unwrap();
    assert_eq!(out.len(), 1, "one anomalies envelope for the tenant");
    let env = &out[0];
    assert_eq!(env.kind(), RecordKind::Anomalies);
    let b = env.batch();
    let entities = b.column_by_name("entity").unwrap().as_string::<i32>();
    let flagged: Vec<&str> = (0..b.num_rows()).map(|i| entities.value(i)).collect();
    assert_eq!(flagged, ["host-99"], "only the burst is anomalous");
    let events = d.drain_events();
    let Some(Event::Anomaly(a)) = events.first() else {
        panic!("{events:?}")
    };
    assert!(a.score > a.threshold);
    assert_eq!(a.model_version, 1);
    assert_eq!(a.features[3], ("auth_failures", 400.0));
    let top: Vec<&str> = a.explanation.iter().take(3).map(|e| e.0).collect();
    assert!(top.contains(&"auth_failures"), "{:?}", a.explanation);
    assert!(Severity::ALERTS.contains(&a.severity));
    let explanation: serde_json::Value = serde_json::from_str(
        b.column_by_name("explanation")
            .unwrap()
            .as_string::<i32>()
            .value(0),
    )
    .unwrap();
    assert!(explanation["auth_failures"].as_f64().unwrap() > 0.0);
}

#[test]
fn models_are_retrained_with_a_new_version_and_restored_models_continue_the_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut d = trained_detector(&mut rng);
    d.config.retrain_after_windows = 200;
    let more: Vec<_> = (0..200)
        .map(|i| normal(&mut rng, "acme", i % 20, 50))
        .collect();
    d.process_closed(more, T0).unwrap();
    assert!(d.training());
    wait_trained(&mut d);
    assert_eq!(d.model(&tenant("acme")).unwrap().version, 2);
    assert_eq!(d.model(&tenant("acme")).unwrap().training_windows, 600);

    // A fresh process restores version 7 from the registry.
    let mut restored = StreamingDetector::new(WindowConfig::default(), config());
    let mut model = (*d.model(&tenant("acme")).unwrap()).clone();
    model.version = 7;
    restored.restore(model);
    restored.config.retrain_after_windows = 300;
    let windows: Vec<_> = (0..300)
        .map(|i| normal(&mut rng, "acme", i % 20, 60))
        .collect();
    restored.process_closed(windows, T0).unwrap();
    wait_trained(&mut restored);
    assert_eq!(restored.model(&tenant("acme")).unwrap().version, 8);
}

#[test]
fn tenants_have_their_own_models() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut d = trained_detector(&mut rng);
    assert!(d.model(&tenant("globex")).is_none());
    // globex's windows are not scored by acme's model.
    let mut burst = normal(&mut rng, "globex", 1, 0);
    burst.values[3] = 400.0;
    assert!(d.process_closed(vec![burst], T0).unwrap().is_empty());
}

#[test]
fn anomaly_batches_are_deterministic() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let d = trained_detector(&mut rng);
    let model = d.model(&tenant("acme")).unwrap();
    let w = normal(&mut rng, "acme", 1, 0);
    let input = model.input(&w.values);
    let a = anomaly(&w, &model, 0.9, &input);
    let b = anomaly(&w, &model, 0.9, &input);
    assert_eq!(a.anomaly_id, b.anomaly_id);
    let e1 = anomalies_envelope(&tenant("acme"), std::slice::from_ref(&a)).unwrap();
    let e2 = anomalies_envelope(&tenant("acme"), &[b]).unwrap();
    assert_eq!(e1.batch_id(), e2.batch_id());
    assert_eq!(e1.batch(), e2.batch());
    assert_eq!(e1.batch().num_rows(), 1);
}

#[test]
fn severity_follows_the_margin_over_the_threshold() {
    assert_eq!(severity(0.61, 0.6), Severity::Low);
    assert_eq!(severity(0.66, 0.6), Severity::Medium);
    assert_eq!(severity(0.71, 0.6), Severity::High);
    assert_eq!(severity(0.80, 0.6), Severity::Critical);
}

#[test]
fn logs_flow_through_windows_and_models_via_the_detector_interface() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut d = trained_detector(&mut rng);
    d.drain_events();
    // Through process_batch/on_tick: one minute of a noisy host.
    let id = Uuid::now_v7();
    let mut b = schemas::LogBatchBuilder::with_capacity(500);
    for i in 0..500 {
        b.append(&schemas::LogRecord {
            ts_ms: T0 + 200 * MIN + i,
            received_ms: T0 + 200 * MIN + i,
            host: Some("victim".into()),
            app: Some("sshd".into()),
            source_ip: Some(format!("203.0.113.{}", i % 250)),
            severity: Some(5),
            message: format!(
                "Failed password for root from 203.0.113.{} port 22",
                i % 250
            ),
            bytes: 90,
            input: "syslog_tcp",
            ..Default::default()
        });
    }
    let env = Envelope::new(
        tenant("acme"),
        RecordKind::Logs,
        id,
        b.finish(&tenant("acme"), id).unwrap(),
    )
    .unwrap();
    assert!(d.process_batch(&env).unwrap().is_empty());
    assert!(
        d.on_tick(T0).unwrap().is_empty(),
        "the window is still open"
    );
    let out = d.on_shutdown().unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].num_rows(), 1);
    assert_eq!(d.stats().anomalies, 1);
}

#[test]
fn quiet_windows_are_never_anomalous() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut d = trained_detector(&mut rng);
    let mut quiet = normal(&mut rng, "acme", 3, 300);
    quiet.values = [1.0, 1.0, 1.0, 0.0, 0.0, 90.0, 0.0, 0.0];
    assert!(d.process_closed(vec![quiet], T0).unwrap().is_empty());
    let model = d.model(&tenant("acme")).unwrap();
    assert_eq!(model.floor.len(), N_FEATURES);
    // Floored to the medians: it scores like a typical window.
    let input = model.input(&[1.0, 1.0, 1.0, 0.0, 0.0, 90.0, 0.0, 0.0]);
    assert_eq!(input[0], model.floor[0]);
}
