//! `securenet serve|ingest|pipeline|query-api`: one process per role, or all
//! of them in one.
//!
//! - `serve`: everything; the bus is embedded unless `bus.kind = "kafka"`.
//! - `ingest`: HTTP and syslog receivers → batcher → Kafka.
//! - `pipeline`: Kafka → sinks, offsets committed after the sinks confirm.
//! - `query-api`: SQL over the lake.
//!
//! Every role serves `/metrics` and `/api/metrics/health` on `http.listen`.
//! Shutdown order matters: stop accepting → flush the batcher (in-flight
//! requests get their answers) → close or flush the bus → let the consumer
//! drain and commit → exit.

use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::middleware;
use control::MetaStore;
use futures::FutureExt;
use ingest::Batcher;
use ingest::http::IngestState;
use ingest::syslog::{SyslogMetrics, SyslogServer};
use pipeline::bus::{embedded, kafka};
use pipeline::detection::Detection;
use pipeline::sinks::clickhouse::ClickHouseSink;
use pipeline::{BusProducer, Lake, PipelineMetrics, Sink, consumer};
use query_api::sql::SqlEngine;
use query_api::{AppState, HealthCheck, OpsState};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{BusKind, Config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Ingest,
    Pipeline,
    QueryApi,
}

impl Role {
    fn ingests(self) -> bool {
        matches!(self, Role::Serve | Role::Ingest)
    }
    fn consumes(self) -> bool {
        matches!(self, Role::Serve | Role::Pipeline)
    }
    fn queries(self) -> bool {
        matches!(self, Role::Serve | Role::QueryApi)
    }
}

pub async fn run(
    role: Role,
    config: Config,
    sql_runtime: tokio::runtime::Handle,
) -> anyhow::Result<()> {
    let kafka = config.bus.kind == BusKind::Kafka;
    if matches!(role, Role::Ingest | Role::Pipeline) && !kafka {
        anyhow::bail!(
            "securenet {} needs the Kafka bus: set bus.kind = \"kafka\" and bus.kafka.brokers \
             (SECURENET_BUS__KIND=kafka); the embedded bus only connects roles inside `serve`",
            if role == Role::Ingest {
                "ingest"
            } else {
                "pipeline"
            }
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let store = Arc::new(crate::admin::open_store(&config)?);
    if role.ingests() || role.queries() {
        announce_default_key(&store, &config)?;
    }

    let registry = prometheus::Registry::new();
    let pipeline_metrics = PipelineMetrics::new(&registry)?;
    let lake = Lake::local(&config.lake_dir())?;
    let stop_consumer = CancellationToken::new();

    // The bus, and the pipeline consuming it.
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    let stop_maintenance = CancellationToken::new();
    let mut maintenance_task = None;
    let stop_detection = CancellationToken::new();
    let mut detection = None;
    if role.consumes() {
        sinks.push(Arc::new(
            config
                .pipeline
                .parquet
                .build(lake.clone(), pipeline_metrics.clone())?,
        ));
        let mut clickhouse = None;
        if config.pipeline.clickhouse.enabled() {
            let sink = Arc::new(
                ClickHouseSink::connect(&config.pipeline.clickhouse, pipeline_metrics.clone())
                    .await
                    .context("connecting to ClickHouse")?,
            );
            sinks.push(sink.clone());
            clickhouse = Some(sink);
        }
        if config.pipeline.detection.enabled {
            detection = Some(
                Detection::start(
                    config.pipeline.detection.clone(),
                    lake.clone(),
                    sinks.clone(),
                    &registry,
                    crate::insights::detector_hook(store.clone()),
                    stop_detection.clone(),
                )
                .await
                .context("starting the detector")?,
            );
        }
        if config.pipeline.maintenance.enabled {
            let maintenance = crate::maintain::build(&config, lake.clone(), clickhouse);
            let lease = maintenance.lease();
            let task =
                crate::maintain::spawn_loop(maintenance, store.clone(), stop_maintenance.clone());
            maintenance_task = Some((task, lease));
        }
    }
    if kafka && (role.ingests() || role.consumes()) {
        kafka::ensure_topics(&config.bus.kafka)
            .await
            .context("creating Kafka topics")?;
    }
    let mut kafka_producer = None;
    let (producer, consumer_task): (Option<Arc<dyn BusProducer>>, Option<JoinHandle<()>>) = if kafka
    {
        // The query API publishes its request records (api_requests).
        let producer = if role.ingests() || role.queries() {
            let p = kafka::KafkaProducer::new(&config.bus.kafka)?;
            kafka_producer = Some(p.clone());
            Some(Arc::new(p) as Arc<dyn BusProducer>)
        } else {
            None
        };
        let task = if role.consumes() {
            let bus = kafka::KafkaConsumer::new(
                &config.bus.kafka,
                stop_consumer.clone(),
                pipeline_metrics.clone(),
            )?;
            Some(tokio::spawn(consumer::run(
                bus,
                sinks.clone(),
                inline_detectors(detection.as_ref()),
                config.pipeline.consumer.clone(),
                pipeline_metrics.clone(),
            )))
        } else {
            None
        };
        (producer, task)
    } else if role == Role::Serve {
        let (producer, bus) = embedded::channel(config.bus.capacity);
        let task = tokio::spawn(consumer::run(
            bus,
            sinks.clone(),
            inline_detectors(detection.as_ref()),
            config.pipeline.consumer.clone(),
            pipeline_metrics.clone(),
        ));
        (Some(Arc::new(producer) as Arc<dyn BusProducer>), Some(task))
    } else {
        (None, None)
    };

    // Ingest: the batcher and the receivers.
    let stop_listeners = CancellationToken::new();
    let mut listeners = JoinSet::new();
    let mut ingest = None;
    if let (true, Some(producer)) = (role.ingests(), &producer) {
        let ingest_metrics = ingest::IngestMetrics::new(&registry)?;
        let (batcher, batcher_task) = Batcher::start(
            config.ingest.batch.clone(),
            producer.clone(),
            ingest_metrics.clone(),
        )?;
        // Syslog listeners: bound before the ready line so it can list them.
        let syslog_metrics = SyslogMetrics::new(&registry)?;
        for listener in &config.ingest.syslog {
            let server = SyslogServer::build(
                listener.clone(),
                store.clone(),
                batcher.clone(),
                syslog_metrics.clone(),
                ingest_metrics.clone(),
            )?;
            let name = server.name().to_string();
            let (addr, serve) = server.bind(stop_listeners.clone()).await?;
            info!(%addr, listener = %name, "syslog listening");
            println!("securenet ready syslog {name}={addr}");
            listeners.spawn(serve);
        }
        let state = IngestState {
            batcher: batcher.clone(),
            store: store.clone(),
            config: config.ingest.http.clone(),
            metrics: ingest_metrics,
            limits: Arc::new(control::RateLimits::new(
                config.ingest.http.rate_limit_per_sec,
                config.ingest.http.rate_limit_burst,
            )),
            producer: producer.clone(),
        };
        ingest = Some((batcher, batcher_task, state));
    }

    let ops = OpsState {
        registry: registry.clone(),
        health: health_checks(
            &store,
            &sinks,
            producer.as_ref(),
            &pipeline_metrics,
            config.bus.capacity,
        )
        .into(),
    };
    let mut app = Router::new();
    if let Some((_, _, state)) = &ingest {
        app = app.merge(ingest::http::router(state.clone()));
    }
    let mut meter_task = None;
    let stop_notify = CancellationToken::new();
    let mut notify_task = None;
    let mut sweeper_task = None;
    if role.queries() {
        let meter = match &producer {
            Some(p) => {
                let (meter, task) = query_api::metering::ApiMeter::start(
                    p.clone(),
                    std::time::Duration::from_secs(1),
                    &registry,
                )?;
                meter_task = Some(task);
                Some(meter)
            }
            None => {
                tracing::warn!("no bus: API requests are not metered (api_requests usage stays 0)");
                None
            }
        };
        let notifier = Arc::new(
            query_api::notify::Notifier::new(config.api.notify.clone(), &registry)
                .map_err(anyhow::Error::msg)?,
        );
        notify_task = Some(query_api::notify::spawn_dispatcher(
            store.clone(),
            notifier.clone(),
            stop_notify.clone(),
        ));
        sweeper_task = Some(query_api::insights::spawn_stale_session_sweeper(
            store.clone(),
            stop_notify.clone(),
        ));
        let api = AppState {
            store: store.clone(),
            insights: Arc::new(query_api::insights::Insights::new(
                lake.clone(),
                config.api.training.clone(),
            )),
            sign_in: Arc::new(query_api::signin::SignInGuard::new(&config.api)),
            sql: Arc::new(SqlEngine::new(config.api.sql.clone(), lake, sql_runtime)),
            meter,
            limits: Arc::new(control::RateLimits::new(
                config.api.rate_limit_per_sec,
                config.api.rate_limit_burst,
            )),
            platform_token: config
                .api
                .platform_admin_token
                .as_ref()
                .map(|t| query_api::auth::PlatformToken::new(t.expose()))
                .transpose()
                .map_err(anyhow::Error::msg)?,
            billing: Arc::new(query_api::billing::Billing {
                stripe_secret: config.api.stripe_webhook_secret.clone(),
                tolerance_secs: control::billing::STRIPE_TOLERANCE_SECS,
            }),
            system: Default::default(),
            llm: config.api.llm.clone().map(Arc::new),
            notify: notifier.clone(),
            data_dir: config.data_dir.clone(),
            ops: ops.clone(),
        };
        if let Some(secret) = &config.api.jwt_secret {
            store.set_jwt_secret(secret.expose().as_bytes())?;
        }
        app = app.merge(query_api::router(api));
    } else {
        app = app.merge(query_api::ops_router(ops));
    }
    let app = app
        .method_not_allowed_fallback(query_api::method_not_allowed)
        .layer(middleware::from_fn(query_api::headers::security_headers));

    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, ?role, data_dir = %config.data_dir.display(), "securenet serving");
    let closing = ingest.as_ref().map(|(b, _, _)| b.clone());
    let stopping = stop_listeners.clone();
    let signal = shutdown_signal()?;
    // A machine-readable line for scripts and tests that bind port 0.
    println!("securenet ready http={addr}");
    let shutdown = async move {
        signal.await;
        info!("shutting down: flushing pending batches");
        if let Some(batcher) = closing {
            batcher.close().await;
        }
        stopping.cancel();
    };
    let http_metrics = crate::http_server::HttpMetrics::new(&registry)?;
    crate::http_server::serve(listener, app, config.http.clone(), http_metrics, shutdown).await;

    stop_listeners.cancel();
    // The router (and its meter handle) is gone: the meter publishes what
    // it holds and ends, before the bus closes.
    stop_notify.cancel();
    if let Some(task) = notify_task {
        let _ = task.await;
    }
    if let Some(task) = sweeper_task {
        let _ = task.await;
    }
    if let Some(task) = meter_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }
    stop_maintenance.cancel();
    if let Some((task, lease)) = maintenance_task {
        // A pass in progress is abandoned: every step is kill-safe.
        task.abort();
        let _ = task.await;
        lease.release().await;
    }
    while listeners.join_next().await.is_some() {}
    if let Some((batcher, batcher_task, state)) = ingest {
        drop((batcher, state));
        batcher_task.await.context("batcher task")?;
    }
    if let Some(p) = &kafka_producer {
        p.flush(std::time::Duration::from_secs(30))
            .context("flushing the Kafka producer")?;
    }
    drop(producer);
    // With Kafka the consumer stops on request (the topic never "closes");
    // embedded, it ends when the last producer is gone.
    if kafka {
        stop_consumer.cancel();
    }
    if let Some(task) = consumer_task {
        task.await.context("consumer task")?;
    }
    // Last: close every open window and store what it yields.
    stop_detection.cancel();
    if let Some(d) = detection {
        d.finish().await;
    }
    info!("shutdown complete: every accepted record is written");
    Ok(())
}

/// Detectors every batch goes through before it is written: usage counting
/// (its records are stored and acknowledged with the batch) and, when on,
/// the streaming detector's feature windows.
fn inline_detectors(detection: Option<&Detection>) -> consumer::InlineDetectors {
    let usage: Arc<std::sync::Mutex<dyn detectors::Detector>> =
        Arc::new(std::sync::Mutex::new(detectors::usage::UsageCounter));
    let mut all = vec![usage];
    all.extend(detection.map(Detection::inline));
    all.into()
}

fn announce_default_key(store: &MetaStore, config: &Config) -> anyhow::Result<()> {
    let plan = config.control.default_plan.parse()?;
    let issued = store.ensure_default_org(
        plan,
        config
            .control
            .default_api_key
            .as_ref()
            .map(schemas::Secret::expose),
    )?;
    if let Some(key) = issued {
        eprintln!(
            "\n  SecureNet created the default organization and its first API key.\n  \
             It is shown only this once; store it now:\n\n    {}\n\n  \
             More keys: securenet keys create --org default\n",
            key.secret
        );
    }
    Ok(())
}

fn health_checks(
    store: &Arc<MetaStore>,
    sinks: &[Arc<dyn Sink>],
    producer: Option<&Arc<dyn BusProducer>>,
    metrics: &PipelineMetrics,
    bus_capacity: usize,
) -> Vec<HealthCheck> {
    let store = store.clone();
    let sinks: Arc<[Arc<dyn Sink>]> = sinks.to_vec().into();
    // The health check must not keep the bus open at shutdown: hold a weak
    // reference.
    let bus = producer.map(Arc::downgrade);
    let metrics = metrics.clone();
    let mut checks = vec![
        HealthCheck {
            name: "metadata",
            check: Arc::new(move || {
                let store = store.clone();
                async move {
                    store
                        .list_organizations()
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
                .boxed()
            }),
        },
        HealthCheck {
            name: "sinks",
            check: Arc::new(move || {
                let sinks = sinks.clone();
                async move {
                    consumer::healthcheck(&sinks)
                        .await
                        .map_err(|e| e.to_string())
                }
                .boxed()
            }),
        },
    ];
    let Some(bus) = bus else {
        return checks;
    };
    // The depth gauge is also refreshed every second, so scrapes see it
    // without anyone polling the health route; the task ends with the bus.
    {
        let (bus, metrics) = (bus.clone(), metrics.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(bus) = bus.upgrade() else { break };
                metrics.bus_depth.set(bus.depth() as i64);
            }
        });
    }
    checks.push(HealthCheck {
        name: "bus",
        check: Arc::new(move || {
            let bus = bus.clone();
            let metrics = metrics.clone();
            async move {
                let bus = bus.upgrade().ok_or("bus is closed")?;
                let depth = bus.depth();
                metrics.bus_depth.set(depth as i64);
                if depth > bus_capacity * 4 {
                    return Err(format!(
                        "bus backlog of {depth} batches (capacity {bus_capacity})"
                    ));
                }
                Ok(())
            }
            .boxed()
        }),
    });
    checks
}

/// Installs the SIGINT/SIGTERM handlers now (before the server announces
/// readiness, so an early signal is never fatal) and returns a future that
/// resolves on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
    })
}
