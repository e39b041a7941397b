//! Configuration: embedded defaults → optional file → `RELIEFLINE_*` environment variables.
//!
//! Loading validates every value; a problem is reported as one line naming the key, so an
//! operator can fix it without reading a stack trace. Secrets are wrapped so that neither
//! `Debug` nor logs reveal them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::util::nest;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::crypto::Keys;
use crate::notify::NotifyConfig;
use crate::ratelimit::RateLimitConfig;
use crate::subscribe::{FanoutConfig, SubscriptionsConfig};

/// The commented defaults shipped inside the binary.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "RELIEFLINE_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub database: DatabaseConfig,
    pub intake: IntakeConfig,
    pub security: SecurityConfig,
    pub admin: AdminConfig,
    pub incident: IncidentConfig,
    pub log: LogConfig,
    pub rate_limits: RateLimitConfig,
    pub subscriptions: SubscriptionsConfig,
    pub fanout: FanoutConfig,
    pub notify: NotifyConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub public_base_url: String,
    pub request_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub shutdown_grace_ms: u64,
}

impl HttpConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Own listener for `/metrics`; `None` serves it on the public listener.
    #[serde(deserialize_with = "optional_socket_addr")]
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// May carry a password, so it is kept secret and shown masked.
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
    pub busy_timeout_ms: u64,
    /// SQLite: the background checkpoint interval; 0 = SQLite's own, inside commits.
    pub sqlite_checkpoint_ms: u64,
    pub migrate_on_start: bool,
}

impl DatabaseConfig {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
    pub fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }
    /// `None`: SQLite checkpoints inside the commits, as it does by default.
    pub fn sqlite_checkpoint(&self) -> Option<Duration> {
        (self.sqlite_checkpoint_ms > 0).then(|| Duration::from_millis(self.sqlite_checkpoint_ms))
    }

    /// Which backend the URL selects. Validated at load time, so this cannot fail afterwards.
    pub fn target(&self) -> DatabaseTarget {
        DatabaseTarget::parse(self.url.expose_secret()).unwrap_or(DatabaseTarget::Sqlite {
            path: PathBuf::from("data/reliefline.db"),
        })
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &mask_url_password(self.url.expose_secret()))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("busy_timeout_ms", &self.busy_timeout_ms)
            .field("sqlite_checkpoint_ms", &self.sqlite_checkpoint_ms)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// The store a `database.url` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    Sqlite { path: PathBuf },
    Postgres,
}

impl DatabaseTarget {
    fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(
                    "sqlite URL needs a file path, e.g. sqlite://data/reliefline.db".into(),
                );
            }
            if path == ":memory:" {
                return Err("an in-memory SQLite database would lose acknowledged reports".into());
            }
            Ok(Self::Sqlite {
                path: PathBuf::from(path),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err("expected sqlite://PATH or postgres://…".into())
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub batch_wait_ms: u64,
    pub incident_batch_wait_ms: u64,
    pub postgres_writers: usize,
    pub max_queue_delay_ms: u64,
    pub idempotency_cache_entries: u64,
    pub idempotency_cache_ttl_secs: u64,
    pub overload_retry_after_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// Empty means "use `key_file`".
    pub master_key: SecretString,
    pub key_file: PathBuf,
}

impl SecurityConfig {
    /// The contact-protection keys: from `master_key` when set, else from the key file.
    pub fn keys(&self) -> anyhow::Result<Keys> {
        let configured = self.master_key.expose_secret().trim();
        if configured.is_empty() {
            Keys::load_or_create_file(&self.key_file)
        } else {
            Keys::from_hex(configured).map_err(|why| anyhow::anyhow!("security.master_key: {why}"))
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token for incident commands until staff accounts exist. Empty disables them.
    pub token: SecretString,
}

impl AdminConfig {
    /// The token, or `None` when commands are disabled.
    pub fn token(&self) -> Option<&str> {
        Some(self.token.expose_secret().trim()).filter(|t| !t.is_empty())
    }
}

/// Shortest `admin.token` accepted: a guessable token would hand out the commander's powers.
pub const ADMIN_TOKEN_MIN_LEN: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentConfig {
    /// Accepted reports per minute above which a surge is suspected; 0 turns detection off.
    pub surge_threshold_per_minute: u32,
    pub surge_window_secs: u64,
    pub hold_down_secs: u64,
    pub evaluate_interval_ms: u64,
    pub read_cache_ttl_ms: u64,
    pub read_cache_ttl_incident_ms: u64,
}

impl IncidentConfig {
    pub fn surge_window(&self) -> Duration {
        Duration::from_secs(self.surge_window_secs)
    }
    pub fn hold_down(&self) -> Duration {
        Duration::from_secs(self.hold_down_secs)
    }
    pub fn evaluate_interval(&self) -> Duration {
        Duration::from_millis(self.evaluate_interval_ms)
    }
    pub fn read_cache_ttl(&self) -> Duration {
        Duration::from_millis(self.read_cache_ttl_ms)
    }
    pub fn read_cache_ttl_incident(&self) -> Duration {
        Duration::from_millis(self.read_cache_ttl_incident_ms)
    }
}

/// Longest surge window: the detector keeps one counter per second of it.
pub const MAX_SURGE_WINDOW_SECS: u64 = 3600;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// A configuration problem, rendered as one line that names the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Load defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed(ENV_PREFIX).split("__"))
    }

    /// The defaults alone; tests start from here and change fields directly.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::from_figment(&Figment::from(Toml::string(DEFAULTS)))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "--config {}: no such file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        Self::from_figment(&figment.merge(Environment::new(env)?))
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(|e| describe_figment_error(&e))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.http.request_timeout_ms == 0 {
            return bad("http.request_timeout_ms", "must be greater than 0");
        }
        if self.http.header_read_timeout_ms == 0 {
            return bad("http.header_read_timeout_ms", "must be greater than 0");
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.max_connections == 0 {
            return bad("http.max_connections", "must be greater than 0");
        }
        if !(self.http.public_base_url.starts_with("http://")
            || self.http.public_base_url.starts_with("https://"))
        {
            return bad(
                "http.public_base_url",
                "must start with http:// or https://",
            );
        }
        if self.metrics.listen == Some(self.http.listen) && self.http.listen.port() != 0 {
            return bad(
                "metrics.listen",
                "must differ from http.listen (leave it empty to serve /metrics there)",
            );
        }
        if let Err(why) = DatabaseTarget::parse(self.database.url.expose_secret()) {
            return bad("database.url", &why);
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be greater than 0");
        }
        let intake = &self.intake;
        for (key, value) in [
            ("intake.queue_capacity", intake.queue_capacity),
            ("intake.batch_max", intake.batch_max),
            ("intake.postgres_writers", intake.postgres_writers),
        ] {
            if value == 0 {
                return bad(key, "must be greater than 0");
            }
        }
        if intake.batch_max > 10_000 {
            return bad("intake.batch_max", "must be at most 10000");
        }
        if self.database.sqlite_checkpoint_ms > 60_000 {
            return bad("database.sqlite_checkpoint_ms", "must be at most 60000");
        }
        if intake.max_queue_delay_ms > 60_000 {
            return bad("intake.max_queue_delay_ms", "must be at most 60000");
        }
        if intake.batch_wait_ms > 1_000 || intake.incident_batch_wait_ms > 1_000 {
            return bad(
                "intake.batch_wait_ms",
                "batch waits must be at most 1000 ms",
            );
        }
        let master_key = self.security.master_key.expose_secret().trim();
        if let (false, Err(why)) = (master_key.is_empty(), Keys::from_hex(master_key)) {
            return bad("security.master_key", &why);
        }
        if self
            .admin
            .token()
            .is_some_and(|t| t.chars().count() < ADMIN_TOKEN_MIN_LEN)
        {
            return bad(
                "admin.token",
                &format!(
                    "must be at least {ADMIN_TOKEN_MIN_LEN} characters (or empty to disable \
                     incident commands)"
                ),
            );
        }
        self.validate_incident()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return bad("log.level", &format!("not a valid filter ({e})"));
        }
        self.rate_limits
            .validate()
            .map_err(|e| ConfigError(e.to_string()))?;
        self.subscriptions.validate().map_err(ConfigError)?;
        self.fanout.validate().map_err(ConfigError)?;
        self.notify.validate().map_err(ConfigError)?;
        Ok(())
    }
}

impl Config {
    fn validate_incident(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: String| Err(ConfigError(format!("incident.{key}: {why}")));
        let i = &self.incident;
        if !(10..=MAX_SURGE_WINDOW_SECS).contains(&i.surge_window_secs) {
            return bad(
                "surge_window_secs",
                format!("must be between 10 and {MAX_SURGE_WINDOW_SECS}"),
            );
        }
        if i.evaluate_interval_ms == 0 {
            return bad("evaluate_interval_ms", "must be greater than 0".into());
        }
        if i.read_cache_ttl_ms == 0 {
            return bad("read_cache_ttl_ms", "must be greater than 0".into());
        }
        if i.read_cache_ttl_incident_ms < i.read_cache_ttl_ms {
            return bad(
                "read_cache_ttl_incident_ms",
                "must be at least incident.read_cache_ttl_ms".into(),
            );
        }
        Ok(())
    }
}

/// The `RELIEFLINE_*` variables, read as figment's [`Env`] reads them except for text.
///
/// `Env` reads `15881234` as a number, and a number is refused where text is expected; but an
/// operator who writes a sender number, a contact phone, or an all-digit password or token
/// means the text (a leading zero included). So a key whose default in [`DEFAULTS`] is text
/// takes the variable as written; a quoted value (`"0042"`) still loses its quotes.
struct Environment {
    vars: Env,
    text_keys: BTreeSet<String>,
}

impl Environment {
    fn new(vars: Env) -> Result<Self, ConfigError> {
        let defaults = Toml::string(DEFAULTS)
            .data()
            .map_err(|e| describe_figment_error(&e))?;
        let mut text_keys = BTreeSet::new();
        for dict in defaults.values() {
            collect_text_keys(dict, "", &mut text_keys);
        }
        Ok(Self { vars, text_keys })
    }
}

impl Provider for Environment {
    fn metadata(&self) -> Metadata {
        self.vars.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.vars.iter() {
            let Ok(parsed) = raw.parse::<Value>();
            let value = match parsed {
                Value::String(..) => parsed,
                _ if self.text_keys.contains(key.as_str()) => Value::from(raw.trim()),
                _ => parsed,
            };
            if let Some(nested) = nest(key.as_str(), value).into_dict() {
                merge_dicts(&mut dict, nested);
            }
        }
        Ok(self.vars.profile.collect(dict))
    }
}

/// The dotted paths of the text values in `dict`.
fn collect_text_keys(dict: &Dict, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::String(..) => {
                out.insert(path);
            }
            Value::Dict(_, inner) => collect_text_keys(inner, &path, out),
            _ => {}
        }
    }
}

/// `from` over `into`, tables merged key by key, as figment merges providers.
fn merge_dicts(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, inner)), Value::Dict(_, more)) => merge_dicts(inner, more),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Turn figment's error into one line: which key, what is wrong, and where the value came from.
fn describe_figment_error(error: &figment::Error) -> ConfigError {
    use figment::error::Kind;
    let key = error.path.join(".");
    let what = match &error.kind {
        Kind::UnknownField(field, _) => {
            let full = if key.is_empty() {
                field.clone()
            } else {
                format!("{key}.{field}")
            };
            return ConfigError(format!(
                "{full}: unknown key{}",
                source_suffix(error, &full)
            ));
        }
        Kind::MissingField(field) => {
            let full = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            return ConfigError(format!("{full}: missing"));
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!("expected {expected}, found {actual}")
        }
        Kind::UnknownVariant(found, expected) => {
            format!("`{found}` is not one of: {}", expected.join(", "))
        }
        other => other.to_string(),
    };
    let key = if key.is_empty() { "(top level)" } else { &key };
    ConfigError(format!("{key}: {what}{}", source_suffix(error, key)))
}

fn source_suffix(error: &figment::Error, key: &str) -> String {
    let Some(meta) = &error.metadata else {
        return String::new();
    };
    let name = meta.name.as_ref();
    if name.contains("environment") || name.contains(ENV_PREFIX) {
        let var = format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"));
        format!(" (from environment variable {var})")
    } else if let Some(figment::Source::File(path)) = &meta.source {
        format!(" (in {})", path.display())
    } else {
        String::new()
    }
}

fn optional_socket_addr<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let text = String::deserialize(deserializer)?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a socket address like 127.0.0.1:9184 (or empty)"
        ))
    })
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn mask_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::defaults().unwrap();
        assert_eq!(config.http.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9184".parse().unwrap())
        );
        assert!(matches!(
            config.database.target(),
            DatabaseTarget::Sqlite { path } if path == Path::new("data/reliefline.db")
        ));
    }

    #[test]
    fn environment_overrides_nested_keys() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELIEFLINE_HTTP__LISTEN", "0.0.0.0:9000");
            jail.set_env("RELIEFLINE_DATABASE__URL", "postgres://u:pw@localhost/db");
            jail.set_env("RELIEFLINE_METRICS__LISTEN", "");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.http.listen, "0.0.0.0:9000".parse().unwrap());
            assert_eq!(config.database.target(), DatabaseTarget::Postgres);
            assert_eq!(config.metrics.listen, None);
            Ok(())
        });
    }

    #[test]
    fn text_keys_take_all_digit_values_from_the_environment_as_text() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELIEFLINE_NOTIFY__SMS__SENDER", "15881234");
            jail.set_env("RELIEFLINE_NOTIFY__CONTACT_PHONE", "0215881234");
            jail.set_env("RELIEFLINE_ADMIN__TOKEN", "1234567890123456");
            jail.set_env("RELIEFLINE_NOTIFY__EMAIL__PASSWORD", "0000");
            jail.set_env("RELIEFLINE_NOTIFY__EMAIL__USERNAME", "true");
            jail.set_env("RELIEFLINE_NOTIFY__EMAIL__FROM_NAME", "\"0042\"");
            // Keys that are not text are read as before: numbers, tables.
            jail.set_env("RELIEFLINE_HTTP__MAX_CONNECTIONS", "123");
            jail.set_env(
                "RELIEFLINE_NOTIFY__RATE_LIMITS__SMS",
                "{per_minute=60, burst=5}",
            );
            jail.set_env("RELIEFLINE_NOTIFY__RATE_LIMITS__EMAIL__BURST", "7");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let notify = &config.notify;
            assert_eq!(notify.sms.sender, "15881234");
            assert_eq!(notify.contact_phone, "0215881234");
            assert_eq!(config.admin.token(), Some("1234567890123456"));
            assert_eq!(notify.email.password.expose_secret(), "0000");
            assert_eq!(notify.email.username, "true");
            assert_eq!(notify.email.from_name, "0042");
            assert_eq!(config.http.max_connections, 123);
            assert_eq!(
                (
                    notify.rate_limits.sms.per_minute,
                    notify.rate_limits.sms.burst
                ),
                (60.0, 5)
            );
            assert_eq!(notify.rate_limits.email.burst, 7);
            Ok(())
        });
    }

    #[test]
    fn a_file_overrides_defaults_and_env_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "reliefline.toml",
                "[http]\nlisten = \"127.0.0.1:7000\"\n[log]\nformat = \"json\"\n",
            )?;
            jail.set_env("RELIEFLINE_HTTP__LISTEN", "127.0.0.1:7001");
            let config =
                Config::load(Some(Path::new("reliefline.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.http.listen.port(), 7001);
            assert_eq!(config.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_key_and_the_variable() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELIEFLINE_HTTP__LISTEN", "not-an-address");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("http.listen"), "{err}");
            assert!(err.contains("RELIEFLINE_HTTP__LISTEN"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
            Ok(())
        });
        for (var, value, key) in [
            ("RELIEFLINE_DATABASE__URL", "mysql://x", "database.url"),
            (
                "RELIEFLINE_HTTP__REQUEST_TIMEOUT_MS",
                "0",
                "http.request_timeout_ms",
            ),
            ("RELIEFLINE_LOG__FORMAT", "xml", "log.format"),
            ("RELIEFLINE_METRICS__LISTEN", "9184", "metrics.listen"),
            ("RELIEFLINE_ADMIN__TOKEN", "short", "admin.token"),
            (
                "RELIEFLINE_INCIDENT__SURGE_WINDOW_SECS",
                "5",
                "incident.surge_window_secs",
            ),
            (
                "RELIEFLINE_INCIDENT__READ_CACHE_TTL_INCIDENT_MS",
                "1",
                "incident.read_cache_ttl_incident_ms",
            ),
            (
                "RELIEFLINE_INCIDENT__EVALUATE_INTERVAL_MS",
                "0",
                "incident.evaluate_interval_ms",
            ),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.set_env(var, value);
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(key), "{var}={value}: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn the_admin_token_is_optional_and_never_shown() {
        let config = Config::defaults().unwrap();
        assert_eq!(config.admin.token(), None);
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELIEFLINE_ADMIN__TOKEN", "a-long-enough-commander-token");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.admin.token(), Some("a-long-enough-commander-token"));
            assert!(!format!("{config:?}").contains("commander-token"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELIEFLINE_HTTP__LISTN", "127.0.0.1:1");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(
                err.contains("http.listn") && err.contains("unknown key"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn secrets_never_show_in_debug() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "RELIEFLINE_DATABASE__URL",
                "postgres://app:hunter2@db/reliefline",
            );
            let config = Config::load(None).map_err(|e| e.to_string())?;
            let shown = format!("{config:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(
                shown.contains("postgres://app:***@db/reliefline"),
                "{shown}"
            );
            Ok(())
        });
    }

    #[test]
    fn masks_only_the_password() {
        assert_eq!(mask_url_password("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(
            mask_url_password("sqlite://data/x.db"),
            "sqlite://data/x.db"
        );
        assert_eq!(
            mask_url_password("postgres://u:p@ss@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
    }
}
