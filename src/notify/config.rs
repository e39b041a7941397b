//! The `[notify]` configuration section. Defaults, with the reasons for them, are in
//! `src/config/defaults.toml`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::ratelimit::Limit;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Telephone number for consultation, printed in every outage notice (the law asks for a
    /// contact). Empty: only `contact_url` (or the status page) is given.
    pub contact_phone: String,
    /// Web page for consultation; empty: the status page.
    pub contact_url: String,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub dispatcher: DispatcherConfig,
    pub rate_limits: ChannelLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransportKind {
    /// `.eml` files in a spool folder: runs with no mail server.
    File,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub transport: EmailTransportKind,
    pub spool_dir: PathBuf,
    pub from_address: String,
    pub from_name: String,
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// PEM file of extra certificate authorities trusted for the relay (a private relay's own
    /// CA); empty: the public web PKI only.
    pub ca_file: PathBuf,
    pub username: String,
    pub password: SecretString,
    pub pool_size: usize,
    /// Send `MAIL`, `RCPT` and `DATA` in one write where the relay offers PIPELINING.
    pub pipelining: bool,
    pub timeout_ms: u64,
}

impl EmailConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsTransportKind {
    /// JSON lines appended to a spool file.
    File,
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmsFormat {
    Json,
    Form,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConfig {
    pub transport: SmsTransportKind,
    pub spool_path: PathBuf,
    pub url: String,
    pub format: SmsFormat,
    /// The sender number registered with the gateway.
    pub sender: String,
    pub auth_header_name: String,
    pub auth_header_value: SecretString,
    pub timeout_ms: u64,
    /// Shared secret the gateway presents in `callback_header` on delivery reports; empty
    /// refuses every report.
    pub callback_header: String,
    pub callback_secret: SecretString,
}

impl SmsConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn callback_secret(&self) -> Option<&str> {
        Some(self.callback_secret.expose_secret().trim()).filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    pub enabled: bool,
    pub batch_size: u32,
    pub concurrency: usize,
    pub lease_secs: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_interval_ms: u64,
    pub stats_interval_ms: u64,
}

impl DispatcherConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(self.stats_interval_ms)
    }
}

/// The gateways' contracted rates, per replica.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelLimits {
    pub email: Limit,
    pub sms: Limit,
}

impl NotifyConfig {
    /// Check every value; `Err` is one line naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("notify.{key}: {why}"));
        let e = &self.email;
        if e.transport == EmailTransportKind::Smtp {
            if e.host.trim().is_empty() {
                return bad("email.host", "is required with transport = \"smtp\"");
            }
            if e.port == 0 {
                return bad("email.port", "must be greater than 0");
            }
        }
        if e.from_address.parse::<lettre::Address>().is_err() {
            return bad("email.from_address", "is not an e-mail address");
        }
        if e.transport == EmailTransportKind::Smtp
            && !e.ca_file.as_os_str().is_empty()
            && !e.ca_file.is_file()
        {
            return bad("email.ca_file", "no such file");
        }
        if !(1..=256).contains(&e.pool_size) {
            return bad("email.pool_size", "must be between 1 and 256");
        }
        if e.timeout_ms == 0 {
            return bad("email.timeout_ms", "must be greater than 0");
        }
        let s = &self.sms;
        if s.transport == SmsTransportKind::Http
            && !(s.url.starts_with("http://") || s.url.starts_with("https://"))
        {
            return bad(
                "sms.url",
                "must start with http:// or https:// with transport = \"http\"",
            );
        }
        if s.timeout_ms == 0 {
            return bad("sms.timeout_ms", "must be greater than 0");
        }
        if !s.auth_header_name.is_empty()
            && axum::http::HeaderName::from_bytes(s.auth_header_name.as_bytes()).is_err()
        {
            return bad("sms.auth_header_name", "is not a valid header name");
        }
        if axum::http::HeaderValue::from_str(s.auth_header_value.expose_secret()).is_err() {
            return bad("sms.auth_header_value", "is not a valid header value");
        }
        if axum::http::HeaderName::from_bytes(s.callback_header.as_bytes()).is_err() {
            return bad("sms.callback_header", "is not a valid header name");
        }
        let d = &self.dispatcher;
        if !(1..=10_000).contains(&d.batch_size) {
            return bad("dispatcher.batch_size", "must be between 1 and 10000");
        }
        if !(1..=1_024).contains(&d.concurrency) {
            return bad("dispatcher.concurrency", "must be between 1 and 1024");
        }
        if d.lease_secs == 0 {
            return bad("dispatcher.lease_secs", "must be greater than 0");
        }
        if d.lease_secs * 1000 <= e.timeout_ms.max(s.timeout_ms) {
            return bad(
                "dispatcher.lease_secs",
                "must be longer than the e-mail and SMS send timeouts, or a slow send could \
                 be taken over by another replica",
            );
        }
        if d.max_attempts == 0 {
            return bad("dispatcher.max_attempts", "must be greater than 0");
        }
        if d.backoff_base_ms == 0 || d.backoff_max_ms < d.backoff_base_ms {
            return bad(
                "dispatcher.backoff_base_ms",
                "must be greater than 0 and at most dispatcher.backoff_max_ms",
            );
        }
        if d.poll_interval_ms == 0 {
            return bad("dispatcher.poll_interval_ms", "must be greater than 0");
        }
        if d.stats_interval_ms == 0 {
            return bad("dispatcher.stats_interval_ms", "must be greater than 0");
        }
        for (name, limit) in [
            ("email", self.rate_limits.email),
            ("sms", self.rate_limits.sms),
        ] {
            if let Err((field, why)) = limit.quota() {
                return bad(&format!("rate_limits.{name}.{field}"), &why);
            }
            // A claimed message must be able to get its permit well within its lease, or it
            // would be claimed and handed back over and over.
            let slowest = 240.0 / d.lease_secs as f64;
            if limit.per_minute > 0.0 && limit.per_minute < slowest {
                return bad(
                    &format!("rate_limits.{name}.per_minute"),
                    &format!(
                        "must be 0 (off) or at least {slowest} (one send per quarter of \
                         dispatcher.lease_secs = {})",
                        d.lease_secs
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use crate::config::Config;

    #[test]
    fn defaults_spool_to_files() {
        let config = Config::defaults().unwrap();
        assert_eq!(
            config.notify.email.transport,
            super::EmailTransportKind::File
        );
        assert_eq!(config.notify.sms.transport, super::SmsTransportKind::File);
        assert!(config.notify.dispatcher.enabled);
        assert_eq!(config.notify.sms.callback_secret(), None);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (env, key) in [
            (
                vec![("EMAIL__TRANSPORT", "smtp"), ("EMAIL__HOST", " ")],
                "notify.email.host",
            ),
            (vec![("EMAIL__SECURITY", "ssl")], "notify.email.security"),
            (vec![("EMAIL__POOL_SIZE", "0")], "notify.email.pool_size"),
            (
                vec![("EMAIL__FROM_ADDRESS", "nobody")],
                "notify.email.from_address",
            ),
            (vec![("SMS__TRANSPORT", "http")], "notify.sms.url"),
            (vec![("SMS__FORMAT", "xml")], "notify.sms.format"),
            (
                vec![("DISPATCHER__LEASE_SECS", "5")],
                "notify.dispatcher.lease_secs",
            ),
            (
                vec![("DISPATCHER__MAX_ATTEMPTS", "0")],
                "notify.dispatcher.max_attempts",
            ),
            (
                vec![
                    ("DISPATCHER__BACKOFF_BASE_MS", "10"),
                    ("DISPATCHER__BACKOFF_MAX_MS", "5"),
                ],
                "notify.dispatcher.backoff_base_ms",
            ),
            (
                vec![("RATE_LIMITS__SMS__PER_MINUTE", "-1")],
                "notify.rate_limits.sms.per_minute",
            ),
            (
                vec![("RATE_LIMITS__EMAIL__PER_MINUTE", "3")],
                "notify.rate_limits.email.per_minute",
            ),
        ] {
            figment::Jail::expect_with(|jail| {
                for (var, value) in &env {
                    jail.set_env(format!("RELIEFLINE_NOTIFY__{var}"), value);
                }
                let err = Config::load(None).unwrap_err().to_string();
                assert!(err.contains(key), "{env:?}: {err}");
                assert!(!err.contains('\n'), "one line: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn secrets_never_show_in_debug() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("RELIEFLINE_NOTIFY__EMAIL__PASSWORD", "smtp-hunter2");
            jail.set_env(
                "RELIEFLINE_NOTIFY__SMS__AUTH_HEADER_VALUE",
                "Bearer gw-hunter2",
            );
            jail.set_env("RELIEFLINE_NOTIFY__SMS__CALLBACK_SECRET", "cb-hunter2");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.notify.sms.callback_secret(), Some("cb-hunter2"));
            let shown = format!("{config:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            Ok(())
        });
    }
}
