//! Processes under test: the release service binary (and the baseline server), each started
//! on free loopback ports, waited for until ready, watched for memory, stopped with SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hyper::Method;
use tokio::process::{Child, Command};

use crate::client;
use crate::cpu::CpuTimes;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// A loopback port nobody listens on right now.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr()?)
}

/// Random hex, `bytes` long before encoding.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// What every service start of one run shares: binary, database, keys.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub bin: PathBuf,
    pub work_dir: PathBuf,
    pub database_url: String,
    pub master_key: String,
    pub admin_token: String,
}

/// A running process with its peak memory watched.
pub struct Running {
    child: Child,
    pid: u32,
    pub http: SocketAddr,
    pub metrics: Option<SocketAddr>,
    log: PathBuf,
    peak_rss_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

/// The service, configured for a benchmark: no per-address report limit, the admission limit
/// `(per_minute, burst)` or none, surge detection off (the scenario declares its incident).
pub async fn start_service(
    spec: &ServiceSpec,
    admission: Option<(f64, u64)>,
    log_name: &str,
) -> anyhow::Result<Running> {
    start_service_with(spec, admission, log_name, &[]).await
}

/// [`start_service`] with more configuration by environment (`RELIEFLINE_…` pairs).
pub async fn start_service_with(
    spec: &ServiceSpec,
    admission: Option<(f64, u64)>,
    log_name: &str,
    env: &[(String, String)],
) -> anyhow::Result<Running> {
    let http = free_addr()?;
    let metrics = free_addr()?;
    let mut cmd = Command::new(&spec.bin);
    cmd.arg("serve")
        .current_dir(&spec.work_dir)
        .env("RELIEFLINE_HTTP__LISTEN", http.to_string())
        .env("RELIEFLINE_HTTP__PUBLIC_BASE_URL", format!("http://{http}"))
        .env("RELIEFLINE_METRICS__LISTEN", metrics.to_string())
        .env("RELIEFLINE_DATABASE__URL", &spec.database_url)
        .env("RELIEFLINE_SECURITY__MASTER_KEY", &spec.master_key)
        .env("RELIEFLINE_ADMIN__TOKEN", &spec.admin_token)
        .env("RELIEFLINE_LOG__FORMAT", "json")
        .env("RELIEFLINE_INCIDENT__SURGE_THRESHOLD_PER_MINUTE", "0");
    let (per_minute, burst) = admission.unwrap_or((0.0, 1));
    for profile in ["NORMAL", "INCIDENT"] {
        // Every client of the benchmark is 127.0.0.1: the per-address limit would measure
        // itself, so it is off; admission (all clients together) is what sheds load.
        cmd.env(
            format!("RELIEFLINE_RATE_LIMITS__{profile}__REPORT_IP__PER_MINUTE"),
            "0",
        )
        .env(
            format!("RELIEFLINE_RATE_LIMITS__{profile}__ADMISSION__PER_MINUTE"),
            per_minute.to_string(),
        )
        .env(
            format!("RELIEFLINE_RATE_LIMITS__{profile}__ADMISSION__BURST"),
            burst.to_string(),
        );
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    let running = spawn(cmd, &spec.work_dir, log_name, http, Some(metrics)).await?;
    running.wait_ready("/readyz").await?;
    Ok(running)
}

/// The baseline server: this same program with the `baseline` command.
pub async fn start_baseline(work_dir: &Path) -> anyhow::Result<Running> {
    let http = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe().context("own executable")?);
    cmd.arg("baseline").arg("--listen").arg(http.to_string());
    let running = spawn(cmd, work_dir, "baseline.log", http, None).await?;
    running.wait_ready("/healthz").await?;
    Ok(running)
}

/// The SMTP sink and fake SMS gateway (`sinks` command); `http` is the gateway's address.
pub async fn start_sinks(work_dir: &Path, smtp: SocketAddr) -> anyhow::Result<Running> {
    let http = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe().context("own executable")?);
    cmd.arg("sinks")
        .arg("--smtp")
        .arg(smtp.to_string())
        .arg("--sms")
        .arg(http.to_string());
    let running = spawn(cmd, work_dir, "sinks.log", http, None).await?;
    running.wait_ready("/healthz").await?;
    Ok(running)
}

async fn spawn(
    mut cmd: Command,
    work_dir: &Path,
    log_name: &str,
    http: SocketAddr,
    metrics: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    let log = work_dir.join(log_name);
    let out = std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
    let err = out.try_clone()?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .context("start process")?;
    let pid = child.id().context("process exited at once")?;
    let peak_rss_kib = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = Arc::clone(&peak_rss_kib);
        tokio::spawn(async move {
            // VmHWM is the kernel's own high-water mark; sampling keeps the last value seen
            // should the process be gone before it is read at the end.
            while let Some(kib) = proc_status_kib(pid, "VmHWM:") {
                peak.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    Ok(Running {
        child,
        pid,
        http,
        metrics,
        log,
        peak_rss_kib,
        sampler,
    })
}

/// A `kB` field of `/proc/PID/status`.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&status, field)
}

/// The number of a `status` file's field, such as `VmHWM:` (`1234 kB`) or
/// `voluntary_ctxt_switches:` (`56`).
pub fn status_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

impl Running {
    async fn wait_ready(&self, path: &str) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(reply) = client::once(self.http, Method::GET, path, &[], None).await
                && reply.status == 200
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > until {
                bail!(
                    "not ready within {READY_TIMEOUT:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            if proc_status_kib(self.pid, "VmRSS:").is_none() {
                bail!(
                    "the process exited while starting; its log:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The CPU it has used so far; `None` once it is gone.
    pub fn cpu(&self) -> Option<CpuTimes> {
        CpuTimes::of(self.pid)
    }

    /// The highest resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        if let Some(kib) = proc_status_kib(self.pid, "VmHWM:") {
            self.peak_rss_kib.fetch_max(kib, Ordering::Relaxed);
        }
        self.peak_rss_kib.load(Ordering::Relaxed)
    }

    /// The last lines of its output, to explain a failure.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then wait for an orderly exit. Returns the peak RSS in KiB.
    pub async fn stop(mut self) -> anyhow::Result<u64> {
        let peak = self.peak_rss_kib();
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        let exit = tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("still running {STOP_TIMEOUT:?} after SIGTERM"))??;
        self.sampler.abort();
        // The baseline server dies of SIGTERM by design; the service must exit cleanly.
        if self.metrics.is_some() && !exit.success() {
            bail!(
                "the service exited with {exit}; its log:\n{}",
                self.log_tail()
            );
        }
        Ok(peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_fields_of_a_live_process() {
        let me = std::process::id();
        let hwm = proc_status_kib(me, "VmHWM:").expect("VmHWM");
        let rss = proc_status_kib(me, "VmRSS:").expect("VmRSS");
        assert!(hwm >= rss && rss > 0, "VmHWM {hwm} kB, VmRSS {rss} kB");
        assert_eq!(proc_status_kib(me, "NoSuchField:"), None);
    }
}
