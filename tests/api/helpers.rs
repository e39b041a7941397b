//! Spawning the service and its databases for tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use reliefline::store::DynStore;
use reliefline::{App, Config};
use secrecy::SecretString;
use sqlx::Connection as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Admin URL of the PostgreSQL server the tests create their databases on.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Whether PostgreSQL is required (CI) rather than optional (a laptop without it).
fn postgres_required() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false")
}

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test, dropped (PostgreSQL) or deleted (SQLite) afterwards.
pub struct TestDb {
    pub url: String,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    /// A database for `backend`, or `None` (with a visible notice) when PostgreSQL is not
    /// reachable outside CI. In CI an unreachable PostgreSQL fails the test.
    pub async fn new(backend: Backend) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Some(Self {
                url: format!("sqlite://{}", dir.path().join("reliefline.db").display()),
                dir,
                pg_name: None,
            }),
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(conn) => conn,
                    Err(e) if postgres_required() => panic!(
                        "PostgreSQL is required in CI but {admin} is unreachable: {e}. \
                         Start it or set TEST_POSTGRES_URL."
                    ),
                    Err(e) => {
                        eprintln!(
                            "NOTICE: PostgreSQL test SKIPPED — {admin} unreachable ({e}); \
                             set TEST_POSTGRES_URL or start PostgreSQL to run it"
                        );
                        return None;
                    }
                };
                let name = format!("reliefline_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Some(Self {
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                })
            }
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async; use a short-lived runtime on another thread.
        let admin = postgres_admin_url();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    drop(
                        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await,
                    );
                }
            });
        });
        drop(handle.join());
    }
}

/// The configuration tests start from: free ports, the given database, a fixed key.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::defaults().expect("defaults");
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    config.http.shutdown_grace_ms = 5_000;
    config.database.url = SecretString::from(db.url.clone());
    config.database.max_connections = 4;
    config.security.master_key = SecretString::from("11".repeat(32));
    config.security.key_file = db.dir().join("master.key");
    config
}

/// The service running in this process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub store: DynStore,
    pub client: reqwest::Client,
    pub db: Arc<TestDb>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Option<Self> {
        let db = TestDb::new(backend).await?;
        Some(Self::spawn_with(Arc::new(db), |_| {}).await)
    }

    /// Start on an existing database (e.g. again after a stop), adjusting the config first.
    pub async fn spawn_with(db: Arc<TestDb>, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(&db);
        adjust(&mut config);
        let app = App::build(config).await.expect("app builds");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let store = app.state().store.clone();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let task = tokio::spawn(app.run(async move { signal.cancelled().await }));
        Self {
            addr,
            metrics_addr,
            store,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            db,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop, as on SIGTERM; waits until the service has exited.
    pub async fn stop(mut self) -> Arc<TestDb> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("app ran cleanly");
        }
        Arc::clone(&self.db)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Define `sqlite` and `postgres` variants of an async test taking a [`Backend`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await;
            }
        }
    )+};
}
