//! E-mail: multipart text + HTML messages built with lettre, delivered to an SMTP relay through
//! a small pool of connections, or written as `.eml` files to a spool folder (the default, so
//! the service runs without a mail server).
//!
//! The pool is our own rather than lettre's: every connection is a tokio `TcpStream` with
//! `TCP_NODELAY` set. With Nagle's algorithm on, each SMTP command waits for the server's delayed
//! ACK (~40 ms), capping a connection at a few dozen messages a second (DESIGN.md, "Ceilings").

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use anyhow::Context as _;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, Message};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::config::{EmailConfig, EmailTransportKind, SmtpSecurity};
use super::render::Rendered;
use super::transport::{Delivered, SendError, spool_with};

const MESSAGE_ID_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Reliefline-Message-Id");
const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

pub enum EmailTransport {
    File(PathBuf),
    Smtp(SmtpPool),
}

impl EmailTransport {
    pub fn from_config(config: &EmailConfig) -> anyhow::Result<Self> {
        Ok(match config.transport {
            EmailTransportKind::File => {
                std::fs::create_dir_all(&config.spool_dir).with_context(|| {
                    format!(
                        "creating e-mail spool folder {}",
                        config.spool_dir.display()
                    )
                })?;
                Self::File(config.spool_dir.clone())
            }
            EmailTransportKind::Smtp => Self::Smtp(SmtpPool::new(config)?),
        })
    }

    /// Deliver one message; `id` is the stable message id receivers deduplicate by.
    pub async fn send(
        &self,
        from: &Mailbox,
        id: Uuid,
        to: &str,
        rendered: &Rendered,
    ) -> Result<Delivered, SendError> {
        let message = build_message(from, id, to, rendered)?;
        match self {
            Self::File(dir) => spool(dir, id, message.formatted()).await,
            Self::Smtp(pool) => pool.send(&message).await,
        }
    }
}

/// The message as sent: `Message-ID` and `X-Reliefline-Message-Id` carry the outbox id, and
/// subscription mail carries one-click unsubscribe headers (RFC 8058).
pub fn build_message(
    from: &Mailbox,
    id: Uuid,
    to: &str,
    rendered: &Rendered,
) -> Result<Message, SendError> {
    let to: Address = to
        .parse()
        .map_err(|_| SendError::permanent("invalid e-mail address"))?;
    let mut builder = Message::builder()
        .message_id(Some(format!("<{id}@reliefline>")))
        .raw_header(HeaderValue::new(MESSAGE_ID_HEADER, id.to_string()))
        .from(from.clone())
        .to(Mailbox::new(None, to))
        .subject(rendered.subject.as_ref());
    if let Some(url) = &rendered.unsubscribe_url {
        builder = builder
            .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{url}>")))
            .raw_header(HeaderValue::new(
                LIST_UNSUBSCRIBE_POST,
                "List-Unsubscribe=One-Click".to_owned(),
            ));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            rendered.text.to_string(),
            rendered.html.to_string(),
        ))
        .map_err(|e| SendError::permanent(format!("message cannot be built: {e}")))
}

/// Write `{id}.eml` whole or not at all: a temporary file renamed into place.
async fn spool(dir: &std::path::Path, id: Uuid, bytes: Vec<u8>) -> Result<Delivered, SendError> {
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    let path = dir.join(format!("{id}.eml"));
    spool_with("e-mail", move || {
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    })
    .await
}

/// Up to `pool_size` SMTP connections, reused across messages and used in parallel.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: SmtpSecurity,
    /// Extra trusted certificate authorities, PEM.
    extra_roots: Option<Vec<u8>>,
    credentials: Option<Credentials>,
    timeout: std::time::Duration,
    hello: ClientId,
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    slots: Semaphore,
}

impl SmtpPool {
    fn new(config: &EmailConfig) -> anyhow::Result<Self> {
        let extra_roots = if config.ca_file.as_os_str().is_empty() {
            None
        } else {
            Some(std::fs::read(&config.ca_file).with_context(|| {
                format!("notify.email.ca_file: reading {}", config.ca_file.display())
            })?)
        };
        let credentials = (!config.username.is_empty()).then(|| {
            Credentials::new(
                config.username.clone(),
                config.password.expose_secret().to_owned(),
            )
        });
        Ok(Self {
            host: config.host.clone(),
            port: config.port,
            security: config.security,
            extra_roots,
            credentials,
            timeout: config.timeout(),
            hello: ClientId::default(),
            idle: Mutex::new(Vec::with_capacity(config.pool_size)),
            slots: Semaphore::new(config.pool_size),
        })
    }

    async fn send(&self, message: &Message) -> Result<Delivered, SendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::transient("e-mail transport closed"))?;
        let bytes = message.formatted();
        let reused = self.take_idle();
        let fresh = reused.is_none();
        let mut conn = match reused {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut result = self.send_on(&mut conn, message, &bytes).await;
        // An idle connection the server has since closed fails before the message is taken:
        // try once more on a new one.
        if !fresh
            && matches!(&result, Err(Failure::Smtp(e)) if !e.is_permanent() && e.status().is_none())
        {
            conn.abort().await;
            conn = self.connect().await?;
            result = self.send_on(&mut conn, message, &bytes).await;
        }
        match result {
            Ok(response) => {
                self.put_idle(conn);
                Ok(Delivered {
                    gateway_ref: response.first_line().map(str::to_owned),
                })
            }
            Err(Failure::Smtp(e)) => {
                // A refused message leaves the session usable; anything else does not.
                if e.status().is_some() && !conn.has_broken() {
                    self.put_idle(conn);
                } else {
                    conn.abort().await;
                }
                Err(classify(&e))
            }
            Err(Failure::TimedOut) => Err(SendError::transient("SMTP send timed out")),
        }
    }

    async fn send_on(
        &self,
        conn: &mut AsyncSmtpConnection,
        message: &Message,
        bytes: &[u8],
    ) -> Result<lettre::transport::smtp::response::Response, Failure> {
        match tokio::time::timeout(self.timeout, conn.send(message.envelope(), bytes)).await {
            Ok(result) => result.map_err(Failure::Smtp),
            Err(_) => {
                conn.abort().await;
                Err(Failure::TimedOut)
            }
        }
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_idle(&self, conn: AsyncSmtpConnection) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(conn);
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::transient("SMTP connect timed out")),
        }
    }

    async fn open(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| SendError::transient(format!("SMTP connect: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| SendError::transient(format!("SMTP TCP_NODELAY: {e}")))?;
        let mut conn = match self.security {
            SmtpSecurity::None => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                    .await
                    .map_err(|e| classify(&e))?
            }
            SmtpSecurity::Starttls => {
                let mut conn =
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello)
                        .await
                        .map_err(|e| classify(&e))?;
                let mut tls = TlsParameters::builder(self.host.clone());
                if let Some(pem) = &self.extra_roots {
                    let ca = Certificate::from_pem(pem).map_err(|e| classify(&e))?;
                    tls = tls.add_root_certificate(ca);
                }
                let tls = tls.build().map_err(|e| classify(&e))?;
                conn.starttls(tls, &self.hello)
                    .await
                    .map_err(|e| classify(&e))?;
                conn
            }
            SmtpSecurity::Tls => {
                let stream = implicit_tls(&self.host, self.extra_roots.as_deref(), tcp).await?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                    .await
                    .map_err(|e| classify(&e))?
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(conn)
    }
}

enum Failure {
    Smtp(lettre::transport::smtp::Error),
    TimedOut,
}

/// 5xx replies are permanent; 4xx replies, I/O and TLS failures and timeouts are transient.
/// A reply is described by its code alone: servers often quote the recipient's address in
/// the text, and the reason is logged and stored.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let reason = match e.status() {
        Some(code) => format!("SMTP server answered {code}"),
        None => format!("SMTP: {e}"),
    };
    if e.is_permanent() {
        SendError::permanent(reason)
    } else {
        SendError::transient(reason)
    }
}

/// SMTPS (implicit TLS, usually port 465) over our own no-delay socket.
async fn implicit_tls(
    host: &str,
    extra_roots: Option<&[u8]>,
    tcp: TcpStream,
) -> Result<TlsConn, SendError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in CertificateDer::pem_slice_iter(extra_roots.unwrap_or_default()) {
        let cert = cert.map_err(|_| SendError::permanent("notify.email.ca_file is not PEM"))?;
        roots
            .add(cert)
            .map_err(|e| SendError::permanent(format!("notify.email.ca_file: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| SendError::permanent(format!("TLS set-up: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| SendError::permanent("notify.email.host is not a valid TLS server name"))?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| SendError::transient(format!("TLS handshake: {e}")))?;
    Ok(TlsConn(stream))
}

/// A TLS stream lettre can drive (its trait cannot be implemented on the foreign type directly).
#[derive(Debug)]
struct TlsConn(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsConn {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
