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
use pipeline::entitlements::{Gated, PlanBook};
use pipeline::maintenance::LeaseHandle;
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

pub async fn run(role: Role, config: Config) -> anyhow::Result<()> {
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
    let store = crate::admin::open_store(&config).await?;
    // Every role that checks tokens (ingest accepts them as the query API
    // does) signs and verifies with the configured secret, else with the
    // one the shared store holds.
    if let Some(secret) = &config.api.jwt_secret {
        store.set_jwt_secret(secret.expose().as_bytes())?;
    }
    let store = Arc::new(store);
    if role.ingests() || role.queries() {
        announce_default_key(&store, &config).await?;
    }
    let registry = prometheus::Registry::new();
    let metrics = PipelineMetrics::new(&registry)?;
    // The connection caps every listener takes, bounded by the
    // file-descriptor limit once (that bound logs when it lowers the cap).
    let caps = ingest::conn_caps::ConnectionCaps {
        total: crate::http_server::effective_max_connections(config.http.max_connections),
        per_ip: config.http.max_connections_per_ip,
    };
    let grpc_connections = GrpcConnections::new(&registry, caps)?;
    let lake = config.lake()?;

    // Start: what writes (sinks, detector, maintenance), the bus between
    // ingest and the pipeline, the receivers, the query API.
    let mut pipeline = match role.consumes() {
        true => Some(PipelineRole::start(&config, &lake, &store, &registry, &metrics).await?),
        false => None,
    };
    let bus = Bus::start(role, &config, pipeline.as_ref(), &metrics).await?;
    // With http.tls, HTTPS on http.listen and TLS on the gRPC listeners
    // (OTLP/gRPC, Flight SQL), one certificate, read again on SIGHUP (with
    // the TLS syslog listeners').
    let certificates = match &config.http.tls {
        Some(files) => Some(
            ingest::tls::Certificates::load(&files.cert_path, &files.key_path)
                .context("http.tls")?,
        ),
        None => None,
    };
    let acceptor = |alpn: &[&[u8]]| -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        let Some(certificates) = &certificates else {
            return Ok(None);
        };
        let server = certificates.server_config(alpn, None).context("http.tls")?;
        Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
    };
    let grpc_tls = acceptor(&[b"h2"])?;
    let ingest = match (role.ingests(), &bus.producer) {
        (true, Some(producer)) => Some(
            IngestRole::start(
                &config,
                &store,
                producer,
                &registry,
                grpc_tls.clone(),
                &grpc_connections,
            )
            .await?,
        ),
        _ => None,
    };
    let sinks = pipeline.as_ref().map_or(&[][..], |p| &p.sinks[..]);
    let ops = OpsState {
        registry: registry.clone(),
        health: health_checks(
            &store,
            sinks,
            bus.producer.as_ref(),
            &metrics,
            config.bus.capacity,
        )
        .into(),
    };
    let mut app = Router::new();
    if let Some(ingest) = &ingest {
        app = app.merge(ingest::http::router(ingest.state.clone()));
    }
    let mut flight_state = None;
    let api = if role.queries() {
        let (state, tasks) =
            start_api(&config, &store, lake, bus.producer.as_ref(), &registry, ops)?;
        flight_state = Some(state.clone());
        app = app.merge(query_api::router(state));
        Some(tasks)
    } else {
        app = app.merge(query_api::ops_router(ops));
        None
    };
    let app = app
        .method_not_allowed_fallback(query_api::method_not_allowed)
        .layer(middleware::from_fn(query_api::headers::security_headers));

    let tls = acceptor(&[b"h2", b"http/1.1"])?;
    reload_certificates_on_hangup()?;
    let listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding {}", config.http.listen))?;
    let addr = listener.local_addr()?;
    info!(%addr, ?role, data_dir = %config.data_dir.display(), "securenet serving");
    let closing = ingest
        .as_ref()
        .map(|i| (i.batcher.clone(), i.stop_listeners.clone()));
    let signal = shutdown_signal()?;
    let stop_flight = CancellationToken::new();
    let flight = match (flight_state, config.api.flight_sql.listen) {
        (Some(state), Some(listen)) => {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding api.flight_sql.listen {listen}"))?;
            let flight_addr = listener.local_addr()?;
            let service = query_api::flight_sql::FlightSql::new(state)?;
            let stop = stop_flight.clone();
            let open = grpc_connections.listener("flight_sql");
            info!(addr = %flight_addr, "Flight SQL serving");
            // Machine-readable, like the ready line below (which stays last).
            println!("securenet ready flight_sql={flight_addr}");
            Some(tokio::spawn(async move {
                let stopped = async move { stop.cancelled().await };
                let incoming = ingest::tls::grpc_incoming(listener, grpc_tls, open);
                if let Err(error) = query_api::flight_sql::serve(
                    ingest::tls::grpc_server(),
                    incoming,
                    service,
                    stopped,
                )
                .await
                {
                    tracing::error!(%error, "Flight SQL listener failed");
                }
            }))
        }
        _ => None,
    };
    // A machine-readable line for scripts and tests that bind port 0.
    println!("securenet ready http={addr}");
    let shutdown = async move {
        signal.await;
        info!("shutting down: flushing pending batches");
        if let Some((batcher, stop_listeners)) = closing {
            batcher.close().await;
            stop_listeners.cancel();
        }
    };
    let http_metrics = crate::http_server::HttpMetrics::new(&registry)?;
    crate::http_server::serve(
        listener,
        app,
        config.http.clone(),
        caps,
        tls,
        http_metrics,
        shutdown,
    )
    .await;

    // Stop, in this order: the API's background tasks (the router and its
    // meter handle are gone: the meter publishes what it holds before the
    // bus closes) → maintenance → the receivers and the batcher (every
    // accepted record is on the bus) → the bus (flushed, closed, the
    // consumer drained and committed) → the detector (every open window
    // closed and stored).
    stop_flight.cancel();
    if let Some(flight) = flight {
        let _ = flight.await;
    }
    if let Some(api) = api {
        api.stop().await;
    }
    if let Some(pipeline) = &mut pipeline {
        pipeline.stop_maintenance().await;
    }
    if let Some(ingest) = ingest {
        ingest.stop().await?;
    }
    bus.stop().await?;
    if let Some(pipeline) = pipeline {
        pipeline.finish().await;
    }
    info!("shutdown complete: every accepted record is written");
    Ok(())
}

/// The pipeline role's writers: the sinks, the streaming detector and the
/// maintenance loop (the bus that feeds them is [`Bus`]).
struct PipelineRole {
    sinks: Vec<Arc<dyn Sink>>,
    /// The streaming detector, its inline stage gated by plan, and the
    /// task keeping the plans current.
    detection: Option<(Detection, Arc<dyn consumer::Inline>, JoinHandle<()>)>,
    /// Every organization's Sigma rules (`pipeline.rules.enabled`), kept
    /// current by `rules_refresher`.
    rules: Option<Arc<pipeline::rules::RuleBook>>,
    rules_refresher: Option<JoinHandle<()>>,
    /// Country and AS of `logs.source_ip` (`pipeline.geoip`).
    geoip: Option<Arc<pipeline::geoip::GeoIp>>,
    /// Scheduled SQL alerts (`pipeline.alerts.enabled`).
    alerts: Option<JoinHandle<()>>,
    stop_detection: CancellationToken,
    maintenance: Option<(JoinHandle<()>, LeaseHandle)>,
    stop_maintenance: CancellationToken,
}

impl PipelineRole {
    async fn start(
        config: &Config,
        lake: &Lake,
        store: &Arc<MetaStore>,
        registry: &prometheus::Registry,
        metrics: &PipelineMetrics,
    ) -> anyhow::Result<Self> {
        let mut sinks: Vec<Arc<dyn Sink>> = vec![Arc::new(
            config
                .pipeline
                .parquet
                .build(lake.clone(), metrics.clone())?,
        )];
        let mut clickhouse = None;
        if config.pipeline.clickhouse.enabled() {
            let sink = Arc::new(
                ClickHouseSink::connect(&config.pipeline.clickhouse, metrics.clone())
                    .await
                    .context("connecting to ClickHouse")?,
            );
            sinks.push(sink.clone());
            clickhouse = Some(sink);
        }
        let stop_detection = CancellationToken::new();
        let geoip = pipeline::geoip::GeoIp::start(&config.pipeline.geoip, registry)
            .context("pipeline.geoip")?
            .map(Arc::new);
        let (rules, rules_refresher) = match config.pipeline.rules.enabled {
            true => {
                let rules = pipeline::rules::RuleBook::new(registry)?;
                let map = config
                    .pipeline
                    .rules
                    .field_map()
                    .context("pipeline.rules.fields or pipeline.rules.logsources")?;
                let operator = crate::rules::load_operator_rules(
                    config.pipeline.rules.rules_dir.as_deref(),
                    &map,
                )
                .context("loading pipeline.rules.rules_dir")?;
                sinks.push(Arc::new(crate::rules::NotifySink::new(
                    store.clone(),
                    &config.pipeline.rules,
                )?));
                let refresher = crate::rules::spawn_refresher(
                    store.clone(),
                    rules.clone(),
                    &config.pipeline.rules,
                    map,
                    operator,
                    stop_detection.clone(),
                );
                (Some(rules), Some(refresher))
            }
            false => (None, None),
        };
        let alerts = match config.pipeline.alerts.enabled {
            true => {
                // The same engine, sandbox and per-plan limits as POST /api/sql.
                let sql = SqlEngine::new(config.api.sql.clone(), lake.clone())
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .with_plans_from(store.clone());
                Some(crate::sql_alerts::spawn(
                    store.clone(),
                    Arc::new(sql),
                    sinks.clone(),
                    config.pipeline.alerts.clone(),
                    stop_detection.clone(),
                ))
            }
            false => None,
        };
        let detection = match config.pipeline.detection.enabled {
            true => {
                let detection = Detection::start(
                    config.pipeline.detection.clone(),
                    lake.clone(),
                    sinks.clone(),
                    registry,
                    crate::insights::detector_hook(store.clone()),
                    stop_detection.clone(),
                )
                .await
                .context("starting the detector")?;
                // ML detection is sold from the professional plan up: the
                // streaming models see only those organizations' batches.
                let plans = Arc::new(PlanBook::default());
                refresh_plans(store, &plans)
                    .await
                    .context("reading the organizations' plans")?;
                let gated: Arc<dyn consumer::Inline> = Arc::new(Gated::new(
                    detection.inline(),
                    plans.clone(),
                    schemas::Feature::MlDetection,
                    registry,
                )?);
                let refresher = spawn_plan_refresher(store.clone(), plans, stop_detection.clone());
                Some((detection, gated, refresher))
            }
            false => None,
        };
        let stop_maintenance = CancellationToken::new();
        let maintenance = config.pipeline.maintenance.enabled.then(|| {
            let maintenance = crate::maintain::build(config, lake.clone(), clickhouse);
            let lease = maintenance.lease();
            let task =
                crate::maintain::spawn_loop(maintenance, store.clone(), stop_maintenance.clone());
            (task, lease)
        });
        Ok(Self {
            sinks,
            detection,
            rules,
            rules_refresher,
            geoip,
            alerts,
            stop_detection,
            maintenance,
            stop_maintenance,
        })
    }

    /// Feeds the bus's batches through the detectors into the sinks.
    fn consume(
        &self,
        bus: impl pipeline::BusConsumer + 'static,
        config: &Config,
        metrics: &PipelineMetrics,
    ) -> JoinHandle<()> {
        tokio::spawn(consumer::run(
            bus,
            self.sinks.clone(),
            inline_detectors(
                self.geoip.as_ref(),
                self.detection.as_ref().map(|(_, gated, _)| gated),
                self.rules.as_ref(),
                config.pipeline.detection.windows.lateness_ms,
            ),
            config.pipeline.consumer.clone(),
            metrics.clone(),
        ))
    }

    /// A pass in progress is abandoned (every step is kill-safe) and the
    /// lease released for another process.
    async fn stop_maintenance(&mut self) {
        self.stop_maintenance.cancel();
        if let Some((task, lease)) = self.maintenance.take() {
            task.abort();
            let _ = task.await;
            lease.release().await;
        }
    }

    /// Last: close every open window and store what it yields.
    async fn finish(self) {
        self.stop_detection.cancel();
        if let Some((d, _, plans)) = self.detection {
            d.finish().await;
            let _ = plans.await;
        }
        if let Some(r) = self.rules_refresher {
            let _ = r.await;
        }
        if let Some(a) = self.alerts {
            let _ = a.await;
        }
    }
}

/// The bus: Kafka (a producer for the roles that publish, a consumer for
/// the pipeline) or, in `serve`, the embedded channel.
struct Bus {
    kafka: bool,
    producer: Option<Arc<dyn BusProducer>>,
    kafka_producer: Option<kafka::KafkaProducer>,
    consumer: Option<JoinHandle<()>>,
    stop_consumer: CancellationToken,
}

impl Bus {
    async fn start(
        role: Role,
        config: &Config,
        pipeline: Option<&PipelineRole>,
        metrics: &PipelineMetrics,
    ) -> anyhow::Result<Self> {
        let kafka = config.bus.kind == BusKind::Kafka;
        let stop_consumer = CancellationToken::new();
        if kafka {
            if role.ingests() || role.consumes() {
                kafka::ensure_topics(&config.bus.kafka)
                    .await
                    .context("creating Kafka topics")?;
            }
            // The query API publishes its request records (api_requests).
            let kafka_producer = (role.ingests() || role.queries())
                .then(|| kafka::KafkaProducer::new(&config.bus.kafka))
                .transpose()?;
            let consumer = match role.consumes() {
                true => Some(
                    pipeline
                        .context("only the pipeline role consumes")?
                        .consume(
                            kafka::KafkaConsumer::new(
                                &config.bus.kafka,
                                stop_consumer.clone(),
                                metrics.clone(),
                            )?,
                            config,
                            metrics,
                        ),
                ),
                false => None,
            };
            Ok(Self {
                kafka,
                producer: kafka_producer
                    .clone()
                    .map(|p| Arc::new(p) as Arc<dyn BusProducer>),
                kafka_producer,
                consumer,
                stop_consumer,
            })
        } else if role == Role::Serve {
            let (producer, bus) = embedded::channel(config.bus.capacity);
            Ok(Self {
                kafka,
                producer: Some(Arc::new(producer)),
                kafka_producer: None,
                consumer: Some(
                    pipeline
                        .context("serve runs the pipeline")?
                        .consume(bus, config, metrics),
                ),
                stop_consumer,
            })
        } else {
            Ok(Self {
                kafka,
                producer: None,
                kafka_producer: None,
                consumer: None,
                stop_consumer,
            })
        }
    }

    /// Everything published reaches the broker (or the channel closes),
    /// then the consumer drains and commits.
    async fn stop(self) -> anyhow::Result<()> {
        if let Some(p) = &self.kafka_producer {
            p.flush(std::time::Duration::from_secs(30))
                .context("flushing the Kafka producer")?;
        }
        drop(self.producer);
        // With Kafka the consumer stops on request (the topic never
        // "closes"); embedded, it ends when the last producer is gone.
        if self.kafka {
            self.stop_consumer.cancel();
        }
        if let Some(task) = self.consumer {
            task.await.context("consumer task")?;
        }
        Ok(())
    }
}

/// The ingest role: the batcher and the receivers (syslog listeners here,
/// HTTP routes merged into the shared router).
struct IngestRole {
    batcher: Batcher,
    batcher_task: JoinHandle<()>,
    state: IngestState,
    listeners: JoinSet<()>,
    stop_listeners: CancellationToken,
}

impl IngestRole {
    async fn start(
        config: &Config,
        store: &Arc<MetaStore>,
        producer: &Arc<dyn BusProducer>,
        registry: &prometheus::Registry,
        grpc_tls: Option<tokio_rustls::TlsAcceptor>,
        grpc_connections: &GrpcConnections,
    ) -> anyhow::Result<Self> {
        let ingest_metrics = ingest::IngestMetrics::new(registry)?;
        let (batcher, batcher_task) = Batcher::start(
            config.ingest.batch.clone(),
            producer.clone(),
            ingest_metrics.clone(),
        )?;
        // Syslog listeners: bound before the ready line so it can list them.
        let stop_listeners = CancellationToken::new();
        let mut listeners = JoinSet::new();
        let syslog_metrics = SyslogMetrics::new(registry)?;
        for listener in &config.ingest.syslog {
            let server = SyslogServer::build(
                listener.clone(),
                store.clone(),
                batcher.clone(),
                syslog_metrics.clone(),
                ingest_metrics.clone(),
            )
            .await?;
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
        if let Some(listen) = config.ingest.otlp.grpc_listen {
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding ingest.otlp.grpc_listen {listen}"))?;
            let addr = listener.local_addr()?;
            info!(%addr, "OTLP/gRPC listening");
            println!("securenet ready otlp_grpc={addr}");
            let stop = stop_listeners.clone();
            let stopped = async move { stop.cancelled().await };
            let state = state.clone();
            let open = grpc_connections.listener("otlp_grpc");
            listeners.spawn(async move {
                if let Err(error) =
                    ingest::otlp::grpc::serve(listener, grpc_tls, open, state, stopped).await
                {
                    tracing::error!(%error, "OTLP/gRPC listener failed");
                }
            });
        }
        Ok(Self {
            batcher,
            batcher_task,
            state,
            listeners,
            stop_listeners,
        })
    }

    /// The listeners end, then the batcher publishes what it holds.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_listeners.cancel();
        while self.listeners.join_next().await.is_some() {}
        drop((self.batcher, self.state));
        self.batcher_task.await.context("batcher task")
    }
}

/// The query API's background tasks: request metering, notification
/// delivery, the stale training-session sweeper.
struct ApiTasks {
    stop: CancellationToken,
    notify: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    meter: Option<JoinHandle<()>>,
    invoices: Option<JoinHandle<()>>,
    stripe: Option<JoinHandle<()>>,
}

impl ApiTasks {
    async fn stop(self) {
        self.stop.cancel();
        let _ = self.notify.await;
        let _ = self.sweeper.await;
        if let Some(task) = self.invoices {
            let _ = task.await;
        }
        if let Some(task) = self.stripe {
            let _ = task.await;
        }
        if let Some(task) = self.meter {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
        }
    }
}

/// The query API's state and its background tasks.
fn start_api(
    config: &Config,
    store: &Arc<MetaStore>,
    lake: Lake,
    producer: Option<&Arc<dyn BusProducer>>,
    registry: &prometheus::Registry,
    ops: OpsState,
) -> anyhow::Result<(AppState, ApiTasks)> {
    let (meter, meter_task) = match producer {
        Some(p) => {
            let (meter, task) = query_api::metering::ApiMeter::start(
                p.clone(),
                std::time::Duration::from_secs(1),
                registry,
            )?;
            (Some(meter), Some(task))
        }
        None => {
            tracing::warn!("no bus: API requests are not metered (api_requests usage stays 0)");
            (None, None)
        }
    };
    let notifier = Arc::new(query_api::notify::Notifier::new(
        config.api.notify.clone(),
        registry,
    )?);
    let stop = CancellationToken::new();
    let mut tasks = ApiTasks {
        notify: query_api::notify::spawn_dispatcher(store.clone(), notifier.clone(), stop.clone()),
        sweeper: query_api::insights::spawn_stale_session_sweeper(store.clone(), stop.clone()),
        meter: meter_task,
        invoices: None,
        stripe: None,
        stop,
    };
    let stripe = query_api::stripe_out::StripeOut::new(&config.api.stripe)?;
    if let Some(out) = &stripe {
        tasks.stripe = Some(query_api::stripe_out::spawn_dispatcher(
            out.clone(),
            store.clone(),
            tasks.stop.clone(),
        ));
    }
    let state = AppState {
        store: store.clone(),
        insights: Arc::new(query_api::insights::Insights::new(
            lake.clone(),
            config.api.training.clone(),
        )),
        sign_in: Arc::new(query_api::signin::SignInGuard::new(&config.api)),
        openapi: Arc::new(query_api::openapi::build(&ingest::http::route_docs())),
        sql: {
            let sql = SqlEngine::new(config.api.sql.clone(), lake)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .with_plans_from(store.clone());
            sql.register_metrics(registry)?;
            Arc::new(sql)
        },
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
            .transpose()?,
        billing: Arc::new(query_api::billing::Billing {
            stripe_secret: config.api.stripe_webhook_secret.clone(),
            tolerance_secs: control::signature::DEFAULT_TOLERANCE_SECS,
            stripe,
        }),
        system: Default::default(),
        llm: config.api.llm.clone().map(Arc::new),
        notify: notifier,
        detections: {
            let map = config
                .pipeline
                .rules
                .field_map()
                .context("pipeline.rules.fields or pipeline.rules.logsources")?;
            Arc::new(query_api::detections::Detections {
                config: config.api.detections.clone(),
                operator: crate::rules::load_operator_rules(
                    config.pipeline.rules.rules_dir.as_deref(),
                    &map,
                )
                .context("loading pipeline.rules.rules_dir")?,
                map,
            })
        },
        data_dir: config.data_dir.clone(),
        ops,
    };
    // Every API replica runs it: each invoice is issued once whoever wins.
    tasks.invoices = Some(query_api::billing::spawn_finalizer(
        state.clone(),
        config.api.invoice_grace_hours,
        tasks.stop.clone(),
    ));
    Ok((state, tasks))
}

/// Detectors every batch goes through before it is written: usage counting
/// and, when on, Sigma rules (what they derive is stored and acknowledged
/// with the batch) and the streaming detector's feature windows.
/// How often a pipeline reads every organization's plan: a plan change
/// reaches its gated stages (ML detection) within this long.
const PLAN_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

async fn refresh_plans(store: &MetaStore, plans: &PlanBook) -> anyhow::Result<()> {
    let orgs = store.list_organizations().await?;
    plans.replace(orgs.into_iter().map(|o| (o.id, o.plan)).collect());
    Ok(())
}

/// Re-reads the plans every [`PLAN_REFRESH`], and at once (at most every
/// 200 ms) when a batch of an organization it does not know arrives, until
/// `stop`; a failed read keeps the plans known (and is logged).
fn spawn_plan_refresher(
    store: Arc<MetaStore>,
    plans: Arc<PlanBook>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PLAN_REFRESH) => {}
                _ = plans.unknown_seen() => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
            if let Err(error) = refresh_plans(&store, &plans).await {
                tracing::warn!(%error, "plans not refreshed; the last ones known stay in force");
            }
        }
    })
}

fn inline_detectors(
    geoip: Option<&Arc<pipeline::geoip::GeoIp>>,
    detection: Option<&Arc<dyn consumer::Inline>>,
    rules: Option<&Arc<pipeline::rules::RuleBook>>,
    lateness_ms: i64,
) -> consumer::InlineDetectors {
    let usage: Arc<dyn consumer::Inline> =
        Arc::new(std::sync::Mutex::new(detectors::usage::UsageCounter));
    // GeoIP first: it fills columns every later stage (and sink) sees.
    let mut all: Vec<Arc<dyn consumer::Inline>> = geoip
        .map(|g| g.clone() as Arc<dyn consumer::Inline>)
        .into_iter()
        .collect();
    all.push(usage);
    if let Some(rules) = rules {
        all.push(Arc::new(rules.stage(lateness_ms)));
    }
    all.extend(detection.cloned());
    all.into()
}

async fn announce_default_key(store: &MetaStore, config: &Config) -> anyhow::Result<()> {
    let plan = config.control.default_plan.parse()?;
    let issued = store
        .ensure_default_org(
            plan,
            config
                .control
                .default_api_key
                .as_ref()
                .map(schemas::Secret::expose),
        )
        .await?;
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
                        .await
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
/// SIGHUP reloads every TLS certificate of the process (HTTP and the TLS
/// log listeners) from its files; open connections keep their sessions. A
/// file that cannot be loaded keeps its listener on the certificate it had.
/// (Without a handler SIGHUP would end the process.)
fn reload_certificates_on_hangup() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            for (cert, result) in ingest::tls::reload_all() {
                match result {
                    Ok(()) => info!(cert = %cert.display(), "TLS certificate reloaded"),
                    Err(error) => tracing::warn!(
                        cert = %cert.display(),
                        %error,
                        "TLS certificate not reloaded; the previous one stays in use"
                    ),
                }
            }
        }
    });
    Ok(())
}

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

/// The gRPC listeners' connections in the metrics, by listener
/// (`flight_sql`, `otlp_grpc`), as the HTTP listener's are.
#[derive(Clone)]
struct GrpcConnections {
    caps: ingest::conn_caps::ConnectionCaps,
    open: prometheus::IntGaugeVec,
    refused: prometheus::IntCounterVec,
}

impl GrpcConnections {
    fn new(
        registry: &prometheus::Registry,
        caps: ingest::conn_caps::ConnectionCaps,
    ) -> prometheus::Result<Self> {
        let open = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "securenet_grpc_connections",
                "Open connections of a gRPC listener",
            ),
            &["listener"],
        )?;
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "securenet_grpc_connections_refused_total",
                "gRPC connections closed at accept, by listener and the cap they hit",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self {
            caps,
            open,
            refused,
        })
    }

    /// `listener`'s connections under the HTTP listener's caps
    /// (`http.max_connections`, `http.max_connections_per_ip`), counted on
    /// their own.
    fn listener(&self, listener: &str) -> Arc<ingest::conn_caps::OpenConnections> {
        use ingest::conn_caps::{ConnectionMetrics, OpenConnections, Refusal};
        let metrics = ConnectionMetrics {
            open: self.open.with_label_values(&[listener]),
            refused: Refusal::ALL.map(|r| self.refused.with_label_values(&[listener, r.as_str()])),
        };
        OpenConnections::new(self.caps, Some(metrics))
    }
}
