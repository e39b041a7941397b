//! The far ends of the fan-out benchmark, run in a process of their own (`loadtest sinks`) so
//! they share no runtime with the generator: a minimal SMTP server and a fake SMS gateway on
//! loopback, both answering at once and counting what they receive by message id.
//!
//! Messages whose id is a UUID (the outbox id the service puts in `X-Reliefline-Message-Id`,
//! `Message-ID` and the SMS `message_id`) are counted as the service's, distinct ids apart from
//! repeats; any other id is the baseline client's. `GET /counts` on the gateway's port reports
//! both channels.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// What one channel has received.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelCount {
    /// Service messages (UUID ids), repeats included.
    pub service_total: u64,
    /// Distinct service message ids.
    pub service_distinct: u64,
    /// Bytes of the service's messages (SMTP: the DATA; SMS: the request body).
    pub service_bytes: u64,
    /// Milliseconds after the sinks started of the first and the latest service message.
    pub service_first_ms: Option<u64>,
    pub service_last_ms: Option<u64>,
    /// Messages with another id (the baseline client's), and their bytes.
    pub other_total: u64,
    pub other_bytes: u64,
    /// Messages with no recognisable id.
    pub no_id: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Milliseconds since the sinks started, when these counts were taken.
    pub now_ms: u64,
    pub email: ChannelCount,
    pub sms: ChannelCount,
}

/// One channel's tally: the counts and the set of ids seen.
struct Tally {
    count: ChannelCount,
    seen: HashSet<u128>,
}

struct Sinks {
    started: Instant,
    email: Mutex<Tally>,
    sms: Mutex<Tally>,
}

impl Sinks {
    fn record(&self, channel: &Mutex<Tally>, id: Option<&str>, bytes: u64) {
        let at = self.started.elapsed().as_millis() as u64;
        let mut tally = channel.lock().unwrap_or_else(PoisonError::into_inner);
        let Tally { count, seen } = &mut *tally;
        match id.map(|s| (s, Uuid::parse_str(s))) {
            Some((_, Ok(uuid))) => {
                count.service_total += 1;
                count.service_bytes += bytes;
                if seen.insert(uuid.as_u128()) {
                    count.service_distinct += 1;
                }
                count.service_first_ms.get_or_insert(at);
                count.service_last_ms = Some(at);
            }
            Some((_, Err(_))) => {
                count.other_total += 1;
                count.other_bytes += bytes;
            }
            None => count.no_id += 1,
        }
    }

    fn counts(&self) -> Counts {
        let of = |m: &Mutex<Tally>| m.lock().unwrap_or_else(PoisonError::into_inner).count;
        Counts {
            now_ms: self.started.elapsed().as_millis() as u64,
            email: of(&self.email),
            sms: of(&self.sms),
        }
    }
}

fn tally() -> Mutex<Tally> {
    Mutex::new(Tally {
        count: ChannelCount::default(),
        seen: HashSet::new(),
    })
}

/// Serve both sinks until killed.
pub async fn serve(smtp: SocketAddr, sms: SocketAddr) -> anyhow::Result<()> {
    let sinks = Arc::new(Sinks {
        started: Instant::now(),
        email: tally(),
        sms: tally(),
    });
    let smtp_listener = TcpListener::bind(smtp).await?;
    let http_listener = TcpListener::bind(sms).await?;
    let smtp_task = {
        let sinks = Arc::clone(&sinks);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = smtp_listener.accept().await else {
                    continue;
                };
                let sinks = Arc::clone(&sinks);
                tokio::spawn(async move {
                    // A dropped session is the client's business; the counts show it.
                    let _ = smtp_session(socket, &sinks).await;
                });
            }
        })
    };
    let app = axum::Router::new()
        .route("/sms", post(sms_message))
        .route("/counts", get(counts))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sinks);
    axum::serve(http_listener, app).await?;
    smtp_task.abort();
    Ok(())
}

async fn counts(State(sinks): State<Arc<Sinks>>) -> Json<Counts> {
    Json(sinks.counts())
}

#[derive(Deserialize)]
struct SmsBody {
    message_id: Option<String>,
}

async fn sms_message(
    State(sinks): State<Arc<Sinks>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Json<serde_json::Value> {
    let parsed: Option<SmsBody> = serde_json::from_slice(&body).ok();
    let id = parsed.and_then(|b| b.message_id).or_else(|| {
        headers
            .get("x-reliefline-message-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    sinks.record(&sinks.sms, id.as_deref(), body.len() as u64);
    Json(serde_json::json!({"result": "accepted", "message_ref": id}))
}

/// One SMTP session: fixed replies, each message's id taken from its headers. It offers
/// PIPELINING (RFC 2920), as production relays do; lettre's client does not use it.
async fn smtp_session(socket: TcpStream, sinks: &Sinks) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (read, write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    writer.write_all(b"220 sink ESMTP ready\r\n").await?;
    writer.flush().await?;
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let verb = line
            .get(..4)
            .map(|v| v.to_ascii_uppercase())
            .unwrap_or_default();
        let reply: &[u8] = match &verb[..] {
            b"EHLO" => b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            b"HELO" | b"MAIL" | b"RCPT" | b"RSET" | b"NOOP" => b"250 OK\r\n",
            b"QUIT" => {
                writer.write_all(b"221 bye\r\n").await?;
                writer.flush().await?;
                return Ok(());
            }
            b"DATA" => {
                writer.write_all(b"354 end with .\r\n").await?;
                writer.flush().await?;
                let (id, bytes) = read_data(&mut reader, &mut line).await?;
                sinks.record(&sinks.email, id.as_deref(), bytes);
                b"250 OK queued\r\n"
            }
            _ => b"502 not implemented\r\n",
        };
        writer.write_all(reply).await?;
        // Replies to pipelined commands go out together, once the commands read are answered.
        if reader.buffer().is_empty() {
            writer.flush().await?;
        }
    }
}

/// Read a message up to its lone `.` line; returns its id and size.
async fn read_data(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    line: &mut Vec<u8>,
) -> std::io::Result<(Option<String>, u64)> {
    let mut bytes = 0u64;
    let mut in_headers = true;
    let mut ours = None;
    let mut message_id = None;
    loop {
        line.clear();
        if reader.read_until(b'\n', line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" || line == b".\n" {
            return Ok((ours.or(message_id), bytes));
        }
        bytes += line.len() as u64;
        if in_headers {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end();
            if text.is_empty() {
                in_headers = false;
            } else if let Some(id) = header_value(text, "x-reliefline-message-id") {
                ours = Some(id.to_owned());
            } else if let Some(id) = header_value(text, "message-id") {
                let id = id.trim_start_matches('<').trim_end_matches('>');
                message_id = Some(id.split('@').next().unwrap_or(id).to_owned());
            }
        }
    }
}

/// The value of header `name` (lower case) if `line` is that header.
fn header_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (key, value) = line.split_once(':')?;
    key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_matched_whatever_their_case() {
        assert_eq!(
            header_value("X-Reliefline-Message-ID: abc", "x-reliefline-message-id"),
            Some("abc")
        );
        assert_eq!(header_value("Subject: x", "message-id"), None);
        assert_eq!(header_value("no colon", "message-id"), None);
    }

    #[test]
    fn counts_repeats_and_separates_baseline_ids() {
        let sinks = Sinks {
            started: Instant::now(),
            email: tally(),
            sms: tally(),
        };
        let id = Uuid::now_v7().to_string();
        sinks.record(&sinks.email, Some(&id), 10);
        sinks.record(&sinks.email, Some(&id), 10);
        sinks.record(&sinks.email, Some("base-1"), 7);
        sinks.record(&sinks.email, None, 7);
        let c = sinks.counts().email;
        assert_eq!(c.service_total, 2);
        assert_eq!(c.service_distinct, 1);
        assert_eq!(c.service_bytes, 20);
        assert_eq!(c.other_total, 1);
        assert_eq!(c.no_id, 1);
        assert_eq!(sinks.counts().sms, ChannelCount::default());
    }

    /// Send `send`, then read the reply (all its lines) and check its code.
    async fn expect(client: &mut BufReader<TcpStream>, send: &str, code: &str) {
        client
            .get_mut()
            .write_all(send.as_bytes())
            .await
            .expect("write");
        let mut line = String::new();
        loop {
            line.clear();
            client.read_line(&mut line).await.expect("read");
            assert!(line.starts_with(code), "{send:?} answered {line:?}");
            if line.as_bytes().get(3) == Some(&b' ') {
                break;
            }
        }
    }

    #[tokio::test]
    async fn an_smtp_session_counts_each_message_by_its_id() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sinks = Arc::new(Sinks {
            started: Instant::now(),
            email: tally(),
            sms: tally(),
        });
        let server = {
            let sinks = Arc::clone(&sinks);
            tokio::spawn(async move {
                let (socket, _) = listener.accept().await.expect("accept");
                smtp_session(socket, &sinks).await
            })
        };
        let id = Uuid::now_v7();
        let mut client = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
        expect(&mut client, "", "220").await;
        expect(&mut client, "EHLO me\r\n", "250").await;
        for _ in 0..2 {
            expect(&mut client, "MAIL FROM:<a@b>\r\n", "250").await;
            expect(&mut client, "RCPT TO:<c@d>\r\n", "250").await;
            expect(&mut client, "DATA\r\n", "354").await;
            let data = format!(
                "Message-ID: <{id}@reliefline>\r\nSubject: x\r\n\r\n..dot-stuffed\r\nbody\r\n.\r\n"
            );
            expect(&mut client, &data, "250").await;
        }
        expect(&mut client, "QUIT\r\n", "221").await;
        server.await.expect("join").expect("session");
        let c = sinks.counts().email;
        assert_eq!((c.service_total, c.service_distinct), (2, 1));
    }
}
