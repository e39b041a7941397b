//! SMS: posted to an HTTP gateway (generic JSON, or form-encoded as the large commercial
//! gateways take it), or appended as JSON lines to a spool file (the default).
//!
//! Gateway answers: 2xx accepted; 429, 5xx, timeouts and dropped connections are retried
//! (honouring `Retry-After`); any other 4xx is permanent.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::ExposeSecret as _;
use serde::Serialize;
use std::io::Write as _;
use uuid::Uuid;

use super::config::{SmsConfig, SmsFormat, SmsTransportKind};
use super::euckr::SmsKind;
use super::transport::{Delivered, SendError, SpoolThread};

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
    Http(Box<HttpGateway>),
}

impl SmsTransport {
    pub fn from_config(config: &SmsConfig) -> anyhow::Result<Self> {
        Ok(match config.transport {
            SmsTransportKind::File => Self::File(FileSpool::new(config.spool_path.clone())?),
            SmsTransportKind::Http => Self::Http(Box::new(HttpGateway::new(config)?)),
        })
    }

    pub async fn send(&self, message: &SmsMessage<'_>) -> Result<Delivered, SendError> {
        match self {
            Self::File(spool) => spool.append(message).await,
            Self::Http(gateway) => gateway.send(message).await,
        }
    }
}

/// JSON lines appended to one file by a thread of its own: the lines of a group go out in one
/// write, each line whole.
pub struct FileSpool(SpoolThread<Vec<u8>>);

impl FileSpool {
    fn new(path: PathBuf) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating SMS spool folder {}", dir.display()))?;
        }
        let mut lines = Vec::new();
        let thread = SpoolThread::start("SMS", move |group: &[Vec<u8>]| {
            lines.clear();
            for line in group {
                lines.extend_from_slice(line);
            }
            // Opened for each group, so a spool file moved aside is started afresh.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?
                .write_all(&lines)
        })
        .context("starting the SMS spool writer")?;
        Ok(Self(thread))
    }

    async fn append(&self, message: &SmsMessage<'_>) -> Result<Delivered, SendError> {
        let mut line = serde_json::to_vec(message)
            .map_err(|e| SendError::permanent(format!("SMS spool: {e}")))?;
        line.push(b'\n');
        self.0.write(line).await
    }
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

pub struct HttpGateway {
    client: HttpsClient,
    url: axum::http::Uri,
    format: SmsFormat,
    auth: Option<(HeaderName, HeaderValue)>,
    timeout: Duration,
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
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.timeout()));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config()?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(https);
        Ok(Self {
            client,
            url: config
                .url
                .parse()
                .context("notify.sms.url is not a valid URL")?,
            format: config.format,
            auth,
            timeout: config.timeout(),
        })
    }

    async fn send(&self, message: &SmsMessage<'_>) -> Result<Delivered, SendError> {
        let (content_type, body) = match self.format {
            SmsFormat::Json => (
                "application/json",
                serde_json::to_vec(message)
                    .map_err(|e| SendError::permanent(format!("SMS body: {e}")))?,
            ),
            SmsFormat::Form => (
                "application/x-www-form-urlencoded",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("message_id", &message.message_id.to_string())
                    .append_pair("to", message.to)
                    .append_pair("from", message.from)
                    .append_pair("text", message.text)
                    .append_pair("type", message.kind.as_str())
                    .finish()
                    .into_bytes(),
            ),
        };
        let mut request = axum::http::Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header("X-Reliefline-Message-Id", message.message_id.to_string());
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| SendError::permanent(format!("SMS request: {e}")))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                let what = if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                SendError::transient(format!("SMS gateway {what}"))
            })?;
            let status = response.status();
            let retry_after = retry_after(response.headers().get(header::RETRY_AFTER));
            let body = http_body_util::Limited::new(response.into_body(), ANSWER_MAX_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, SendError>((status, retry_after, body))
        };
        let (status, retry_after, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::transient("SMS gateway timed out"))??;
        if status.is_success() {
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
fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    Ok(
        rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .context("TLS set-up for the SMS gateway")?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
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
