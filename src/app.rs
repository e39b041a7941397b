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
use crate::intake::{Batcher, BatcherOptions, Intake};
use crate::ratelimit::Limiters;
use crate::store::{self, DynStore};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: DynStore,
    pub keys: Arc<Keys>,
    pub intake: Intake,
    pub limiters: Limiters,
}

impl AppState {
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
}

impl App {
    /// Open the store (migrating it if configured), derive keys, bind the listeners. Port 0
    /// binds a free port; [`App::local_addr`] tells which.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
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
        let writers = match store.backend() {
            "sqlite" => 1,
            _ => config.intake.postgres_writers,
        };
        let batcher = Batcher::start(
            Arc::clone(&store),
            BatcherOptions {
                queue_capacity: config.intake.queue_capacity,
                batch_max: config.intake.batch_max,
                batch_wait: std::time::Duration::from_millis(config.intake.batch_wait_ms),
                writers,
            },
            None,
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
        let state = AppState {
            config: Arc::new(config),
            store,
            keys,
            intake,
            limiters,
        };
        Ok(Self {
            state,
            listener,
            metrics_listener,
            background,
            background_shutdown,
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
        } = self;
        let http = &state.config.http;
        let options = ServeOptions {
            header_read_timeout: http.header_read_timeout(),
            max_connections: http.max_connections,
            grace: http.shutdown_grace(),
        };
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
