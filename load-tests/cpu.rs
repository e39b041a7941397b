//! CPU time of the processes under test, from the kernel's own accounting in `/proc`.
//!
//! Each closed-loop phase reports what it cost: the service's CPU per accepted report, split by
//! thread (runtime workers, SQLite's connection threads, the spool writers), against the
//! baseline server's per answer, the generator's own cost, how busy the cores were, and how
//! many times the service's threads gave up their CPU to wait (a hand-over to another thread,
//! an fsync, a timer) per report. Time spent waiting for a core is not counted as CPU, but the
//! machine's neighbours still move CPU per report by about a quarter between runs (shared
//! caches, the other hyperthread); the waits per report hardly move, so a change that removes a
//! hand-over shows there even when the rates cannot tell it from the noise. Cores left idle
//! say the closed loop waits on its commits rather than on the CPU.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::service::{Running, status_field};

/// The unit of the times in `/proc/PID/stat` (`USER_HZ`): 100 on every Linux architecture
/// this runs on, whatever the kernel's own tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// CPU a process had used when it was read: in all, and by each live thread.
#[derive(Debug)]
pub struct CpuTimes {
    /// Every thread's time, including threads that have exited (`/proc/PID/stat`).
    total: Duration,
    /// Live threads by id.
    threads: HashMap<u32, ThreadTimes>,
}

#[derive(Debug)]
struct ThreadTimes {
    name: String,
    /// Time on a CPU (`schedstat`, nanoseconds).
    ran: Duration,
    /// Times it gave up its CPU to wait (`voluntary_ctxt_switches`): each a hand-over to
    /// another thread, or a wait for I/O or a timer.
    waits: u64,
}

/// The CPU a process used between two readings.
#[derive(Debug)]
pub struct CpuUse {
    pub total: Duration,
    /// By thread name, threads of the same name together.
    pub by_name: BTreeMap<String, Duration>,
    /// Times the threads alive at the end gave up their CPU to wait.
    pub waits: u64,
}

impl CpuTimes {
    /// Read process `pid`'s CPU times; `None` if it is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let total = stat_cpu(&stat)?;
        let mut threads = HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let Ok(entry) = entry else { continue };
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread may exit between the listing and these reads: leave it out.
            let path = entry.path();
            let (Ok(name), Ok(sched), Ok(status)) = (
                std::fs::read_to_string(path.join("comm")),
                std::fs::read_to_string(path.join("schedstat")),
                std::fs::read_to_string(path.join("status")),
            ) else {
                continue;
            };
            if let (Some(ran), Some(waits)) = (
                schedstat_runtime(&sched),
                status_field(&status, "voluntary_ctxt_switches:"),
            ) {
                let name = name.trim().to_owned();
                threads.insert(tid, ThreadTimes { name, ran, waits });
            }
        }
        Some(Self { total, threads })
    }

    /// What was used since `earlier`. A thread started since counts from zero; a thread that
    /// exited since is in the total but in no name.
    pub fn since(&self, earlier: &Self) -> CpuUse {
        let mut by_name = BTreeMap::new();
        let mut waits = 0;
        for (tid, now) in &self.threads {
            let before = earlier.threads.get(tid).filter(|was| was.name == now.name);
            let ran = now
                .ran
                .saturating_sub(before.map_or(Duration::ZERO, |b| b.ran));
            *by_name.entry(now.name.clone()).or_insert(Duration::ZERO) += ran;
            waits += now.waits.saturating_sub(before.map_or(0, |b| b.waits));
        }
        CpuUse {
            total: self.total.saturating_sub(earlier.total),
            by_name,
            waits,
        }
    }
}

impl CpuUse {
    /// Microseconds of CPU per unit of `count` (answers, reports).
    pub fn micros_per(&self, count: u64) -> f64 {
        per(self.total, count)
    }

    /// Times a thread gave up its CPU to wait, per unit of `count`: hand-overs between threads
    /// and waits for I/O, which cost latency the CPU time does not show.
    pub fn waits_per(&self, count: u64) -> f64 {
        self.waits as f64 / count.max(1) as f64
    }

    /// The threads' shares per unit of `count`, largest first, as `name 12.3`; names below
    /// 1% of the total are gathered as `other`.
    pub fn breakdown_per(&self, count: u64) -> String {
        let mut named: Vec<(&str, Duration)> = self
            .by_name
            .iter()
            .map(|(name, t)| (name.as_str(), *t))
            .collect();
        named.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
        let floor = self.total / 100;
        let shown: Vec<_> = named.into_iter().filter(|(_, t)| *t >= floor).collect();
        let mut parts: Vec<String> = shown
            .iter()
            .map(|(name, t)| format!("{name} {:.1}", per(*t, count)))
            .collect();
        // The small names and the threads that exited during the phase.
        let listed: Duration = shown.iter().map(|(_, t)| *t).sum();
        let rest = self.total.saturating_sub(listed);
        if rest >= floor && !rest.is_zero() {
            parts.push(format!("other {:.1}", per(rest, count)));
        }
        parts.join(", ")
    }
}

/// The machine's CPU counters (`/proc/stat`), to tell how busy the cores were during a phase.
#[derive(Debug, Clone, Copy)]
pub struct MachineTicks {
    busy: u64,
    steal: u64,
    all: u64,
}

impl MachineTicks {
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        parse_machine(stat.lines().next()?)
    }

    /// Cores kept busy between `earlier` and now, and the share of time the host took for
    /// other guests (steal), as `1.93 of 2 busy, steal 0.4%`.
    pub fn since(&self, earlier: &Self, cores: usize) -> String {
        let all = self.all.saturating_sub(earlier.all).max(1) as f64;
        let busy = self.busy.saturating_sub(earlier.busy) as f64 / all * cores as f64;
        let steal = self.steal.saturating_sub(earlier.steal) as f64 / all * 100.0;
        format!("{busy:.2} of {cores} busy, steal {steal:.1}%")
    }
}

/// CPU readings around one measured phase: the process under test, the generator (this
/// process) and the whole machine.
pub struct CpuWatch {
    target: Option<CpuTimes>,
    generator: Option<CpuTimes>,
    machine: Option<MachineTicks>,
}

/// What one phase cost in CPU.
pub struct PhaseCpu {
    pub target: CpuUse,
    pub generator: CpuUse,
    /// How busy the cores were, as [`MachineTicks::since`] words it.
    pub machine: String,
}

impl CpuWatch {
    pub fn start(target: &Running) -> Self {
        Self {
            target: target.cpu(),
            generator: CpuTimes::of(std::process::id()),
            machine: MachineTicks::read(),
        }
    }

    /// `None` where `/proc` could not be read (the figures are then left out, not guessed).
    pub fn finish(self, target: &Running) -> Option<PhaseCpu> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Some(PhaseCpu {
            target: target.cpu()?.since(self.target.as_ref()?),
            generator: CpuTimes::of(std::process::id())?.since(self.generator.as_ref()?),
            machine: MachineTicks::read()?.since(self.machine.as_ref()?, cores),
        })
    }
}

impl PhaseCpu {
    /// The service's CPU per accepted report against the baseline server's per answer
    /// (`baseline_per_answer_us`), by thread, and the generator's per request sent. On PostgreSQL the database's own
    /// processes do part of the store's work, which the service's figure leaves out.
    pub fn per_report_lines(
        &self,
        accepted: u64,
        sent: u64,
        baseline_per_answer_us: Option<f64>,
        postgres: bool,
    ) -> Vec<(&'static str, String)> {
        let per_report = self.target.micros_per(accepted);
        let mut against = baseline_per_answer_us.map_or(String::new(), |b| {
            format!(" = {:.1}x the baseline server's per answer", per_report / b)
        });
        if postgres {
            against.push_str(" (PostgreSQL's own processes not counted)");
        }
        vec![
            (
                "service CPU per accepted report",
                format!("{per_report:.1} µs{against}"),
            ),
            (
                "  by thread, µs per report",
                self.target.breakdown_per(accepted),
            ),
            (
                "  waits of its threads per report",
                format!("{:.1}", self.target.waits_per(accepted)),
            ),
            (
                "generator CPU per request",
                format!("{:.1} µs", self.generator.micros_per(sent)),
            ),
            ("cores during the run", self.machine.clone()),
        ]
    }
}

fn per(t: Duration, count: u64) -> f64 {
    t.as_secs_f64() * 1e6 / count.max(1) as f64
}

/// utime + stime of a `/proc/PID/stat` line. The name in parentheses may hold spaces and
/// parentheses itself, so the fields are counted from after the last `)`.
fn stat_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; the rest starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// The first field of `schedstat`: nanoseconds spent on a CPU.
fn schedstat_runtime(sched: &str) -> Option<Duration> {
    sched
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

/// `cpu  user nice system idle iowait irq softirq steal …`: busy is all but idle, iowait and
/// steal.
fn parse_machine(line: &str) -> Option<MachineTicks> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values.try_into().ok()?;
    Some(MachineTicks {
        busy: user + nice + system + irq + softirq,
        steal,
        all: user + nice + system + idle + iowait + irq + softirq + steal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 1";
        assert_eq!(stat_cpu(line), Some(Duration::from_millis(3250)));
    }

    #[test]
    fn reads_the_machine_counters() {
        let t = parse_machine("cpu  100 5 50 800 20 3 2 20 0 0").unwrap();
        assert_eq!((t.busy, t.steal, t.all), (160, 20, 1000));
        assert!(parse_machine("cpu0 1 2 3 4 5 6 7 8").is_none());
        let later = MachineTicks {
            busy: t.busy + 150,
            steal: t.steal + 10,
            all: t.all + 200,
        };
        assert_eq!(later.since(&t, 2), "1.50 of 2 busy, steal 5.0%");
    }

    #[test]
    fn a_busy_thread_of_this_process_is_counted_under_its_name() {
        let before = CpuTimes::of(std::process::id()).unwrap();
        let spin = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(|| {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while started.elapsed() < Duration::from_millis(200) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
                x
            })
            .unwrap();
        // Read while the thread still lives, then again after: its time is in the total.
        std::thread::sleep(Duration::from_millis(150));
        let during = CpuTimes::of(std::process::id()).unwrap().since(&before);
        spin.join().unwrap();
        let spun = during
            .by_name
            .get("cpu-test-spin")
            .copied()
            .unwrap_or_default();
        assert!(spun > Duration::ZERO, "{during:?}");
        // The test's own thread slept once at least.
        assert!(during.waits >= 1, "{during:?}");
        let after = CpuTimes::of(std::process::id()).unwrap().since(&before);
        assert!(after.total >= during.total, "{after:?} {during:?}");
        assert!(!after.by_name.contains_key("cpu-test-spin"), "{after:?}");
    }

    #[test]
    fn the_breakdown_names_the_large_threads_and_gathers_the_rest() {
        let usage = CpuUse {
            total: Duration::from_millis(1000),
            by_name: BTreeMap::from([
                ("tokio-rt-worker".to_owned(), Duration::from_millis(600)),
                ("sqlx-sqlite-wor".to_owned(), Duration::from_millis(300)),
                ("tiny".to_owned(), Duration::from_millis(5)),
            ]),
            waits: 3_000_000,
        };
        // 95 ms unaccounted for (exited threads) plus 5 ms of small ones, over a million
        // reports.
        assert_eq!(
            usage.breakdown_per(1_000_000),
            "tokio-rt-worker 0.6, sqlx-sqlite-wor 0.3, other 0.1"
        );
        assert!((usage.micros_per(1_000_000) - 1.0).abs() < 1e-9);
        assert!((usage.waits_per(1_000_000) - 3.0).abs() < 1e-9);
    }
}
