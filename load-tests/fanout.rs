//! Fan-out of one incident update to many subscribers: seconds to enqueue, messages/s delivered
//! to a local SMTP sink and fake SMS gateway, as ratios to a minimal lettre / hyper client
//! sending messages of the same size to the same sinks in the same run, and the service's peak
//! memory over the whole delivery.
//!
//! Subscribers are written straight into the database while the service is stopped (sealed and
//! hashed with the run's master key, as the service would), so seeding is not measured.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use futures::StreamExt as _;
use hyper::Method;
use reliefline::crypto::Keys;
use sqlx::Connection as _;
use uuid::Uuid;

use crate::client;
use crate::service::{self, Running, ServiceSpec};
use crate::sinks::{ChannelCount, Counts};
use crate::{Common, Workspace, declare_incident, table, verdict};

/// The provider the incident names and every seeded subscriber follows.
const PROVIDER: &str = "Kakao";
/// A sender number as gateways register them, all digits (set through the environment).
const SENDER: &str = "15880000";
const FROM: &str = "noreply@reliefline.invalid";
/// How often progress is sampled while the update is delivered.
const POLL: Duration = Duration::from_millis(200);
/// Rows per multi-row statement when seeding.
const SEED_BATCH: usize = 5_000;
/// Rows per seeding transaction on SQLite.
const SQLITE_TX_ROWS: usize = 50_000;

#[derive(Args, Clone)]
pub struct FanoutOpts {
    /// Confirmed subscribers of the provider (half e-mail, half SMS).
    #[arg(long, default_value_t = 1_000_000)]
    pub subscribers: u64,
    /// Messages per channel the baseline client sends (at most the service's count).
    #[arg(long, default_value_t = 100_000)]
    pub baseline_sample: u64,
    /// SMTP connections of the service (`notify.email.pool_size`) and of the baseline client.
    #[arg(long, default_value_t = 4)]
    pub email_pool: usize,
    /// Sends in flight of the service's dispatcher (`notify.dispatcher.concurrency`), and the
    /// SMS requests in flight of the baseline client.
    #[arg(long, default_value_t = 32)]
    pub dispatch_concurrency: usize,
    /// Messages the dispatcher claims per round (`notify.dispatcher.batch_size`).
    #[arg(long, default_value_t = 200)]
    pub dispatch_batch: usize,
    /// Give up waiting for delivery after this many seconds, or after this long without progress.
    #[arg(long, default_value_t = 1800)]
    pub delivery_timeout: u64,
}

#[derive(Args, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub opts: FanoutOpts,
}

/// `GET …/updates/{id}/delivery`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
struct Delivery {
    fanout: String,
    enqueued: u64,
    queued: u64,
    sending: u64,
    sent: u64,
    failed: u64,
    dead: u64,
}

/// The subscriber `i`: channel, normalised contact, language.
fn subscriber(i: u64) -> (&'static str, String, &'static str) {
    let lang = if i.is_multiple_of(3) { "en" } else { "ko" };
    if i.is_multiple_of(2) {
        ("email", format!("s{i:08}@bench.example"), lang)
    } else {
        ("sms", format!("+8210{:08}", i % 100_000_000), lang)
    }
}

/// One batch of subscription rows.
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    channels: Vec<String>,
    enc: Vec<Vec<u8>>,
    hmac: Vec<Vec<u8>>,
    langs: Vec<String>,
    unsub: Vec<Vec<u8>>,
}

impl Rows {
    fn make(keys: &Keys, range: std::ops::Range<u64>) -> Self {
        let mut rows = Rows::default();
        for i in range {
            let (channel, contact, lang) = subscriber(i);
            let id = Uuid::now_v7();
            let sealed = keys.seal_contact(&contact);
            rows.ids.push(id);
            rows.channels.push(channel.to_owned());
            rows.enc.push(sealed.ciphertext);
            rows.hmac.push(sealed.hmac.to_vec());
            rows.langs.push(lang.to_owned());
            // Unique, like the keyed hash of a real token would be.
            rows.unsub
                .push(keys.hash(&format!("bench/unsubscribe/{id}")).to_vec());
        }
        rows
    }
}

const PG_SEED: &str = "INSERT INTO subscriptions (id, channel, contact_enc, contact_hmac, \
     provider, lang, state, unsubscribe_token_hmac, created_at, confirmed_at) \
     SELECT id, channel, enc, hmac, $7, lang, 'confirmed', unsub, $8, $8 \
     FROM UNNEST($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], $5::text[], $6::bytea[]) \
     AS t(id, channel, enc, hmac, lang, unsub)";

/// Insert `n` confirmed subscriptions to [`PROVIDER`]; returns the seconds it took.
async fn seed(spec: &ServiceSpec, n: u64) -> anyhow::Result<f64> {
    let keys = Keys::from_hex(&spec.master_key).map_err(anyhow::Error::msg)?;
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let batches = (0..n)
        .step_by(SEED_BATCH)
        .map(|s| s..(s + SEED_BATCH as u64).min(n));
    if spec.database_url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(&spec.database_url).await?;
        for range in batches {
            let rows = Rows::make(&keys, range);
            sqlx::query(PG_SEED)
                .bind(&rows.ids)
                .bind(&rows.channels)
                .bind(&rows.enc)
                .bind(&rows.hmac)
                .bind(&rows.langs)
                .bind(&rows.unsub)
                .bind(PROVIDER)
                .bind(now)
                .execute(&mut conn)
                .await
                .context("seeding subscriptions")?;
        }
        sqlx::raw_sql("ANALYZE subscriptions")
            .execute(&mut conn)
            .await?;
    } else {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(&spec.database_url)?
            .busy_timeout(Duration::from_secs(30));
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        let mut tx = conn.begin().await?;
        let mut in_tx = 0;
        for range in batches {
            let rows = Rows::make(&keys, range);
            // Six variables a row: the SQLite limit (32,766) allows a batch of 5,000.
            let row = format!("(?, ?, ?, ?, ?, ?, 'confirmed', '{PROVIDER}', {now}, {now})");
            let values = vec![row.as_str(); rows.ids.len()];
            let sql = format!(
                "INSERT INTO subscriptions (id, channel, contact_enc, contact_hmac, lang, \
                 unsubscribe_token_hmac, state, provider, created_at, confirmed_at) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for k in 0..rows.ids.len() {
                query = query
                    .bind(rows.ids[k])
                    .bind(rows.channels[k].as_str())
                    .bind(rows.enc[k].as_slice())
                    .bind(rows.hmac[k].as_slice())
                    .bind(rows.langs[k].as_str())
                    .bind(rows.unsub[k].as_slice());
            }
            query
                .execute(&mut *tx)
                .await
                .context("seeding subscriptions")?;
            in_tx += rows.ids.len();
            if in_tx >= SQLITE_TX_ROWS {
                tx.commit().await?;
                tx = conn.begin().await?;
                in_tx = 0;
            }
        }
        tx.commit().await?;
        // As on PostgreSQL, only the seeded table: statistics taken of the still empty outbox
        // would mislead the planner for the whole run, which a service never analysing its
        // database does not see.
        sqlx::raw_sql("ANALYZE subscriptions")
            .execute(&mut conn)
            .await?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// The service configured to deliver to the sinks as fast as it can (rate limits off).
fn delivery_env(opts: &FanoutOpts, smtp: SocketAddr, sms: SocketAddr) -> Vec<(String, String)> {
    [
        ("NOTIFY__EMAIL__TRANSPORT", "smtp".to_owned()),
        ("NOTIFY__EMAIL__HOST", smtp.ip().to_string()),
        ("NOTIFY__EMAIL__PORT", smtp.port().to_string()),
        ("NOTIFY__EMAIL__SECURITY", "none".to_owned()),
        ("NOTIFY__EMAIL__POOL_SIZE", opts.email_pool.to_string()),
        ("NOTIFY__EMAIL__FROM_ADDRESS", FROM.to_owned()),
        ("NOTIFY__SMS__TRANSPORT", "http".to_owned()),
        ("NOTIFY__SMS__URL", format!("http://{sms}/sms")),
        ("NOTIFY__SMS__FORMAT", "json".to_owned()),
        ("NOTIFY__SMS__SENDER", SENDER.to_owned()),
        (
            "NOTIFY__DISPATCHER__CONCURRENCY",
            opts.dispatch_concurrency.to_string(),
        ),
        (
            "NOTIFY__DISPATCHER__BATCH_SIZE",
            opts.dispatch_batch.to_string(),
        ),
        ("NOTIFY__RATE_LIMITS__EMAIL__PER_MINUTE", "0".to_owned()),
        ("NOTIFY__RATE_LIMITS__SMS__PER_MINUTE", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("RELIEFLINE_{k}"), v))
    .collect()
}

async fn get_json<T: serde::de::DeserializeOwned>(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<T> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let reply = client::once(addr, Method::GET, path, &headers, None).await?;
    if reply.status != 200 {
        bail!(
            "GET {path} answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    Ok(serde_json::from_slice(&reply.body)?)
}

/// Ids of the incident's updates in a command answer.
fn update_ids(answer: &serde_json::Value) -> HashSet<String> {
    answer["updates"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|v| v["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Post an update; returns its id.
async fn post_update(svc: &Running, token: &str, incident: &str) -> anyhow::Result<String> {
    let auth = format!("Bearer {token}");
    let path = format!("/api/v1/incidents/{incident}");
    let before = client::once(
        svc.http,
        Method::GET,
        &path,
        &[("authorization", &auth)],
        None,
    )
    .await?;
    let before = update_ids(&serde_json::from_slice(&before.body).unwrap_or_default());
    let body = serde_json::json!({
        "status": "identified",
        "message": {
            "ko": "판교 데이터센터 화재의 원인을 확인했습니다. 카카오톡 복구 작업을 진행 중이며, \
                   복구 예상 시각은 오늘 오후 6시입니다. 피해 접수는 계속 받고 있습니다.",
            "en": "The cause, a fire at the Pangyo data centre, is identified. KakaoTalk is being \
                   restored; we expect service back by 6 pm today. Keep reporting your damages."
        }
    });
    let reply = client::once(
        svc.http,
        Method::POST,
        &format!("{path}/updates"),
        &[("authorization", &auth)],
        Some(Bytes::from(serde_json::to_vec(&body)?)),
    )
    .await?;
    if reply.status != 201 {
        bail!(
            "posting the update answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    let after = update_ids(&serde_json::from_slice(&reply.body)?);
    after
        .difference(&before)
        .next()
        .cloned()
        .context("the answer to the update names no new update")
}

/// Wait until the fan-out of every update of the incident so far is done.
async fn settle_fanouts(svc: &Running, token: &str, incident: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/incidents/{incident}");
    let detail: serde_json::Value = get_json(svc.http, &path, Some(token)).await?;
    let until = Instant::now() + Duration::from_secs(60);
    for update in update_ids(&detail) {
        loop {
            let progress: Delivery = get_json(
                svc.http,
                &format!("{path}/updates/{update}/delivery"),
                Some(token),
            )
            .await?;
            if progress.fanout == "done" {
                break;
            }
            if Instant::now() > until {
                bail!("the fan-out of update {update} did not finish");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}

/// What was seen while the update was delivered.
struct Run {
    enqueue_secs: Option<f64>,
    all_sent_secs: Option<f64>,
    last: Delivery,
    counts: Counts,
    timed_out: bool,
}

async fn watch(
    svc: &Running,
    sinks: &Running,
    token: &str,
    progress_path: &str,
    started: Instant,
    expected: u64,
    timeout: Duration,
) -> anyhow::Result<Run> {
    let mut run = Run {
        enqueue_secs: None,
        all_sent_secs: None,
        last: Delivery::default(),
        counts: Counts::default(),
        timed_out: false,
    };
    let mut progress_at = Instant::now();
    let mut seen = (0, 0);
    loop {
        tokio::time::sleep(POLL).await;
        let delivery: Delivery = get_json(svc.http, progress_path, Some(token)).await?;
        let counts: Counts = get_json(sinks.http, "/counts", None).await?;
        let at = started.elapsed().as_secs_f64();
        if delivery.fanout == "done" && run.enqueue_secs.is_none() {
            run.enqueue_secs = Some(at);
        }
        let received = counts.email.service_distinct + counts.sms.service_distinct;
        if run.all_sent_secs.is_none() && delivery.sent >= expected && received >= expected {
            run.all_sent_secs = Some(at);
        }
        if (delivery.sent, received) != seen {
            seen = (delivery.sent, received);
            progress_at = Instant::now();
        }
        let settled = delivery.fanout == "done" && delivery.queued + delivery.sending == 0;
        run.last = delivery;
        run.counts = counts;
        if run.all_sent_secs.is_some() || settled {
            return Ok(run);
        }
        if started.elapsed() > timeout || progress_at.elapsed() > Duration::from_secs(120) {
            run.timed_out = true;
            return Ok(run);
        }
    }
}

/// Baseline e-mail: `connections` lettre SMTP connections (TCP_NODELAY) sending `n` messages
/// of about `size` bytes. Returns messages/s.
async fn baseline_email(
    smtp: SocketAddr,
    n: u64,
    connections: usize,
    size: usize,
) -> anyhow::Result<f64> {
    use lettre::Message;
    use lettre::message::header::ContentType;
    use lettre::transport::smtp::client::AsyncSmtpConnection;
    use lettre::transport::smtp::extension::ClientId;

    let build = |i: u64, body: &str| -> anyhow::Result<Message> {
        Ok(Message::builder()
            .from(format!("Reliefline <{FROM}>").parse()?)
            .to(format!("b{i:08}@bench.example").parse()?)
            .subject(
                "[Reliefline] 카카오 서비스 장애: 원인 확인 / Kakao services outage: identified",
            )
            .message_id(Some(format!("<base-{i}@bench>")))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())?)
    };
    // A body long enough for the message to be about as large as the service's.
    let line = "카카오톡 복구 작업을 진행 중입니다. KakaoTalk is being restored.\n";
    let mut body = String::new();
    while build(0, &body)?.formatted().len() < size && body.len() < 1 << 20 {
        body.push_str(line);
    }
    let next = std::sync::atomic::AtomicU64::new(0);
    let started = Instant::now();
    let workers = (0..connections.max(1)).map(|_| async {
        let tcp = tokio::net::TcpStream::connect(smtp).await?;
        tcp.set_nodelay(true)?;
        let mut conn =
            AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &ClientId::default())
                .await?;
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if i >= n {
                break;
            }
            let message = build(i, &body)?;
            conn.send(message.envelope(), &message.formatted()).await?;
        }
        conn.quit().await?;
        anyhow::Ok(())
    });
    for result in futures::future::join_all(workers).await {
        result.context("baseline e-mail client")?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Baseline SMS: `concurrency` JSON POSTs in flight over a hyper connection pool, `n` in all,
/// bodies of about `size` bytes. Returns messages/s.
async fn baseline_sms(
    gateway: SocketAddr,
    n: u64,
    concurrency: usize,
    size: usize,
) -> anyhow::Result<f64> {
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let url: hyper::Uri = format!("http://{gateway}/sms").parse()?;
    let mut text = String::from("[Reliefline] 카카오 장애 원인 확인, 복구 중. ");
    let body_of = |i: u64, text: &str| {
        serde_json::json!({
            "message_id": format!("base-{i}"),
            "to": format!("+8210{:08}", i % 100_000_000),
            "from": SENDER,
            "text": text,
            "type": "LMS",
        })
        .to_string()
    };
    while body_of(0, &text).len() < size && text.len() < 1 << 16 {
        text.push_str("복구 중 ");
    }
    let started = Instant::now();
    let mut sends = futures::stream::iter(0..n)
        .map(|i| {
            let request = hyper::Request::post(url.clone())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body_of(i, &text))));
            let client = &client;
            async move {
                let response = client.request(request?).await?;
                let status = response.status();
                response.into_body().collect().await?;
                if !status.is_success() {
                    bail!("the gateway answered {status}");
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = sends.next().await {
        result.context("baseline SMS client")?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Messages/s of one channel at the sink, first to last message.
fn sink_rate(c: &ChannelCount) -> Option<f64> {
    let (first, last) = (c.service_first_ms?, c.service_last_ms?);
    (last > first).then(|| c.service_distinct as f64 * 1000.0 / (last - first) as f64)
}

fn average(bytes: u64, count: u64) -> usize {
    bytes.checked_div(count).unwrap_or(0) as usize
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "not reached".into(), |v| format!("{v:.1} {unit}"))
}

/// `service` over `base`, when both were measured.
fn ratio(service: Option<f64>, base: f64) -> Option<f64> {
    service.filter(|_| base > 0.0).map(|s| s / base)
}

fn ratio_line(service: Option<f64>, base: f64) -> String {
    match ratio(service, base) {
        Some(r) => format!("{r:.2}  (target >= 0.8: {})", verdict(r >= 0.8)),
        None => "n/a (MISSED)".into(),
    }
}

/// One channel's rate against its baseline. Not the figure and marked against no
/// target: the service sends both channels at once on the shared cores, from one outbox, while
/// the baseline sends each channel alone, so a channel's share of the run says how the two
/// were interleaved, not how fast either can go. The total line is the comparison.
fn channel_ratio(service: Option<f64>, base: f64) -> String {
    ratio(service, base).map_or_else(
        || "n/a".into(),
        |r| format!("{r:.2}  (diagnostic: both channels at once)"),
    )
}

pub async fn fanout(common: &Common, opts: &FanoutOpts) -> anyhow::Result<bool> {
    let n = opts.subscribers;
    let expected_email = n.div_ceil(2);
    let expected_sms = n / 2;
    let ws = Workspace::new(common).await?;
    let smtp = service::free_addr()?;
    let sinks = service::start_sinks(ws.dir.path(), smtp).await?;
    let env = delivery_env(opts, smtp, sinks.http);

    // The incident and its subscribers, the service stopped while they are written.
    let svc = service::start_service_with(&ws.spec, None, "service-setup.log", &env).await?;
    let incident = declare_incident(&svc, &ws.spec.admin_token).await?;
    // The declaration is an update too: let its (empty) fan-out finish now, or it would reach
    // the seeded subscribers as a second message each in the measured run.
    settle_fanouts(&svc, &ws.spec.admin_token, &incident).await?;
    svc.stop().await?;
    let seed_secs = seed(&ws.spec, n).await?;

    // The measured run: post the update, watch it go out.
    let svc = service::start_service_with(&ws.spec, None, "service-fanout.log", &env).await?;
    let posted: Counts = get_json(sinks.http, "/counts", None).await?;
    let started = Instant::now();
    let update = post_update(&svc, &ws.spec.admin_token, &incident).await?;
    let progress_path = format!("/api/v1/incidents/{incident}/updates/{update}/delivery");
    let run = watch(
        &svc,
        &sinks,
        &ws.spec.admin_token,
        &progress_path,
        started,
        n,
        Duration::from_secs(opts.delivery_timeout),
    )
    .await;
    let peak_kib = svc.peak_rss_kib();
    let log_tail = svc.log_tail();
    svc.stop().await?;
    let run = run?;

    // The baseline, the service stopped, messages sized like the service's.
    let email_size = average(
        run.counts.email.service_bytes,
        run.counts.email.service_total,
    );
    let sms_size = average(run.counts.sms.service_bytes, run.counts.sms.service_total);
    let email_sample = opts.baseline_sample.min(expected_email).max(1);
    let sms_sample = opts.baseline_sample.min(expected_sms).max(1);
    let base_email = baseline_email(smtp, email_sample, opts.email_pool, email_size).await?;
    let base_sms =
        baseline_sms(sinks.http, sms_sample, opts.dispatch_concurrency, sms_size).await?;
    let after: Counts = get_json(sinks.http, "/counts", None).await?;
    sinks.stop().await?;
    ws.drop_database().await?;

    let email = run.counts.email;
    let sms = run.counts.sms;
    let missing_email = expected_email.saturating_sub(email.service_distinct);
    let missing_sms = expected_sms.saturating_sub(sms.service_distinct);
    let extra = email.service_distinct.saturating_sub(expected_email)
        + sms.service_distinct.saturating_sub(expected_sms);
    let duplicates =
        (email.service_total - email.service_distinct) + (sms.service_total - sms.service_distinct);
    let d = &run.last;
    let email_rate = sink_rate(&email);
    let sms_rate = sink_rate(&sms);
    let total_rate = run.all_sent_secs.map(|s| n as f64 / s);
    // On the sinks' clock: from the post to the first and to the last message received.
    let first_ms = email.service_first_ms.min(sms.service_first_ms);
    let last_ms = email.service_last_ms.max(sms.service_last_ms);
    let since_post = |ms: Option<u64>| ms.map(|m| m.saturating_sub(posted.now_ms) as f64 / 1000.0);
    let base_total = {
        // Both channels one after the other, as messages/s over the combined time.
        let secs = email_sample as f64 / base_email + sms_sample as f64 / base_sms;
        (email_sample + sms_sample) as f64 / secs
    };
    let peak_mib = peak_kib as f64 / 1024.0;

    println!(
        "## Fan-out: one update to {n} subscribers of {PROVIDER} ({expected_email} e-mail, \
         {expected_sms} SMS; ko/en)"
    );
    println!(
        "service: dispatcher concurrency {}, batch {}, SMTP pool {}, rate limits off; sinks on \
         loopback in a process of their own",
        opts.dispatch_concurrency, opts.dispatch_batch, opts.email_pool
    );
    if run.timed_out {
        println!("note: delivery did not finish in time; the figures are partial");
    }
    table(&[
        (
            "seeding (not measured)",
            format!("{seed_secs:.1} s ({:.0} rows/s)", n as f64 / seed_secs),
        ),
        (
            "enqueue (post → fan-out done)",
            match run.enqueue_secs {
                Some(s) => format!("{s:.1} s ({:.0} rows/s)", d.enqueued as f64 / s),
                None => "not reached (MISSED)".into(),
            },
        ),
        ("rows enqueued", d.enqueued.to_string()),
        (
            "post → first / last message at a sink",
            format!(
                "{} / {}",
                opt(since_post(first_ms), "s"),
                opt(since_post(last_ms), "s")
            ),
        ),
        (
            "post → all sent (outbox and sinks, polled)",
            opt(run.all_sent_secs, "s"),
        ),
        (
            "dispatched/s, total",
            format!(
                "{}  (baseline {base_total:.0}/s: ratio {})",
                opt(total_rate, "/s"),
                ratio_line(total_rate, base_total)
            ),
        ),
        (
            "e-mail/s at the sink, first to last",
            format!("{}  (baseline {base_email:.0}/s)", opt(email_rate, "/s")),
        ),
        (
            "ratio e-mail service/baseline",
            channel_ratio(email_rate, base_email),
        ),
        (
            "SMS/s at the gateway, first to last",
            format!("{}  (baseline {base_sms:.0}/s)", opt(sms_rate, "/s")),
        ),
        (
            "ratio SMS service/baseline",
            channel_ratio(sms_rate, base_sms),
        ),
        (
            "message size, service / baseline",
            format!(
                "e-mail {email_size} / {} bytes, SMS {sms_size} / {} bytes",
                average(after.email.other_bytes, after.email.other_total),
                average(after.sms.other_bytes, after.sms.other_total)
            ),
        ),
        (
            "baseline sample",
            format!(
                "{email_sample} e-mails on {} connections, {sms_sample} SMS with {} in flight \
                 (a sample, not all {n})",
                opts.email_pool, opts.dispatch_concurrency
            ),
        ),
        (
            "peak RSS (VmHWM), whole run",
            format!(
                "{peak_mib:.0} MiB  (target < 300 MiB: {})",
                verdict(peak_mib < 300.0)
            ),
        ),
        (
            "outbox sent / queued / sending",
            format!("{} / {} / {}", d.sent, d.queued, d.sending),
        ),
        ("outbox failed / dead", format!("{} / {}", d.failed, d.dead)),
        (
            "missing at the sinks",
            format!("e-mail {missing_email}, SMS {missing_sms}"),
        ),
        ("duplicates at the sinks", duplicates.to_string()),
        ("unexpected extra messages", extra.to_string()),
        (
            "messages without an id",
            (email.no_id + sms.no_id).to_string(),
        ),
    ]);
    println!();
    let ok = missing_email == 0
        && missing_sms == 0
        && extra == 0
        && d.failed == 0
        && d.dead == 0
        && email.no_id + sms.no_id == 0;
    if !ok {
        println!("the service's last log lines:\n{log_tail}\n");
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_half_email_half_sms_with_distinct_contacts() {
        let all: Vec<_> = (0..1000).map(subscriber).collect();
        let emails = all.iter().filter(|s| s.0 == "email").count();
        assert_eq!(emails, 500);
        let distinct: HashSet<&String> = all.iter().map(|s| &s.1).collect();
        assert_eq!(distinct.len(), 1000);
        assert!(all.iter().any(|s| s.2 == "en") && all.iter().any(|s| s.2 == "ko"));
        for (_, contact, _) in all.iter().filter(|s| s.0 == "sms") {
            let phone = reliefline::domain::PhoneNumber::parse(contact).expect("a phone");
            assert_eq!(&phone.e164(), contact, "stored normalised");
        }
    }

    #[test]
    fn seeded_rows_open_with_the_run_key() {
        let keys = Keys::from_hex(&"ab".repeat(32)).expect("key");
        let rows = Rows::make(&keys, 0..4);
        assert_eq!(rows.ids.len(), 4);
        assert_eq!(keys.open(&rows.enc[1]).expect("open"), subscriber(1).1);
        assert_eq!(rows.hmac[0], keys.hash(&subscriber(0).1).to_vec());
        let unsub: HashSet<&Vec<u8>> = rows.unsub.iter().collect();
        assert_eq!(unsub.len(), 4);
    }

    #[test]
    fn sink_rate_needs_two_instants() {
        let mut c = ChannelCount {
            service_distinct: 100,
            service_first_ms: Some(1000),
            service_last_ms: Some(2000),
            ..ChannelCount::default()
        };
        assert_eq!(sink_rate(&c), Some(100.0));
        c.service_last_ms = Some(1000);
        assert_eq!(sink_rate(&c), None);
    }
}
