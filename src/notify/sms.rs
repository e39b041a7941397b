//! SMS: posted to an HTTP gateway (generic JSON, or form-encoded as the large commercial
//! gateways take it), or appended as JSON lines to a spool file (the default).
//!
//! Gateway answers: 2xx accepted; 429, 5xx, timeouts and dropped connections are retried
//! (honouring `Retry-After`); any other 4xx is permanent.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

use super::config::{SmsConfig, SmsFormat, SmsTransportKind};
use super::euckr::SmsKind;
use super::transport::{Delivered, SendError};

/// Longest gateway answer read for its message reference.
const ANSWER_MAX_BYTES: usize = 16 * 1024;

/// One text message as the gateway receives it.
#[derive(Debug, Clone, Serialize)]
pub struct SmsMessage<'a> {
    pub message_id: Uuid,
    pub to: &'a str,
    pub from: &'a str,
    pub text: &'a str,
    #[serde(rename = "type")]
    pub kind: SmsKind,
}

pub enum SmsTransport {
    File(FileSpool),
    Http(HttpGateway),
}

impl SmsTransport {
    pub fn from_config(config: &SmsConfig) -> anyhow::Result<Self> {
        Ok(match config.transport {
            SmsTransportKind::File => Self::File(FileSpool::new(config.spool_path.clone())?),
            SmsTransportKind::Http => Self::Http(HttpGateway::new(config)?),
        })
    }

    pub async fn send(&self, message: &SmsMessage<'_>) -> Result<Delivered, SendError> {
        match self {
            Self::File(spool) => spool.append(message).await,
            Self::Http(gateway) => gateway.send(message).await,
        }
    }
}

pub struct FileSpool {
    path: PathBuf,
    /// Lines are appended whole, one writer at a time.
    lock: tokio::sync::Mutex<()>,
}

impl FileSpool {
    fn new(path: PathBuf) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating SMS spool folder {}", dir.display()))?;
        }
        Ok(Self {
            path,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    async fn append(&self, message: &SmsMessage<'_>) -> Result<Delivered, SendError> {
        let mut line = serde_json::to_vec(message)
            .map_err(|e| SendError::permanent(format!("SMS spool: {e}")))?;
        line.push(b'\n');
        let _guard = self.lock.lock().await;
        let write = async {
            let mut file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await?;
            file.write_all(&line).await?;
            file.flush().await
        };
        write
            .await
            .map_err(|e| SendError::transient(format!("SMS spool: {e}")))?;
        Ok(Delivered::default())
    }
}

pub struct HttpGateway {
    client: reqwest::Client,
    url: String,
    format: SmsFormat,
    auth: Option<(HeaderName, HeaderValue)>,
}

impl HttpGateway {
    fn new(config: &SmsConfig) -> anyhow::Result<Self> {
        let auth = if config.auth_header_name.trim().is_empty() {
            None
        } else {
            let name = HeaderName::from_bytes(config.auth_header_name.trim().as_bytes())
                .context("notify.sms.auth_header_name")?;
            let mut value = HeaderValue::from_str(config.auth_header_value.expose_secret())
                .context("notify.sms.auth_header_value")?;
            value.set_sensitive(true);
            Some((name, value))
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout())
            .tls_backend_preconfigured(tls_config())
            .build()
            .context("building the SMS gateway client")?;
        Ok(Self {
            client,
            url: config.url.clone(),
            format: config.format,
            auth,
        })
    }

    async fn send(&self, message: &SmsMessage<'_>) -> Result<Delivered, SendError> {
        let mut request = self
            .client
            .post(&self.url)
            .header("X-Reliefline-Message-Id", message.message_id.to_string());
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        request = match self.format {
            SmsFormat::Json => request.json(message),
            SmsFormat::Form => request.form(message),
        };
        let response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            SendError::transient(format!("SMS gateway {what}"))
        })?;
        let status = response.status();
        let retry_after = retry_after(response.headers().get(header::RETRY_AFTER));
        if status.is_success() {
            let body = read_limited(response).await;
            return Ok(Delivered {
                gateway_ref: gateway_ref(&body),
            });
        }
        let reason = format!("SMS gateway answered {}", status.as_u16());
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::Transient {
                reason,
                retry_after,
            })
        } else {
            Err(SendError::permanent(reason))
        }
    }
}

/// rustls with the ring provider and the web PKI roots, for HTTPS gateways.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let builder = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|_| rustls::ClientConfig::builder());
    builder.with_root_certificates(roots).with_no_client_auth()
}

async fn read_limited(mut response: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > ANSWER_MAX_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}

/// The gateway's id for the message, from a JSON answer's `id` or `message_ref`.
fn gateway_ref(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("id").or_else(|| value.get("message_ref"))?;
    let text = match id {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(text.chars().take(200).collect())
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(value: Option<&HeaderValue>) -> Option<Duration> {
    let text = value?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    (at.to_utc() - chrono::Utc::now()).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let secs = HeaderValue::from_static("7");
        assert_eq!(retry_after(Some(&secs)), Some(Duration::from_secs(7)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let date = HeaderValue::from_str(&later).unwrap();
        let wait = retry_after(Some(&date)).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        assert_eq!(retry_after(Some(&HeaderValue::from_static("soon"))), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn the_gateway_reference_comes_from_its_answer() {
        assert_eq!(gateway_ref(br#"{"id": "abc"}"#), Some("abc".into()));
        assert_eq!(gateway_ref(br#"{"message_ref": 42}"#), Some("42".into()));
        assert_eq!(gateway_ref(b"OK"), None);
    }
}
