//! Reliefline benchmarks:
//! `load-tests/run.sh [surge|status|lookup|fanout|all] [--postgres] [--duration SECS] [--subscribers N]`.
//!
//! Each scenario starts the release service on a fresh database and free loopback ports, drives
//! it, stops it with SIGTERM, checks that every acknowledged report is in the store, and prints
//! its figures as ratios to a minimal axum server measured in the same run (`baseline`). A new
//! scenario is a new subcommand with a function like [`surge`] or [`status`].

// A command-line benchmark: what it prints is its result.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod baseline;
mod ceiling;
mod client;
mod cpu;
mod fanout;
mod lookup;
mod lost;
mod reports;
mod service;
mod sinks;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hyper::Method;
use sqlx::Connection as _;

use client::{Pace, Tally, Workload};
use cpu::CpuWatch;

/// The same allocator as the service, so the baseline handler is not handicapped by glibc's and
/// the generator leaves more of the shared cores to what it measures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use service::{Running, ServiceSpec};

#[derive(Parser)]
#[command(about = "Reliefline benchmarks (see the README, section Benchmarks)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Intake surge: throughput against the baseline, then 3x the sustainable rate.
    Surge(Common),
    /// Status page: many readers while reports come in; cache hits and store queries.
    Status(StatusArgs),
    /// Lookup timing: an unknown receipt against a wrong contact.
    Lookup(Common),
    /// Fan-out of one incident update to many subscribers by e-mail and SMS.
    Fanout(fanout::FanoutArgs),
    /// Every scenario, sharing one baseline measurement.
    All(AllArgs),
    /// Serve the baseline handler (started by the scenarios in a process of its own).
    Baseline {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Serve the SMTP sink and the fake SMS gateway (started by `fanout` in a process of its own).
    Sinks {
        #[arg(long)]
        smtp: SocketAddr,
        #[arg(long)]
        sms: SocketAddr,
    },
}

#[derive(Args, Clone)]
struct AllArgs {
    #[command(flatten)]
    status: StatusArgs,
    #[command(flatten)]
    fanout: fanout::FanoutOpts,
}

#[derive(Args, Clone)]
pub struct Common {
    /// The service binary (built by run.sh with `cargo build --release`).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/reliefline"))]
    service_bin: PathBuf,
    /// Run on PostgreSQL (a fresh database, dropped afterwards) instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// Server on which that database is created.
    #[arg(
        long,
        env = "TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    postgres_url: String,
    /// Seconds each measured phase lasts.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// Seconds of unmeasured load before each closed-loop phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Keep-alive connections of the closed-loop phases.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections of the open-loop overload phase: enough that requests held by the store do
    /// not keep the others from being sent (a request waits for a free one).
    #[arg(long, default_value_t = 1024)]
    overload_connections: usize,
    /// Overload offered, as a multiple of the sustainable rate.
    #[arg(long, default_value_t = 3.0)]
    overload_factor: f64,
    /// Admission limit of the overload phase, as a share of the throughput measured in the
    /// closed-loop phase. Refusing costs CPU too, so on shared cores less than 1.0 may be
    /// needed for the admitted reports to be committed as fast as they come.
    #[arg(long, default_value_t = 1.0)]
    admission_share: f64,
}

#[derive(Args, Clone)]
struct StatusArgs {
    #[command(flatten)]
    common: Common,
    /// Paths the readers refresh, in turn; a path this build does not serve (404) is reported
    /// and left out.
    #[arg(long = "path", default_values_t = [String::from("/api/v1/status"), String::from("/status")])]
    paths: Vec<String>,
    /// Reports per second submitted while the readers run.
    #[arg(long, default_value_t = 200.0)]
    write_rate: f64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "FAILED: acknowledged reports are missing from the store, or notifications \
                 were lost (see above)"
            );
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a command; `Ok(false)` when an acknowledged report or a notification was lost.
async fn dispatch(command: Command) -> anyhow::Result<bool> {
    match command {
        Command::Baseline { listen } => baseline::serve(listen).await.map(|()| true),
        Command::Sinks { smtp, sms } => sinks::serve(smtp, sms).await.map(|()| true),
        Command::Fanout(args) => {
            machine_banner(&args.common);
            fanout::fanout(&args.common, &args.opts).await
        }
        Command::Surge(common) => {
            machine_banner(&common);
            let base = measure_baseline(&common).await?;
            surge(&common, &base).await
        }
        Command::Status(args) => {
            machine_banner(&args.common);
            status(&args).await
        }
        Command::Lookup(common) => {
            machine_banner(&common);
            lookup::lookup(&common).await
        }
        Command::All(AllArgs {
            status: args,
            fanout,
        }) => {
            machine_banner(&args.common);
            let base = measure_baseline(&args.common).await?;
            let surge_ok = surge(&args.common, &base).await?;
            let status_ok = status(&args).await?;
            let lookup_ok = lookup::lookup(&args.common).await?;
            let fanout_ok = fanout::fanout(&args.common, &fanout).await?;
            Ok(surge_ok && status_ok && lookup_ok && fanout_ok)
        }
    }
}

// ---- environment -------------------------------------------------------------------------

fn machine_banner(common: &Common) {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!("# Reliefline benchmarks");
    println!(
        "machine: {cores} cores ({model}); the load generator, the service and the baseline \
         all share them (nothing pinned), loopback 127.0.0.1 only"
    );
    println!(
        "load average before start: {} (other work on the machine skews every figure)",
        load.join(" ")
    );
    println!(
        "store: {}; phases of {} s after {} s warm-up; {} connections closed loop, {} open loop",
        if common.postgres {
            "PostgreSQL (synchronous_commit=on, fresh database)"
        } else {
            "SQLite (WAL, synchronous=FULL, fresh file)"
        },
        common.duration,
        common.warmup,
        common.connections,
        common.overload_connections,
    );
    println!();
}

/// A fresh database and working folder for one scenario.
struct Workspace {
    dir: tempfile::TempDir,
    spec: ServiceSpec,
    pg: Option<(String, String)>,
}

impl Workspace {
    async fn new(common: &Common) -> anyhow::Result<Self> {
        if !common.service_bin.exists() {
            bail!(
                "{} does not exist: build it with `cargo build --release` (run.sh does)",
                common.service_bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("reliefline-bench-")
            .tempdir()?;
        let (database_url, pg) = if common.postgres {
            let admin = common.postgres_url.clone();
            let mut conn = sqlx::PgConnection::connect(&admin)
                .await
                .with_context(|| format!("connect to {admin}"))?;
            let name = format!("reliefline_bench_{}", service::random_hex(6));
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            (format!("{base}/{name}"), Some((admin, name)))
        } else {
            let file = dir.path().join("reliefline.db");
            (format!("sqlite://{}", file.display()), None)
        };
        let spec = ServiceSpec {
            // The service runs in the temp folder: a relative path must not change meaning.
            bin: std::fs::canonicalize(&common.service_bin)?,
            work_dir: dir.path().to_owned(),
            database_url,
            master_key: service::random_hex(32),
            admin_token: service::random_hex(24),
        };
        Ok(Self { dir, spec, pg })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        if let Some((admin, name)) = self.pg {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await?;
        }
        drop(self.dir);
        Ok(())
    }
}

/// Declare the incident the surge is about, as a commander would; returns its id.
async fn declare_incident(svc: &Running, token: &str) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "title": {"ko": "카카오 서비스 장애", "en": "Kakao services outage"},
        "provider": "Kakao",
        "services": ["KakaoTalk", "Kakao T", "Kakao Pay", "Daum Mail"],
        "started_at": chrono::Utc::now().to_rfc3339(),
        "severity": "critical",
        "message": {
            "ko": "판교 데이터센터 화재로 카카오톡 등 서비스가 중단되었습니다. 피해를 접수해 주세요.",
            "en": "A fire at the Pangyo data centre took KakaoTalk and other services down."
        }
    });
    let auth = format!("Bearer {token}");
    let reply = client::once(
        svc.http,
        Method::POST,
        "/api/v1/incidents",
        &[("authorization", &auth)],
        Some(Bytes::from(serde_json::to_vec(&body)?)),
    )
    .await?;
    if reply.status != 201 {
        bail!(
            "declaring the incident answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    let created: serde_json::Value = serde_json::from_slice(&reply.body)?;
    created["id"]
        .as_str()
        .map(str::to_owned)
        .context("incident without an id")
}

/// `mode` of `GET /api/v1/status`, for the record.
async fn current_mode(svc: &Running) -> String {
    let reply = client::once(svc.http, Method::GET, "/api/v1/status", &[], None).await;
    reply
        .ok()
        .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok())
        .and_then(|v| v["mode"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

// ---- baseline ----------------------------------------------------------------------------

/// Closed-loop throughput of the baseline server with the intake's bodies and connections.
struct Baseline {
    per_second: f64,
    p99_ms: f64,
    /// The server's CPU per answer, in microseconds (none if it could not be read).
    cpu_per_answer_us: Option<f64>,
}

async fn measure_baseline(common: &Common) -> anyhow::Result<Baseline> {
    let dir = tempfile::Builder::new()
        .prefix("reliefline-baseline-")
        .tempdir()?;
    let server = service::start_baseline(dir.path()).await?;
    let workload = baseline_workload();
    let warmup = Duration::from_secs(common.warmup);
    client::run(
        server.http,
        &workload,
        Pace::Closed,
        common.connections,
        warmup,
    )
    .await?;
    let watch = CpuWatch::start(&server);
    let tally = client::run(
        server.http,
        &workload,
        Pace::Closed,
        common.connections,
        Duration::from_secs(common.duration),
    )
    .await?;
    let cpu = watch.finish(&server);
    server.stop().await?;
    let answered = tally.count(201);
    let base = Baseline {
        per_second: tally.per_second(answered),
        p99_ms: ms(&tally.ok, 0.99),
        cpu_per_answer_us: cpu.as_ref().map(|c| c.target.micros_per(answered)),
    };
    println!(
        "## Baseline: axum 0.8 handler parsing the report JSON, answering 201, storing nothing"
    );
    let mut lines = vec![
        ("answered 201/s", format!("{:.0}", base.per_second)),
        ("p99 latency", format!("{:.2} ms", base.p99_ms)),
        ("other answers", others(&tally, &[201])),
    ];
    if let (Some(cpu), Some(per_answer)) = (&cpu, base.cpu_per_answer_us) {
        lines.extend([
            ("server CPU per answer", format!("{per_answer:.1} µs")),
            (
                "generator CPU per request",
                format!("{:.1} µs", cpu.generator.micros_per(tally.sent())),
            ),
            ("cores during the run", cpu.machine.clone()),
        ]);
    }
    table(&lines);
    Ok(base)
}

/// What the baseline is sent: the intake's report bodies.
fn baseline_workload() -> Workload {
    Workload::Reports {
        samples: Arc::new(reports::pool(2048, 1, None)),
        tag: format!("base-{}", service::random_hex(4)),
    }
}

// ---- surge -------------------------------------------------------------------------------

async fn surge(common: &Common, base: &Baseline) -> anyhow::Result<bool> {
    let ws = Workspace::new(common).await?;
    let duration = Duration::from_secs(common.duration);

    // Phase 1: closed loop, no admission limit: how many reports/s the service commits.
    let svc = service::start_service(&ws.spec, None, "service-throughput.log").await?;
    let incident = declare_incident(&svc, &ws.spec.admin_token).await?;
    let mode = current_mode(&svc).await;
    let samples = Arc::new(reports::pool(4096, 2, Some(&incident)));
    let workload = |tag: &str| Workload::Reports {
        samples: Arc::clone(&samples),
        tag: format!("{tag}-{}", service::random_hex(4)),
    };
    let mut receipts = Vec::new();
    let warm = client::run(
        svc.http,
        &workload("warm"),
        Pace::Closed,
        common.connections,
        Duration::from_secs(common.warmup),
    )
    .await?;
    receipts.extend(warm.receipts);
    let watch = CpuWatch::start(&svc);
    let mut closed = client::run(
        svc.http,
        &workload("closed"),
        Pace::Closed,
        common.connections,
        duration,
    )
    .await?;
    let closed_cpu = watch.finish(&svc);
    receipts.append(&mut closed.receipts);
    let rss_closed = svc.stop().await?;
    let sustainable = closed.per_second(closed.count(201));
    if sustainable < 1.0 {
        bail!(
            "the service accepted no report ({}); first error: {}",
            others(&closed, &[]),
            closed.first_error.as_deref().unwrap_or("none")
        );
    }

    // Phase 2: the admission limit set to the sustainable rate (what an operator would
    // configure), a burst of 50 ms worth, and 3x that rate offered on a fixed schedule.
    let admitted = sustainable * common.admission_share;
    let per_minute = (admitted * 60.0).floor().max(1.0);
    let burst = ((admitted / 20.0).ceil() as u64).max(1);
    let offered = sustainable * common.overload_factor;
    let svc =
        service::start_service(&ws.spec, Some((per_minute, burst)), "service-overload.log").await?;
    let mut open = client::run(
        svc.http,
        &workload("open"),
        Pace::Open(offered),
        common.overload_connections,
        duration,
    )
    .await?;
    receipts.append(&mut open.receipts);
    let rss_open = svc.stop().await?;

    let audit = lost::audit(&ws.spec.database_url, &ws.spec.master_key, &receipts).await?;
    // Phase 3, the service stopped: the same reports straight into the same store.
    let budget = duration.min(Duration::from_secs(5));
    let store_alone = ceiling::StoreAlone::open(&ws.spec.database_url, common.postgres).await?;
    let ceiling = store_alone.measure(&samples, None, budget).await?;
    // The same in the batches the closed loop's clients could fill at most.
    let closed_ceiling = store_alone
        .measure(&samples, Some(common.connections), budget)
        .await?;
    store_alone.close().await;
    ws.drop_database().await?;

    let ratio = sustainable / base.per_second;
    let peak_mib = rss_closed.max(rss_open) as f64 / 1024.0;
    let open_ok_p99 = ms(&open.ok, 0.99);
    let shed_p99 = ms(&open.shed, 0.99);
    println!("## Intake surge (incident declared; service mode: {mode})");
    println!("### Throughput: closed loop, no admission limit");
    table(&[
        ("accepted reports/s", format!("{sustainable:.0}")),
        (
            "ratio intake / baseline",
            format!(
                "{}  (target >= 0.5: {})",
                floor_2(ratio),
                verdict(ratio >= 0.5)
            ),
        ),
        (
            "accepted latency p50",
            format!("{:.2} ms", ms(&closed.ok, 0.5)),
        ),
        (
            "accepted latency p99",
            format!("{:.2} ms", ms(&closed.ok, 0.99)),
        ),
        (
            "accepted latency p99.9",
            format!("{:.2} ms", ms(&closed.ok, 0.999)),
        ),
        (
            "429 / 503",
            format!("{} / {}", closed.count(429), closed.count(503)),
        ),
        ("other answers", others(&closed, &[201, 429, 503])),
        ("transport errors", errors(&closed)),
    ]);
    if let Some(cpu) = &closed_cpu {
        table(&cpu.per_report_lines(
            closed.count(201),
            closed.sent(),
            base.cpu_per_answer_us,
            common.postgres,
        ));
    }
    println!(
        "### Overload: {offered:.0} reports/s offered open loop ({:.1}x), admission limit \
         {:.0}/s with a burst of {burst}",
        common.overload_factor,
        per_minute / 60.0
    );
    table(&[
        (
            "sent/s",
            format!(
                "{:.0}; {} of {} scheduled (send lag p50 {:.2} ms, p99 {:.2} ms)",
                open.per_second(open.sent()),
                open.sent(),
                open.scheduled,
                ms(&open.send_lag, 0.5),
                ms(&open.send_lag, 0.99)
            ),
        ),
        (
            "accepted reports/s",
            format!("{:.0}", open.per_second(open.count(201))),
        ),
        (
            "accepted latency p50",
            format!("{:.2} ms", ms(&open.ok, 0.5)),
        ),
        (
            "accepted latency p99",
            format!(
                "{open_ok_p99:.2} ms  (target < 100 ms: {})",
                verdict(open_ok_p99 < 100.0)
            ),
        ),
        (
            "accepted latency p99.9",
            format!("{:.2} ms", ms(&open.ok, 0.999)),
        ),
        (
            "  from actual send p50/p99",
            format!(
                "{:.2} / {:.2} ms",
                ms(&open.ok_from_send, 0.5),
                ms(&open.ok_from_send, 0.99)
            ),
        ),
        (
            "429 / 503",
            format!("{} / {}", open.count(429), open.count(503)),
        ),
        (
            "429/503 latency p99",
            if open.shed.is_empty() {
                "none shed".into()
            } else {
                format!(
                    "{shed_p99:.2} ms  (target < 5 ms: {})",
                    verdict(shed_p99 < 5.0)
                )
            },
        ),
        (
            "  from actual send p50/p99",
            format!(
                "{:.2} / {:.2} ms",
                ms(&open.shed_from_send, 0.5),
                ms(&open.shed_from_send, 0.99)
            ),
        ),
        ("other answers", others(&open, &[201, 429, 503])),
        ("transport errors", errors(&open)),
    ]);
    let store_share = ceiling.per_second / base.per_second;
    println!(
        "### The store alone: the same reports sealed and written straight into it, no HTTP \
         ({} batches of {}, {} writer(s), commits timed)",
        ceiling.reports / ceiling.batch,
        ceiling.batch,
        ceiling.writers
    );
    table(&[
        ("reports/s committed", format!("{:.0}", ceiling.per_second)),
        (
            "ratio store alone / baseline",
            format!(
                "{}{}",
                floor_2(store_share),
                if store_share < 0.5 {
                    "  (below 0.5: the intake target is out of reach on this store and machine)"
                } else {
                    ""
                }
            ),
        ),
        (
            "ratio intake / store alone",
            format!("{:.2}", sustainable / ceiling.per_second),
        ),
    ]);
    if closed_ceiling.batch < ceiling.batch {
        println!(
            "  in batches of {}, the most {} closed-loop clients can fill: {:.0} reports/s = \
             {:.2} of the baseline (intake reached {:.2} of it)",
            closed_ceiling.batch,
            common.connections,
            closed_ceiling.per_second,
            closed_ceiling.per_second / base.per_second,
            sustainable / closed_ceiling.per_second
        );
    }
    // With one writer its commit time is CPU time on the cores everything here shares.
    if ceiling.writers == 1 {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let shared = if cores == 1 {
            "1 core".to_owned()
        } else {
            format!("{cores} cores")
        };
        println!(
            "  highest intake / baseline these cores allow: {:.2}  (a service doing only the \
             baseline's HTTP work and the store's writes, sharing {shared} with the generator)",
            shared_core_bound(store_share, cores)
        );
    }
    println!("### Service");
    let mut lines = vec![(
        "peak RSS (VmHWM)",
        format!(
            "{peak_mib:.0} MiB  (target < 300 MiB: {})",
            verdict(peak_mib < 300.0)
        ),
    )];
    lines.extend(audit.lines());
    table(&lines);
    println!();
    Ok(audit.passed())
}

// ---- status ------------------------------------------------------------------------------

/// `reliefline_cache_requests_total{cache="status"}` as (hits, misses).
async fn status_cache_counts(svc: &Running) -> anyhow::Result<(f64, f64)> {
    let addr = svc.metrics.context("the service has no metrics listener")?;
    let reply = client::once(addr, Method::GET, "/metrics", &[], None).await?;
    let text = String::from_utf8_lossy(&reply.body);
    let value = |result: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("reliefline_cache_requests_total{"))
            .filter(|l| {
                l.contains(r#"cache="status""#) && l.contains(&format!(r#"result="{result}""#))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok((value("hit"), value("miss")))
}

/// The status scenario alternates baseline and status slices this many times: on a shared
/// machine the rate drifts by tens of percent within a minute, and measuring both in turn
/// makes each ratio compare like with like.
const STATUS_ROUNDS: u32 = 5;

async fn status(args: &StatusArgs) -> anyhow::Result<bool> {
    let common = &args.common;
    let ws = Workspace::new(common).await?;
    let base_dir = tempfile::Builder::new()
        .prefix("reliefline-baseline-")
        .tempdir()?;
    let baseline = service::start_baseline(base_dir.path()).await?;
    let base_load = baseline_workload();
    let svc = service::start_service(&ws.spec, None, "service-status.log").await?;
    let incident = declare_incident(&svc, &ws.spec.admin_token).await?;
    let mode = current_mode(&svc).await;

    // Which of the paths this build serves.
    let mut present = Vec::new();
    let mut notes = Vec::new();
    for path in &args.paths {
        let reply = client::once(svc.http, Method::GET, path, &[], None).await?;
        match reply.status {
            200..=299 => present.push(path.clone()),
            404 => notes.push(format!(
                "{path}: route not present in this build (404), skipped"
            )),
            other => notes.push(format!("{path}: answered {other}, skipped")),
        }
    }
    println!("## Status page surge (service mode: {mode})");
    for note in &notes {
        println!("note: {note}");
    }
    if present.is_empty() {
        baseline.stop().await?;
        svc.stop().await?;
        ws.drop_database().await?;
        println!("no path to measure\n");
        return Ok(true);
    }

    let readers = Workload::Get {
        paths: Arc::new(present.clone()),
    };
    let writers = Workload::Reports {
        samples: Arc::new(reports::pool(1024, 3, Some(&incident))),
        tag: format!("status-{}", service::random_hex(4)),
    };
    let warmup = Duration::from_secs(common.warmup);
    let conns = common.connections;
    client::run(baseline.http, &base_load, Pace::Closed, conns, warmup).await?;
    client::run(svc.http, &readers, Pace::Closed, conns, warmup).await?;
    let before = status_cache_counts(&svc).await?;
    let slice = Duration::from_secs(common.duration)
        .max(Duration::from_secs(u64::from(STATUS_ROUNDS)))
        / STATUS_ROUNDS;
    let mut rounds = Vec::new();
    let (mut base_answers, mut base_secs) = (0, 0.0);
    let (mut answers, mut secs) = (0, 0.0);
    let mut reads: Option<Tally> = None;
    let mut writes: Option<Tally> = None;
    for _ in 0..STATUS_ROUNDS {
        let base = client::run(baseline.http, &base_load, Pace::Closed, conns, slice).await?;
        let (read, write) = tokio::join!(
            client::run(svc.http, &readers, Pace::Closed, conns, slice),
            client::run(svc.http, &writers, Pace::Open(args.write_rate), 32, slice),
        );
        let (read, write) = (read?, write?);
        rounds.push(read.per_second(read.ok_count()) / base.per_second(base.count(201)));
        base_answers += base.count(201);
        base_secs += base.elapsed.as_secs_f64();
        answers += read.ok_count();
        secs += read.elapsed.as_secs_f64();
        reads = Some(Tally::combined(reads, read)?);
        writes = Some(Tally::combined(writes, write)?);
    }
    let (read, write) = (
        reads.context("no status round ran")?,
        writes.context("no status round ran")?,
    );
    let after = status_cache_counts(&svc).await?;
    baseline.stop().await?;
    let peak = svc.stop().await?;
    let audit = lost::audit(&ws.spec.database_url, &ws.spec.master_key, &write.receipts).await?;
    ws.drop_database().await?;

    let base_per_second = base_answers as f64 / base_secs.max(1e-9);
    let per_second = answers as f64 / secs.max(1e-9);
    let ratio = per_second / base_per_second;
    rounds.sort_by(f64::total_cmp);
    let spread = rounds
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect::<Vec<_>>()
        .join(" ");
    let (hits, misses) = (after.0 - before.0, after.1 - before.1);
    let hit_ratio = if hits + misses > 0.0 {
        hits / (hits + misses)
    } else {
        0.0
    };
    let mut lines = vec![
        ("paths refreshed", present.join(", ")),
        (
            "rounds",
            format!(
                "{STATUS_ROUNDS} x ({:.1} s baseline, then {:.1} s status)",
                slice.as_secs_f64(),
                slice.as_secs_f64()
            ),
        ),
        ("baseline answered 201/s", format!("{base_per_second:.0}")),
        ("answered 2xx/s", format!("{per_second:.0}")),
        (
            "ratio status / baseline",
            format!(
                "{}  (target >= 0.8: {})",
                floor_2(ratio),
                verdict(ratio >= 0.8)
            ),
        ),
        ("ratio per round, sorted", spread),
        ("latency p50", format!("{:.2} ms", ms(&read.ok, 0.5))),
        ("latency p99", format!("{:.2} ms", ms(&read.ok, 0.99))),
        ("other answers", others(&read, &[200])),
        ("transport errors", errors(&read)),
        (
            "status cache hit ratio",
            format!("{hit_ratio:.5} ({hits:.0} hits, {misses:.0} misses)"),
        ),
        ("store queries (= misses)", format!("{misses:.0}")),
        (
            "reports submitted meanwhile",
            format!(
                "{} accepted at {:.0}/s offered ({})",
                write.count(201),
                args.write_rate,
                others(&write, &[201])
            ),
        ),
        (
            "peak RSS (VmHWM)",
            format!("{:.0} MiB", peak as f64 / 1024.0),
        ),
    ];
    lines.extend(audit.lines());
    table(&lines);
    println!();
    Ok(audit.passed())
}

// ---- output ------------------------------------------------------------------------------

/// A quantile in milliseconds.
fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// The most intake could reach, as a ratio to the baseline, if each report cost only what a
/// baseline request costs (the generator's and the server's HTTP work, which keeps all `cores`
/// busy at the baseline's rate) plus its share of a single writer's commits (`store_share` is
/// the store alone's rate over the baseline's): `cores` are shared by both, and one writer
/// commits no faster than the store alone.
fn shared_core_bound(store_share: f64, cores: usize) -> f64 {
    let n = cores.max(1) as f64;
    store_share.min(n * store_share / (n * store_share + 1.0))
}

/// A ratio judged against a threshold, shown to two places rounded down: 0.497 is "0.49", so a
/// missed target never prints as the threshold itself.
fn floor_2(ratio: f64) -> String {
    // The small nudge keeps a ratio such as 0.29, stored as 0.28999…, from showing as 0.28.
    format!("{:.2}", ((ratio * 100.0) + 1e-9).floor() / 100.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// Answers other than `expected`, as `status×count`, or "none".
fn others(tally: &Tally, expected: &[u16]) -> String {
    let rest: Vec<String> = tally
        .statuses
        .iter()
        .filter(|(s, _)| !expected.contains(s))
        .map(|(s, n)| format!("{s}x{n}"))
        .collect();
    if rest.is_empty() {
        "none".into()
    } else {
        rest.join(", ")
    }
}

fn errors(tally: &Tally) -> String {
    match &tally.first_error {
        None => "0".into(),
        Some(first) => format!("{} (first: {first})", tally.transport_errors),
    }
}

fn table(rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in rows {
        println!("  {key:<width$}  {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::{floor_2, shared_core_bound};

    #[test]
    fn a_judged_ratio_never_shows_as_the_threshold_it_missed() {
        assert_eq!(floor_2(0.4999), "0.49");
        assert_eq!(floor_2(0.5), "0.50");
        assert_eq!(floor_2(0.29), "0.29");
        assert_eq!(floor_2(0.1049), "0.10");
        assert_eq!(floor_2(1.0), "1.00");
    }

    #[test]
    fn the_shared_core_bound_weighs_the_store_against_the_http_work() {
        // Two cores, a store committing 0.6 of the baseline's rate: 1.2 / 2.2.
        assert!((shared_core_bound(0.6, 2) - 0.545).abs() < 0.001);
        // A store as fast as the baseline on two cores leaves two thirds.
        assert!((shared_core_bound(1.0, 2) - 2.0 / 3.0).abs() < 1e-9);
        // A slow single writer is the limit itself.
        assert!((shared_core_bound(0.1, 64) - 0.1).abs() < 1e-9);
    }
}
