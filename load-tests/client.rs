//! The load generator: N keep-alive HTTP/1.1 connections, each driven by its own task.
//!
//! Closed loop (each connection sends its next request as soon as the previous answer is in)
//! finds the throughput ceiling. Open loop sends on a fixed schedule whatever the server does;
//! a request's latency counts from the moment the schedule said to send it, so a server that
//! stalls is charged for the requests it made wait (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::reports::{Acknowledged, Sample};

/// Longest a single request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Histogram range: 1 µs to 60 s, three significant digits.
const MAX_MICROS: u64 = 60_000_000;

/// A status and body as received.
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

/// One keep-alive connection that reconnects when the server closes it.
pub struct Conn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("127.0.0.1"));
        Self {
            addr,
            host,
            sender: None,
        }
    }

    async fn connect(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        let usable = match self.sender.as_mut() {
            Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let stream = TcpStream::connect(self.addr)
                .await
                .with_context(|| format!("connect to {}", self.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .context("HTTP handshake")?;
            tokio::spawn(async move {
                // A connection error surfaces on the next request; nothing to do here.
                drop(conn.await);
            });
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .context("no connection after connecting")
    }

    /// Send one request; `json` bodies go out as `application/json`.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        let exchange = async {
            let sender = self.connect().await?;
            let resp = sender.send_request(req).await.context("send request")?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Reply { status, body })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                self.sender = None;
                anyhow::bail!("no answer within {REQUEST_TIMEOUT:?}")
            }
        }
    }
}

/// One request on a fresh connection, for set-up and checks rather than load.
pub async fn once(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Bytes>,
) -> anyhow::Result<Reply> {
    Conn::new(addr).send(method, path, headers, body).await
}

/// What the connections send.
#[derive(Clone)]
pub enum Workload {
    /// `POST /api/v1/reports` with bodies from a pool; every fifth carries a fresh
    /// `Idempotency-Key` (unique per `tag`, so phases never replay each other's keys).
    Reports {
        samples: Arc<Vec<Sample>>,
        tag: String,
    },
    /// `GET` of each path in turn.
    Get { paths: Arc<Vec<String>> },
}

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    Closed,
    /// Requests per second across all connections.
    Open(f64),
}

/// Everything one phase observed.
pub struct Tally {
    /// Latency of 2xx answers, µs.
    pub ok: Histogram<u64>,
    /// Latency of 429 and 503 answers, µs.
    pub shed: Histogram<u64>,
    /// The same answers timed from when each request actually went out: the server's share
    /// alone, without the wait for a free connection (equal to the above in closed loop).
    pub ok_from_send: Histogram<u64>,
    pub shed_from_send: Histogram<u64>,
    /// Open loop: how late each request went out (waiting for a free connection or for CPU),
    /// µs; already part of its latency. High values mean the generator could not keep up.
    pub send_lag: Histogram<u64>,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub first_error: Option<String>,
    /// Receipt and contact of every `201`.
    pub receipts: Vec<Acknowledged>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// Open loop: requests the schedule called for (all of them are due before the end).
    pub scheduled: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            ok: Histogram::new_with_bounds(1, MAX_MICROS, 3)?,
            shed: Histogram::new_with_bounds(1, MAX_MICROS, 3)?,
            send_lag: Histogram::new_with_bounds(1, MAX_MICROS, 3)?,
            ok_from_send: Histogram::new_with_bounds(1, MAX_MICROS, 3)?,
            shed_from_send: Histogram::new_with_bounds(1, MAX_MICROS, 3)?,
            statuses: Default::default(),
            transport_errors: 0,
            first_error: None,
            receipts: Vec::new(),
            elapsed: Duration::ZERO,
            scheduled: 0,
        })
    }

    /// `other` added to `so_far` (if any): counts, histograms and receipts; elapsed times
    /// add up.
    pub fn combined(so_far: Option<Self>, other: Self) -> anyhow::Result<Self> {
        let Some(mut tally) = so_far else {
            return Ok(other);
        };
        let (elapsed, scheduled) = (other.elapsed, other.scheduled);
        tally.merge(other)?;
        tally.elapsed += elapsed;
        tally.scheduled += scheduled;
        Ok(tally)
    }

    fn merge(&mut self, other: Self) -> anyhow::Result<()> {
        self.ok.add(&other.ok)?;
        self.shed.add(&other.shed)?;
        self.send_lag.add(&other.send_lag)?;
        self.ok_from_send.add(&other.ok_from_send)?;
        self.shed_from_send.add(&other.shed_from_send)?;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.receipts.extend(other.receipts);
        Ok(())
    }

    /// Requests sent, answered or not.
    pub fn sent(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.transport_errors
    }

    pub fn count(&self, status: u16) -> u64 {
        self.statuses.get(&status).copied().unwrap_or(0)
    }

    /// Answers with a 2xx status.
    pub fn ok_count(&self) -> u64 {
        self.statuses.range(200..300).map(|(_, n)| n).sum()
    }

    pub fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn record(
        &mut self,
        workload: &Workload,
        pick: usize,
        reply: &Reply,
        (micros, from_send): (u64, u64),
    ) {
        *self.statuses.entry(reply.status).or_default() += 1;
        let (micros, from_send) = (micros.clamp(1, MAX_MICROS), from_send.clamp(1, MAX_MICROS));
        match reply.status {
            200..=299 => {
                self.ok.saturating_record(micros);
                self.ok_from_send.saturating_record(from_send);
            }
            429 | 503 => {
                self.shed.saturating_record(micros);
                self.shed_from_send.saturating_record(from_send);
            }
            _ => {}
        }
        if let (201, Workload::Reports { samples, .. }) = (reply.status, workload) {
            #[derive(serde::Deserialize)]
            struct Accepted {
                receipt: String,
            }
            if let Ok(a) = serde_json::from_slice::<Accepted>(&reply.body) {
                let sample = &samples[pick];
                self.receipts.push(Acknowledged {
                    receipt: a.receipt,
                    contact: sample.contact.clone(),
                    confirmations: sample.confirmations,
                });
            }
        }
    }
}

/// Run `connections` connections against `addr` for `duration`.
pub async fn run(
    addr: SocketAddr,
    workload: &Workload,
    pace: Pace,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Tally> {
    // Time for every connection to be opened before the clock starts.
    let start = Instant::now()
        + Duration::from_millis(20)
        + connections as u32 * Duration::from_micros(100);
    let deadline = start + duration;
    let schedule = Arc::new(AtomicU64::new(0));
    let total = match pace {
        Pace::Closed => u64::MAX,
        Pace::Open(rate) => (rate * duration.as_secs_f64()) as u64,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..connections {
        let workload = workload.clone();
        let schedule = Arc::clone(&schedule);
        tasks.spawn(async move {
            let mut tally = Tally::new()?;
            let mut conn = Conn::new(addr);
            // A failure here shows up, counted, on the first request.
            drop(conn.connect().await);
            tokio::time::sleep_until(start).await;
            let mut seq = 0u64;
            loop {
                // When the request is due, and when its clock starts.
                let clock_from = match pace {
                    Pace::Closed => {
                        if Instant::now() >= deadline {
                            break;
                        }
                        Instant::now()
                    }
                    Pace::Open(rate) => {
                        let i = schedule.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break;
                        }
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        let now = Instant::now();
                        if now >= deadline {
                            // Whatever is still unsent at the end stays unsent (and is
                            // reported): the phase is bounded in time, not in requests.
                            break;
                        }
                        if due > now {
                            // On time: the timer's own slack is ours, not the server's.
                            tokio::time::sleep_until(due).await;
                            tally.send_lag.saturating_record(1);
                            Instant::now()
                        } else {
                            // Behind: the wait for a free connection is the server's doing.
                            let lag = (now - due).as_micros() as u64;
                            tally.send_lag.saturating_record(lag.clamp(1, MAX_MICROS));
                            due
                        }
                    }
                };
                seq += 1;
                let (method, path, body, pick, key) = match &workload {
                    Workload::Reports { samples, tag } => {
                        let pick = (worker.wrapping_mul(7919) + seq as usize) % samples.len();
                        let key = seq
                            .is_multiple_of(5)
                            .then(|| format!("{tag}-{worker}-{seq}"));
                        let body = samples[pick].body.clone();
                        (Method::POST, "/api/v1/reports", Some(body), pick, key)
                    }
                    Workload::Get { paths } => {
                        let path = paths[(worker + seq as usize) % paths.len()].as_str();
                        (Method::GET, path, None, 0, None)
                    }
                };
                let headers: Vec<(&str, &str)> = key
                    .as_deref()
                    .map(|k| vec![("idempotency-key", k)])
                    .unwrap_or_default();
                let sent_at = Instant::now();
                match conn.send(method, path, &headers, body).await {
                    Ok(reply) => {
                        let micros = clock_from.elapsed().as_micros() as u64;
                        let from_send = sent_at.elapsed().as_micros() as u64;
                        tally.record(&workload, pick, &reply, (micros, from_send));
                    }
                    Err(e) => {
                        tally.transport_errors += 1;
                        if tally.first_error.is_none() {
                            tally.first_error = Some(format!("{e:#}"));
                        }
                        // Do not spin while a server is unreachable.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            anyhow::Ok(tally)
        });
    }
    let mut all = Tally::new()?;
    while let Some(joined) = tasks.join_next().await {
        all.merge(joined??)?;
    }
    all.elapsed = start.elapsed();
    if let Pace::Open(_) = pace {
        all.scheduled = total;
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::Contact;

    /// The baseline server in this process, on a free port.
    async fn baseline() -> SocketAddr {
        let addr = crate::service::free_addr().expect("port");
        tokio::spawn(crate::baseline::serve(addr));
        for _ in 0..200 {
            if once(addr, Method::GET, "/healthz", &[], None).await.is_ok() {
                return addr;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("baseline server did not start");
    }

    fn reports() -> Workload {
        Workload::Reports {
            samples: Arc::new(crate::reports::pool(64, 5, None)),
            tag: "test".into(),
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_every_answer_and_keeps_every_receipt() {
        let addr = baseline().await;
        let tally = run(
            addr,
            &reports(),
            Pace::Closed,
            4,
            Duration::from_millis(300),
        )
        .await
        .expect("run");
        assert!(tally.count(201) > 0);
        assert_eq!(tally.sent(), tally.count(201), "{:?}", tally.statuses);
        assert_eq!(tally.receipts.len() as u64, tally.count(201));
        assert_eq!(tally.ok.len(), tally.count(201));
        assert_eq!(tally.transport_errors, 0, "{:?}", tally.first_error);
    }

    #[tokio::test]
    async fn open_loop_sends_at_most_what_the_schedule_holds() {
        let addr = baseline().await;
        let tally = run(
            addr,
            &reports(),
            Pace::Open(200.0),
            4,
            Duration::from_millis(500),
        )
        .await
        .expect("run");
        assert_eq!(tally.scheduled, 100);
        assert!(tally.sent() <= tally.scheduled);
        assert!(tally.sent() > 0);
        assert_eq!(tally.send_lag.len(), tally.sent());
    }

    #[tokio::test]
    async fn a_refused_body_is_counted_not_kept() {
        let addr = baseline().await;
        let bad = Workload::Reports {
            samples: Arc::new(vec![Sample {
                body: Bytes::from_static(br#"{"provider": "Kakao"}"#),
                contact: Contact::Email("a@example.kr".into()),
                confirmations: 0,
            }]),
            tag: "bad".into(),
        };
        let tally = run(addr, &bad, Pace::Closed, 2, Duration::from_millis(100))
            .await
            .expect("run");
        assert_eq!(tally.count(201), 0);
        assert!(tally.count(422) > 0, "{:?}", tally.statuses);
        assert!(tally.receipts.is_empty());
        assert!(tally.ok.is_empty());
    }
}
