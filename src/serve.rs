//! `securenet serve`: the embedded all-in-one process.
//!
//! HTTP and syslog ingest → per-tenant batcher → embedded bus → Parquet sink, and the
//! query API over the same lake, on one listener. Shutdown order matters:
//! stop accepting → flush the batcher (in-flight requests get their
//! answers) → close the bus → let the consumer drain → exit.

use std::sync::Arc;

use anyhow::Context;
use axum::middleware;
use control::MetaStore;
use futures::FutureExt;
use ingest::Batcher;
use ingest::http::IngestState;
use ingest::syslog::{SyslogMetrics, SyslogServer};
use pipeline::bus::embedded;
use pipeline::{BusProducer, Lake, PipelineMetrics, Sink, consumer};
use query_api::sql::SqlEngine;
use query_api::{AppState, HealthCheck};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;

pub async fn run(config: Config, sql_runtime: tokio::runtime::Handle) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let store = Arc::new(crate::admin::open_store(&config)?);
    announce_default_key(&store, &config)?;

    let registry = prometheus::Registry::new();
    let pipeline_metrics = PipelineMetrics::new(&registry)?;
    let ingest_metrics = ingest::IngestMetrics::new(&registry)?;

    let lake = Lake::local(&config.lake_dir())?;
    let parquet: Arc<dyn Sink> = Arc::new(
        config
            .pipeline
            .parquet
            .build(lake.clone(), pipeline_metrics.clone())?,
    );
    let sinks = vec![parquet];

    let (producer, bus) = embedded::channel(config.pipeline.bus_capacity);
    let consumer_task = tokio::spawn(consumer::run(
        bus,
        sinks.clone(),
        config.pipeline.consumer.clone(),
        pipeline_metrics.clone(),
    ));
    let producer: Arc<dyn BusProducer> = Arc::new(producer);
    let (batcher, batcher_task) = Batcher::start(
        config.ingest.batch.clone(),
        producer.clone(),
        ingest_metrics.clone(),
    )?;

    // Syslog listeners: bound before the ready line so it can list them.
    let stop_listeners = CancellationToken::new();
    let syslog_metrics = SyslogMetrics::new(&registry)?;
    let mut listeners = JoinSet::new();
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

    let health = health_checks(
        &store,
        &sinks,
        &producer,
        &pipeline_metrics,
        config.pipeline.bus_capacity,
    );
    let api = AppState {
        store: store.clone(),
        sql: Arc::new(SqlEngine::new(config.sql.clone(), lake, sql_runtime)),
        registry,
        health: health.into(),
    };
    let ingest_state = IngestState {
        batcher: batcher.clone(),
        store,
        config: config.ingest.http.clone(),
        metrics: ingest_metrics,
        limits: Arc::new(control::RateLimits::new(
            config.ingest.http.rate_limit_per_sec,
            config.ingest.http.rate_limit_burst,
        )),
        producer: producer.clone(),
    };
    let app = ingest::http::router(ingest_state)
        .merge(query_api::router(api))
        .layer(middleware::from_fn(query_api::headers::security_headers));

    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, data_dir = %config.data_dir.display(), "securenet serving");
    let closing = batcher.clone();
    let stopping = stop_listeners.clone();
    let signal = shutdown_signal()?;
    // A machine-readable line for scripts and tests that bind port 0.
    println!("securenet ready http={addr}");
    let shutdown = async move {
        signal.await;
        info!("shutting down: flushing pending batches");
        closing.close().await;
        stopping.cancel();
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("http server")?;

    stop_listeners.cancel();
    while listeners.join_next().await.is_some() {}
    drop(batcher);
    batcher_task.await.context("batcher task")?;
    drop(producer);
    consumer_task.await.context("consumer task")?;
    info!("shutdown complete: every accepted record is written");
    Ok(())
}

fn announce_default_key(store: &MetaStore, config: &Config) -> anyhow::Result<()> {
    let plan = config.control.default_plan.parse()?;
    let issued = store.ensure_default_org(plan, config.control.default_api_key.as_deref())?;
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
    producer: &Arc<dyn BusProducer>,
    metrics: &PipelineMetrics,
    bus_capacity: usize,
) -> Vec<HealthCheck> {
    let store = store.clone();
    let sinks: Arc<[Arc<dyn Sink>]> = sinks.to_vec().into();
    // The health check must not keep the bus open at shutdown: hold a weak
    // reference.
    let bus = Arc::downgrade(producer);
    let metrics = metrics.clone();
    vec![
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
        HealthCheck {
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
        },
    ]
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
