//! E-mail: multipart text + HTML messages built with lettre, delivered to an SMTP relay through
//! a small pool of connections, or written as `.eml` files to a spool folder (the default, so
//! the service runs without a mail server).
//!
//! The pool is our own rather than lettre's: every connection is a tokio `TcpStream` with
//! `TCP_NODELAY` set. With Nagle's algorithm on, each SMTP command waits for the server's delayed
//! ACK (~40 ms), capping a connection at a few dozen messages a second (DESIGN.md, "Ceilings").
//!
//! Where the relay offers PIPELINING (RFC 2920), a message takes two round trips instead of
//! four: `MAIL`, `RCPT` and `DATA` go out in one write and their replies are read together,
//! then the content follows. lettre's connection sends one command per round trip, so the
//! group is written through it as one command and the other replies are read after it.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use anyhow::Context as _;
use lettre::address::Envelope;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{Address, Message};
use secrecy::ExposeSecret as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::config::{EmailConfig, EmailTransportKind, SmtpSecurity};
use super::render::Rendered;
use super::transport::{Delivered, SendError, SpoolThread};

const MESSAGE_ID_HEADER: HeaderName = HeaderName::new_from_ascii_str("X-Reliefline-Message-Id");
const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

pub enum EmailTransport {
    /// `{id}.eml` files in a folder, written by a thread of their own.
    File(SpoolThread<(Uuid, Vec<u8>)>),
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
                Self::File(spool(config.spool_dir.clone())?)
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
            Self::File(spool) => spool.write((id, message.formatted())).await,
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

/// The e-mail spool: each message written to `{id}.eml` whole or not at all, a temporary file
/// renamed into place.
fn spool(dir: PathBuf) -> std::io::Result<SpoolThread<(Uuid, Vec<u8>)>> {
    SpoolThread::start("e-mail", move |group: &[(Uuid, Vec<u8>)]| {
        for (id, bytes) in group {
            let tmp = dir.join(format!(".{id}.eml.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, dir.join(format!("{id}.eml")))?;
        }
        Ok(())
    })
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
    /// Pipeline commands where the relay offers it (`notify.email.pipelining`).
    pipelining: bool,
    idle: Mutex<Vec<Session>>,
    slots: Semaphore,
}

/// One open SMTP connection and whether its relay takes pipelined commands.
struct Session {
    conn: AsyncSmtpConnection,
    pipelining: bool,
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
            pipelining: config.pipelining,
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
        let envelope = message.envelope();
        let reused = self.take_idle();
        let fresh = reused.is_none();
        let mut session = match reused {
            Some(session) => session,
            None => self.connect().await?,
        };
        let mut result = self.send_on(&mut session, envelope, &bytes).await;
        // An idle connection the server has since closed fails before the message is taken:
        // try once more on a new one.
        if !fresh && matches!(&result, Err(Failure::Smtp(e)) if e.status().is_none()) {
            session.conn.abort().await;
            session = self.connect().await?;
            result = self.send_on(&mut session, envelope, &bytes).await;
        }
        match result {
            Ok(response) => {
                self.put_idle(session);
                Ok(Delivered {
                    gateway_ref: response.first_line().map(str::to_owned),
                })
            }
            Err(Failure::Refused(e)) => {
                // The relay refused this message and the session is back where it began.
                self.put_idle(session);
                Err(classify(&e))
            }
            Err(Failure::Smtp(e)) => {
                session.conn.abort().await;
                Err(classify(&e))
            }
            Err(Failure::TimedOut) => {
                session.conn.abort().await;
                Err(SendError::transient("SMTP send timed out"))
            }
        }
    }

    async fn send_on(
        &self,
        session: &mut Session,
        envelope: &Envelope,
        bytes: &[u8],
    ) -> Result<Response, Failure> {
        let exchange = async {
            // Built messages are 7-bit (lettre encodes the parts); 8-bit content would need the
            // relay's 8BITMIME, which lettre's own path checks.
            let seven_bit = std::str::from_utf8(bytes).ok().filter(|t| t.is_ascii());
            if let Some(text) = seven_bit.filter(|_| session.pipelining) {
                send_pipelined(&mut session.conn, envelope, text).await
            } else {
                // lettre ends the session on any refusal.
                session
                    .conn
                    .send(envelope, bytes)
                    .await
                    .map_err(Failure::Smtp)
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::TimedOut))
    }

    fn take_idle(&self) -> Option<Session> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn put_idle(&self, session: Session) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
    }

    async fn connect(&self) -> Result<Session, SendError> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::transient("SMTP connect timed out")),
        }
    }

    async fn open(&self) -> Result<Session, SendError> {
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
        // lettre keeps only the extensions it uses from the greeting: ask again to learn
        // whether the relay pipelines (RFC 5321 allows a second EHLO; it resets nothing but
        // the mail transaction, and comes before authentication).
        let pipelining = self.pipelining
            && conn
                .command(Ehlo::new(self.hello.clone()))
                .await
                .map_err(|e| classify(&e))?
                .message()
                .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(|e| classify(&e))?;
        }
        Ok(Session { conn, pipelining })
    }
}

enum Failure {
    /// The relay refused the message; the session is still usable.
    Refused(lettre::transport::smtp::Error),
    /// The session is in an unknown state or broken.
    Smtp(lettre::transport::smtp::Error),
    TimedOut,
}

/// `MAIL`, `RCPT` (one per recipient) and `DATA` as one group of lines, written at once.
struct CommandGroup<'a> {
    mail: Mail,
    rcpts: &'a [Rcpt],
}

impl std::fmt::Display for CommandGroup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.mail)?;
        for rcpt in self.rcpts {
            write!(f, "{rcpt}")?;
        }
        write!(f, "{Data}")
    }
}

/// A message's content as sent after `DATA`: lines that begin with a dot get another (RFC 5321
/// 4.5.2), then the lone-dot line ends it. Written as one piece, where lettre's `message` scans
/// byte by byte and writes the end apart.
struct Content<'a>(&'a str);

impl std::fmt::Display for Content<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        if rest.starts_with('.') {
            f.write_str(".")?;
        }
        while let Some(at) = rest.find("\n.") {
            f.write_str(&rest[..=at])?;
            f.write_str(".")?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)?;
        if !rest.is_empty() && !rest.ends_with("\r\n") {
            f.write_str("\r\n")?;
        }
        f.write_str(".\r\n")
    }
}

/// One 7-bit message over a pipelining session: the command group and its replies in one round trip,
/// then the content in the second. Every reply of the group is read whatever the earlier ones
/// said, so the session stays in step; a refusal is undone with `RSET` and the session kept.
async fn send_pipelined(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    text: &str,
) -> Result<Response, Failure> {
    let rcpts: Vec<Rcpt> = envelope
        .to()
        .iter()
        .map(|to| Rcpt::new(to.clone(), Vec::new()))
        .collect();
    let group = CommandGroup {
        mail: Mail::new(envelope.from().cloned(), Vec::new()),
        rcpts: &rcpts,
    };
    let mut refusal = None;
    let mut note = |reply: Result<Response, lettre::transport::smtp::Error>| match reply {
        Ok(_) => Ok(()),
        Err(e) if e.status().is_some() => {
            refusal.get_or_insert(e);
            Ok(())
        }
        Err(e) => Err(Failure::Smtp(e)),
    };
    note(conn.command(group).await)?;
    for _ in &rcpts {
        note(conn.read_response().await)?;
    }
    match (refusal, conn.read_response().await) {
        (None, Ok(_)) => conn.command(Content(text)).await.map_err(|e| {
            if e.status().is_some() {
                Failure::Refused(e)
            } else {
                Failure::Smtp(e)
            }
        }),
        (_, Err(e)) if e.status().is_none() => Err(Failure::Smtp(e)),
        // `DATA` refused too, as it should be after a refused sender or recipient: nothing is
        // under way, and `RSET` clears what was accepted.
        (first, Err(data)) => {
            let e = first.unwrap_or(data);
            match conn.command(Rset).await {
                Ok(_) => Err(Failure::Refused(e)),
                Err(_) => Err(Failure::Smtp(e)),
            }
        }
        // The relay would take content for a refused transaction: leave the session.
        (Some(e), Ok(_)) => Err(Failure::Smtp(e)),
    }
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

#[cfg(test)]
mod tests {
    use super::Content;

    #[test]
    fn content_is_dot_stuffed_and_ended_once() {
        let sent = |text: &str| Content(text).to_string();
        assert_eq!(sent("a\r\nb\r\n"), "a\r\nb\r\n.\r\n");
        assert_eq!(sent("a\r\nb"), "a\r\nb\r\n.\r\n");
        assert_eq!(
            sent(".first\r\nx\r\n..two\r\n.\r\nend.\r\n"),
            "..first\r\nx\r\n...two\r\n..\r\nend.\r\n.\r\n"
        );
        assert_eq!(sent(""), ".\r\n");
    }
}
