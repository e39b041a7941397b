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
    // Notifications spool next to the test database, not into the working directory.
    config.notify.email.spool_dir = db.dir().join("spool/email");
    config.notify.sms.spool_path = db.dir().join("spool/sms.jsonl");
    // Tests read delivery progress right after changing it; the one about its cache sets it.
    config.fanout.progress_cache_ms = 0;
    // Tests send many requests from one address; those about rate limits turn them back on.
    for profile in [
        &mut config.rate_limits.normal,
        &mut config.rate_limits.incident,
    ] {
        for limit in [
            &mut profile.report_ip,
            &mut profile.lookup_ip,
            &mut profile.lookup_receipt,
            &mut profile.subscribe_ip,
            &mut profile.admission,
        ] {
            limit.per_minute = 0.0;
        }
    }
    config
}

/// The service running in this process.
pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub store: DynStore,
    /// The running service's shared state, for looking behind the HTTP surface.
    pub state: reliefline::AppState,
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
        let state = app.state().clone();
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let task = tokio::spawn(app.run(async move { signal.cancelled().await }));
        Self {
            addr,
            metrics_addr,
            store,
            state,
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

    /// The JSON answer to `GET path` as staff with bearer `token`.
    pub async fn get_json_as(&self, path: &str, token: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The OpenAPI document the service serves.
    pub async fn openapi(&self) -> serde_json::Value {
        let r = self
            .client
            .get(self.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        r.json().await.unwrap()
    }

    /// The Prometheus text from the metrics listener.
    pub async fn metrics_text(&self) -> String {
        let addr = self.metrics_addr.expect("metrics listener");
        self.client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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

/// The real binary, run as a separate process on a test database.
pub struct ServiceProcess {
    pub addr: SocketAddr,
    child: std::process::Child,
    output: Arc<std::sync::Mutex<String>>,
}

impl ServiceProcess {
    /// Start `reliefline serve` with the test configuration of `db` plus `env`, and wait until
    /// it says where it listens.
    pub fn start(db: &TestDb, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead as _;
        use std::process::{Command, Stdio};
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reliefline"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RELIEFLINE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RELIEFLINE_HTTP__LISTEN", "127.0.0.1:0")
            .env("RELIEFLINE_METRICS__LISTEN", "127.0.0.1:0")
            .env("RELIEFLINE_DATABASE__URL", &db.url)
            .env("RELIEFLINE_SECURITY__MASTER_KEY", "11".repeat(32))
            .env(
                "RELIEFLINE_NOTIFY__EMAIL__SPOOL_DIR",
                db.dir().join("spool/email"),
            )
            .env(
                "RELIEFLINE_NOTIFY__SMS__SPOOL_PATH",
                db.dir().join("spool/sms.jsonl"),
            )
            .env("RELIEFLINE_LOG__FORMAT", "json")
            .env("RELIEFLINE_LOG__LEVEL", "info")
            .env("RELIEFLINE_RATE_LIMITS__NORMAL__REPORT_IP__PER_MINUTE", "0")
            .env("RELIEFLINE_RATE_LIMITS__NORMAL__ADMISSION__PER_MINUTE", "0")
            .envs(env.iter().copied())
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start reliefline");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let output = Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = listening_address(&line) {
                    tx.send(addr).ok();
                }
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("reliefline did not start: {}", output.lock().unwrap()));
        Self {
            addr,
            child,
            output,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then wait for the exit status; also returns everything the process printed.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        // Give the reader threads a moment to take the last lines.
        std::thread::sleep(std::time::Duration::from_millis(100));
        (exit, self.output.lock().unwrap().clone())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
    }
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    let start = line.find("listening on http://")? + "listening on http://".len();
    let rest = &line[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A valid report as the public API expects it.
pub fn sample_report() -> serde_json::Value {
    serde_json::json!({
        "provider": "Kakao",
        "service": "KakaoTalk",
        "reporter_type": "merchant",
        "harm_type": "business_loss",
        "occurred_at": "2022-10-15T15:30:00+09:00",
        "amount_krw": 250000,
        "title": "주문 알림이 오지 않음",
        "description": "카카오톡 채널로 받던 주문 알림이 멈춰 주말 매출을 잃었습니다.",
        "reporter": {"name": "홍길동", "phone": "010-1234-5678", "email": "hong@example.kr"},
        "notify": {"sms": true, "email": false},
        "consent": {"personal_info": true}
    })
}
