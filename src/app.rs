//! Assembling and running the service: shared state, listeners, background work and an orderly
//! shutdown (stop accepting → drain requests → stop background work → close the store).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::crypto::Keys;
use crate::http::server::{self, ServeOptions};
use crate::incident::{Clock, Incidents, Mode, ModeHandle, SurgeDetector};
use crate::intake::{Batcher, BatcherOptions, Intake};
use crate::notify::Dispatcher;
use crate::ratelimit::{Limiters, Profile};
use crate::store::{self, DynStore};
use crate::subscribe::{DeliveryCounts, FanoutWorker};
use crate::wakeup::Wakeups;
use crate::web::Web;

/// What every handler can reach: one shared allocation, so the clone axum makes for each
/// extractor and middleware is one reference count, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub config: Arc<Config>,
    pub store: DynStore,
    pub keys: Arc<Keys>,
    pub intake: Intake,
    pub limiters: Limiters,
    /// Where incident logic (and anything else that must be testable in time) reads the time.
    pub clock: Clock,
    /// `normal` or `incident`; read it on each use, or subscribe to switches.
    pub mode: ModeHandle,
    /// Intake reports accepted reports here (`record_accepted`) for surge detection.
    pub surge: SurgeDetector,
    /// Incident commands, cached public reads and the incident-mode evaluation.
    pub incidents: Arc<Incidents>,
    /// The public pages' rendered-page caches.
    pub web: Arc<Web>,
    /// Fan-out delivery progress for staff, counted at most once per cache lifetime.
    pub delivery: DeliveryCounts,
    /// Nudges the fan-out worker and the dispatcher when this process commits work for them.
    pub wakeups: Wakeups,
}

impl Shared {
    /// Why the service should not get traffic right now, beyond the store check.
    pub fn readiness_problems(&self) -> Vec<&'static str> {
        let batcher = self.intake.batcher();
        // Nearly full: a load balancer should send new people elsewhere.
        let saturated = batcher.depth() * 10 >= batcher.capacity() * 9;
        if saturated {
            vec!["intake_saturated"]
        } else {
            Vec::new()
        }
    }
}

/// A built service, listeners bound, ready to run.
pub struct App {
    state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    background: TaskTracker,
    background_shutdown: CancellationToken,
    /// Delivers the outbox; `None` when `notify.dispatcher.enabled` is off.
    dispatcher: Option<Arc<Dispatcher>>,
}

impl App {
    /// Open the store (migrating it if configured), derive keys, bind the listeners. Port 0
    /// binds a free port; [`App::local_addr`] tells which.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Clock::System).await
    }

    /// As [`App::build`], reading the time from `clock` (tests pass a manual clock).
    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let keys = config.security.keys()?;
        let store = store::connect(&config.database).await?;
        if config.database.migrate_on_start {
            store
                .migrate()
                .await
                .context("preparing the database (is it reachable?)")?;
        }
        let listener = server::bind(config.http.listen).await?;
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(server::bind(addr).await?),
            None => None,
        };
        // Install the recorder before any request or task records a metric.
        crate::telemetry::metrics_handle();
        let background = TaskTracker::new();
        let background_shutdown = CancellationToken::new();
        let keys = Arc::new(keys);
        let wakeups = Wakeups::default();
        let incidents = Arc::new(Incidents::new(
            store.clone(),
            clock.clone(),
            &config,
            wakeups.fanout.clone(),
        ));
        let writers = match store.backend() {
            "sqlite" => 1,
            _ => config.intake.postgres_writers,
        };
        let dispatcher = if config.notify.dispatcher.enabled {
            Some(Arc::new(
                Dispatcher::new(
                    &config.notify,
                    &config.http.public_base_url,
                    Arc::clone(&store),
                    Arc::clone(&keys),
                    clock.clone(),
                )?
                .with_wakeup(wakeups.outbox.clone()),
            ))
        } else {
            None
        };
        let surge = incidents.surge().clone();
        let batcher = Batcher::start(
            Arc::clone(&store),
            BatcherOptions {
                queue_capacity: config.intake.queue_capacity,
                batch_max: config.intake.batch_max,
                batch_wait: std::time::Duration::from_millis(config.intake.batch_wait_ms),
                writers,
                max_queue_delay: std::time::Duration::from_millis(config.intake.max_queue_delay_ms),
            },
            Some(Arc::new(move |n| surge.record_accepted(n as u64))),
            dispatcher.as_ref().map(|d| d.handover()),
            &background,
            background_shutdown.clone(),
        );
        let intake = Intake::new(
            &config.intake,
            batcher,
            Arc::clone(&store),
            Arc::clone(&keys),
        );
        let limiters = Limiters::new(&config.rate_limits)?;
        background.spawn(limiters.clone().run_pruner(background_shutdown.clone()));
        let web = Arc::new(Web::new(&config, incidents.mode()));
        let delivery = DeliveryCounts::new(config.fanout.progress_cache());
        let state = AppState(Arc::new(Shared {
            delivery,
            wakeups,
            config: Arc::new(config),
            store,
            keys,
            intake,
            limiters,
            clock,
            mode: incidents.mode().clone(),
            surge: incidents.surge().clone(),
            incidents,
            web,
        }));
        Ok(Self {
            state,
            listener,
            metrics_listener,
            background,
            background_shutdown,
            dispatcher,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.state.config.http.listen)
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serve until `shutdown` completes, then drain within `http.shutdown_grace_ms`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Self {
            state,
            listener,
            metrics_listener,
            background,
            background_shutdown,
            dispatcher,
        } = self;
        let http = &state.config.http;
        let options = ServeOptions {
            header_read_timeout: http.header_read_timeout(),
            max_connections: http.max_connections,
            grace: http.shutdown_grace(),
        };
        background.spawn(Arc::clone(&state.incidents).run(background_shutdown.child_token()));
        if let Some(dispatcher) = dispatcher {
            background.spawn(dispatcher.run(background_shutdown.child_token()));
        }
        background.spawn(follow_mode(
            state.clone(),
            background_shutdown.child_token(),
        ));
        if state.config.fanout.enabled {
            background.spawn(
                FanoutWorker::new(
                    Arc::clone(&state.store),
                    state.clock.clone(),
                    &state.config.fanout,
                    &state.config.subscriptions,
                )
                .with_wakeups(&state.wakeups)
                .run(background_shutdown.child_token()),
            );
        }

        let stop_http = CancellationToken::new();
        let public = tokio::spawn(server::serve(
            listener,
            crate::http::router(state.clone()),
            options,
            stop_http.clone(),
        ));
        let scrape = metrics_listener.map(|l| {
            let router: Router = crate::http::ops::metrics_router();
            tokio::spawn(server::serve(l, router, options, stop_http.clone()))
        });

        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        stop_http.cancel();
        let drained = public.await.unwrap_or(false);
        if let Some(task) = scrape {
            drop(task.await);
        }

        background_shutdown.cancel();
        background.close();
        if tokio::time::timeout(options.grace, background.wait())
            .await
            .is_err()
        {
            tracing::warn!("background work did not finish within the grace period");
        }
        state.store.close().await;
        tracing::info!(drained, "stopped");
        Ok(())
    }
}

/// Carry every switch of the incident mode to the parts that do not read it on each use: the
/// rate-limit profile and how long the intake batcher waits for company. (Read caches and the
/// report form read the mode themselves.)
async fn follow_mode(state: AppState, shutdown: CancellationToken) {
    let mut changes = state.mode.subscribe();
    loop {
        let mode = *changes.borrow_and_update();
        let (profile, wait_ms) = match mode {
            Mode::Normal => (Profile::Normal, state.config.intake.batch_wait_ms),
            Mode::Incident => (
                Profile::Incident,
                state.config.intake.incident_batch_wait_ms,
            ),
        };
        state.limiters.set_profile(profile);
        state
            .intake
            .batcher()
            .set_batch_wait(std::time::Duration::from_millis(wait_ms));
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            () = shutdown.cancelled() => break,
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
