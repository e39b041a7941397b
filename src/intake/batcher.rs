//! Group commit: handlers hand their report to a bounded queue and wait; a collector drains the
//! queue into batches (by size, and by a short wait) and commits each batch in one transaction.
//! A handler hears "committed" only after its batch's COMMIT returned.
//!
//! One fsync then acknowledges a whole batch, which is what lifts intake from a few thousand
//! reports/s (one transaction each) to tens of thousands. When a batch fails, its reports are
//! retried one by one so a single bad row cannot sink the others.
//!
//! The queue is bounded twice: by count (`queue_capacity`) and by the time a new report would
//! wait in it. The collector measures how fast the store commits; a report that would find more
//! ahead of it than the store commits in `max_queue_delay` is refused at once (`503` with
//! `Retry-After`) rather than queued, so under overload the reports that are taken are still
//! answered quickly and the rest are told to come back at once, not after a long wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::Receipt;
use crate::notify::handover::{Handover, Reserved};
use crate::store::{Conflict, DynStore, ReportWrite, StoreError};
use crate::telemetry::names;

/// How many times a report whose fresh receipt collided is given a new one.
const RECEIPT_RETRIES: usize = 3;

/// A batch stops waiting for company once no report has arrived for this long (the runtime's
/// timers tick in milliseconds). Under a surge reports arrive far closer together, so batches
/// still grow for the whole batch wait; when a burst of submissions is over, its batch is
/// committed at once instead of idling out the wait.
const ARRIVAL_GAP: Duration = Duration::from_millis(1);

/// Why a report was not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The queue is full: answer 503 at once.
    #[error("intake queue is full")]
    QueueFull,
    /// The service is shutting down and no longer takes reports.
    #[error("intake is shutting down")]
    ShuttingDown,
    /// Another report already holds this `Idempotency-Key`.
    #[error("idempotency key already used")]
    IdempotencyKeyTaken,
    /// The report names an incident that does not exist.
    #[error("unknown incident")]
    UnknownIncident,
    /// The store did not answer; nothing of this batch was committed.
    #[error("store unavailable")]
    StoreUnavailable,
    #[error(transparent)]
    Store(StoreError),
}

/// What the handler learns once its report is durable.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The receipt actually stored (a fresh one if the first collided).
    pub receipt: Receipt,
}

/// Called with the number of reports after every successful commit (surge detection).
pub type CommitObserver = Arc<dyn Fn(usize) + Send + Sync>;

struct Job {
    write: ReportWrite,
    reply: oneshot::Sender<Result<Committed, CommitError>>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatcherOptions {
    pub queue_capacity: usize,
    pub batch_max: usize,
    pub batch_wait: Duration,
    /// Batches committed concurrently: 1 on SQLite, a few on PostgreSQL.
    pub writers: usize,
    /// The longest a new report should wait in the queue for its commit; beyond it, refuse.
    pub max_queue_delay: Duration,
}

/// The handlers' side of the group-commit queue. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Job>,
    batch_wait_us: Arc<AtomicU64>,
    pace: Arc<Pace>,
    /// Reports handed to the queue whose handlers still wait for their answer.
    waiting: Arc<AtomicUsize>,
}

/// Counts one waiting handler for as long as it lives (also when its request is dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many reports the store commits per second, learnt from the commits themselves, and so
/// how deep the queue may grow before a newcomer would wait longer than allowed.
#[derive(Debug)]
pub struct Pace {
    /// Reports per second of commit time (smoothed), times the parallel writers; 0 = unknown.
    rate_milli: AtomicU64,
    writers: u64,
    max_delay: Duration,
}

impl Pace {
    /// Below this depth nothing is refused for delay: a batch's worth always fits, and an
    /// estimate from a few tiny commits must not turn the first burst away.
    pub const MIN_DEPTH: usize = 256;

    pub fn new(writers: usize, max_delay: Duration) -> Self {
        Self {
            rate_milli: AtomicU64::new(0),
            writers: writers.max(1) as u64,
            max_delay,
        }
    }

    /// A commit of `rows` reports took `took`.
    pub fn observe(&self, rows: usize, took: Duration) {
        let secs = took.as_secs_f64().max(1e-6);
        let sample = rows as f64 / secs * 1000.0;
        let old = self.rate_milli.load(Ordering::Relaxed) as f64;
        // A quarter of each new sample: follows a changing store within a few commits, while
        // one odd commit moves the estimate little.
        let new = if old == 0.0 {
            sample
        } else {
            old + (sample - old) / 4.0
        };
        self.rate_milli.store(new as u64, Ordering::Relaxed);
    }

    /// Reports per second the writers commit together (0 until a commit was seen).
    pub fn rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0 * self.writers as f64
    }

    /// The deepest queue a newcomer may join.
    pub fn max_depth(&self) -> usize {
        let rate = self.rate();
        if rate == 0.0 || self.max_delay.is_zero() {
            return usize::MAX;
        }
        ((rate * self.max_delay.as_secs_f64()) as usize).max(Self::MIN_DEPTH)
    }
}

impl Batcher {
    /// Start the collector on `tasks`. It stops taking reports when `shutdown` fires, commits
    /// everything already queued, and then exits. With a `handover`, each batch's notifications
    /// are written leased to the local dispatcher where it has room, and queued there after the
    /// commit.
    pub fn start(
        store: DynStore,
        options: BatcherOptions,
        observer: Option<CommitObserver>,
        handover: Option<Handover>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(options.queue_capacity);
        let batch_wait_us = Arc::new(AtomicU64::new(micros(options.batch_wait)));
        let pace = Arc::new(Pace::new(options.writers, options.max_queue_delay));
        let collector = Collector {
            pace: Arc::clone(&pace),
            store,
            receiver,
            batch_max: options.batch_max,
            batch_wait_us: Arc::clone(&batch_wait_us),
            writers: Arc::new(Semaphore::new(options.writers.max(1))),
            observer,
            handover,
            tasks: tasks.clone(),
        };
        tasks.spawn(collector.run(shutdown));
        Self {
            queue,
            batch_wait_us,
            pace,
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queue a report and wait until it is committed (or refused).
    pub async fn submit(&self, write: ReportWrite) -> Result<Committed, CommitError> {
        if self.depth() >= self.pace.max_depth() {
            return Err(CommitError::QueueFull);
        }
        let (reply, answer) = oneshot::channel();
        let _waiting = Waiting::enter(&self.waiting);
        self.queue
            .try_send(Job { write, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommitError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => CommitError::ShuttingDown,
            })?;
        metrics::gauge!(names::INTAKE_QUEUE_DEPTH).set(self.depth() as f64);
        // The collector answers every job it takes, also on shutdown; a dropped sender means
        // it stopped before taking this one.
        answer.await.unwrap_or(Err(CommitError::ShuttingDown))
    }

    /// Reports waiting for a commit.
    pub fn depth(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Reports queued or being committed: the queue's depth plus what the collector holds.
    pub fn in_flight(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.queue.max_capacity()
    }

    /// Change how long a batch waits for company; takes effect with the next batch.
    pub fn set_batch_wait(&self, wait: Duration) {
        self.batch_wait_us.store(micros(wait), Ordering::Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

struct Collector {
    pace: Arc<Pace>,
    store: DynStore,
    receiver: mpsc::Receiver<Job>,
    batch_max: usize,
    batch_wait_us: Arc<AtomicU64>,
    writers: Arc<Semaphore>,
    observer: Option<CommitObserver>,
    handover: Option<Handover>,
    tasks: TaskTracker,
}

impl Collector {
    async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                job = self.receiver.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                () = shutdown.cancelled() => break,
            };
            let wait = Duration::from_micros(self.batch_wait_us.load(Ordering::Relaxed));
            if !self.commit_from(first, wait).await {
                break;
            }
        }
        // Shutdown: refuse new reports, commit the ones already accepted into the queue.
        self.receiver.close();
        while let Some(first) = self.receiver.recv().await {
            if !self.commit_from(first, Duration::ZERO).await {
                break;
            }
        }
        // Commits still running are tasks on the same tracker; shutdown waits for them.
    }

    /// Once a writer is free, commit `first` and what queued behind it (waiting up to `wait`
    /// for more). `false` if no writer can ever be had.
    async fn commit_from(&mut self, first: Job, wait: Duration) -> bool {
        let next = batch_for_writer(
            &mut self.receiver,
            first,
            &self.writers,
            self.batch_max,
            wait,
        )
        .await;
        let Some((batch, permit)) = next else {
            return false;
        };
        self.dispatch(batch, permit);
        true
    }

    /// Commit on the writer `permit` holds. While every writer is busy the queue keeps filling,
    /// so the next batch is larger: throughput grows with load instead of latency.
    fn dispatch(&self, batch: Vec<Job>, permit: OwnedSemaphorePermit) {
        metrics::gauge!(names::INTAKE_QUEUE_DEPTH)
            .set((self.receiver.max_capacity() - self.receiver.capacity()) as f64);
        let store = Arc::clone(&self.store);
        let observer = self.observer.clone();
        let pace = Arc::clone(&self.pace);
        let handover = self.handover.clone();
        self.tasks.spawn(async move {
            commit(&store, batch, observer.as_ref(), &pace, handover.as_ref()).await;
            drop(permit);
        });
    }
}

/// Wait for a free writer, then take `first` and what queued up behind it (see [`fill`]).
///
/// The batch is formed only once it can be committed: whatever arrived during the previous
/// commit goes into this one. A batch formed first would wait for the writer with the latest
/// arrivals left for the commit after it. `None` only if the writers' semaphore was closed,
/// which it never is.
async fn batch_for_writer<T>(
    receiver: &mut mpsc::Receiver<T>,
    first: T,
    writers: &Arc<Semaphore>,
    max: usize,
    wait: Duration,
) -> Option<(Vec<T>, OwnedSemaphorePermit)> {
    let permit = Arc::clone(writers).acquire_owned().await.ok()?;
    Some((fill(receiver, first, max, wait, ARRIVAL_GAP).await, permit))
}

/// Take what is already queued, then wait for more: until `wait` has passed since the first,
/// or until they stop coming (none for `gap`), which ends the wait early when everyone who was
/// about to submit has done so.
async fn fill<T>(
    receiver: &mut mpsc::Receiver<T>,
    first: T,
    max: usize,
    wait: Duration,
    gap: Duration,
) -> Vec<T> {
    let mut batch = Vec::with_capacity(max.min(1024));
    batch.push(first);
    let deadline = tokio::time::Instant::now() + wait;
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) if wait.is_zero() => break,
            Err(_) => {
                let until = deadline.min(tokio::time::Instant::now() + gap);
                match tokio::time::timeout_at(until, receiver.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    batch
}

async fn commit(
    store: &DynStore,
    batch: Vec<Job>,
    observer: Option<&CommitObserver>,
    pace: &Pace,
    handover: Option<&Handover>,
) {
    let size = batch.len();
    metrics::histogram!(names::INTAKE_BATCH_SIZE).record(size as f64);
    let (mut writes, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|j| (j.write, j.reply)).unzip();
    let mut reserved: Vec<Vec<Reserved>> = match handover {
        Some(handover) => handover.lease(&mut writes),
        None => Vec::new(),
    };
    reserved.resize_with(size, Vec::new);
    let started = Instant::now();
    let result = store.insert_reports(&writes).await;
    let took = started.elapsed();
    metrics::histogram!(names::INTAKE_COMMIT_DURATION).record(took.as_secs_f64());
    match result {
        Ok(()) => {
            pace.observe(size, took);
            if let Some(observe) = observer {
                observe(size);
            }
            for ((write, reply), room) in writes.into_iter().zip(replies).zip(reserved) {
                drop(reply.send(Ok(Committed {
                    receipt: write.report.receipt,
                })));
                Handover::hand_over(write.outbox, room);
            }
        }
        // The store is away: every row would fail alike, so tell everyone at once.
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, size, "batch not committed: store unavailable");
            for reply in replies {
                drop(reply.send(Err(CommitError::StoreUnavailable)));
            }
        }
        Err(e) => {
            if size > 1 {
                tracing::info!(error = %e, size, "batch failed; committing its reports one by one");
            }
            let mut committed = 0;
            for ((mut write, reply), room) in writes.into_iter().zip(replies).zip(reserved) {
                let outcome = commit_one(store, &mut write).await;
                if outcome.is_ok() {
                    committed += 1;
                    Handover::hand_over(write.outbox, room);
                }
                drop(reply.send(outcome));
            }
            if let (Some(observe), true) = (observer, committed > 0) {
                observe(committed);
            }
        }
    }
}

/// Commit a single report, replacing its receipt if the random one happened to collide.
async fn commit_one(store: &DynStore, write: &mut ReportWrite) -> Result<Committed, CommitError> {
    for _ in 0..=RECEIPT_RETRIES {
        match store.insert_reports(std::slice::from_ref(write)).await {
            Ok(()) => {
                return Ok(Committed {
                    receipt: write.report.receipt.clone(),
                });
            }
            Err(StoreError::Conflict(Conflict::Receipt)) => {
                write.replace_receipt(Receipt::generate());
            }
            Err(StoreError::Conflict(Conflict::IdempotencyKey)) => {
                return Err(CommitError::IdempotencyKeyTaken);
            }
            Err(StoreError::MissingReference) => return Err(CommitError::UnknownIncident),
            Err(e) if e.is_unavailable() => return Err(CommitError::StoreUnavailable),
            Err(e) => return Err(CommitError::Store(e)),
        }
    }
    Err(CommitError::Store(StoreError::Other(anyhow::anyhow!(
        "receipt collided {RECEIPT_RETRIES} times in a row"
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Virtual time (paused): the elapsed times below are exact, not measured on a busy machine.
    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_when_reports_stop_coming() {
        let (tx, mut rx) = mpsc::channel(16);
        for n in 1..=3 {
            tx.try_send(n).unwrap();
        }
        let started = tokio::time::Instant::now();
        let batch = fill(&mut rx, 0, 100, Duration::from_secs(10), ARRIVAL_GAP).await;
        assert_eq!(batch, [0, 1, 2, 3]);
        assert_eq!(
            started.elapsed(),
            ARRIVAL_GAP,
            "not the whole 10 s batch wait"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_fills_the_batch_for_the_whole_wait() {
        let (tx, mut rx) = mpsc::channel(1024);
        let (wait, gap, every) = (
            Duration::from_millis(20),
            Duration::from_millis(5),
            Duration::from_millis(3),
        );
        let sender = tokio::spawn(async move {
            for n in 1..100 {
                tokio::time::sleep(every).await;
                if tx.send(n).await.is_err() {
                    break;
                }
            }
        });
        let started = tokio::time::Instant::now();
        let batch = fill(&mut rx, 0, 1_000, wait, gap).await;
        assert_eq!(started.elapsed(), wait);
        // One every 3 ms until 20 ms, after the first: none was ever 5 ms away.
        assert_eq!(batch, [0, 1, 2, 3, 4, 5, 6]);
        drop(rx);
        sender.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_or_no_wait_closes_at_once() {
        let (tx, mut rx) = mpsc::channel(16);
        for n in 1..=5 {
            tx.try_send(n).unwrap();
        }
        let started = tokio::time::Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(fill(&mut rx, 0, 3, second, ARRIVAL_GAP).await, [0, 1, 2]);
        assert_eq!(
            fill(&mut rx, 9, 100, Duration::ZERO, second).await,
            [9, 3, 4, 5]
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_batch_takes_everything_that_queued_while_the_writer_was_busy() {
        let writers = Arc::new(Semaphore::new(1));
        let committing = Arc::clone(&writers).acquire_owned().await.unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        tx.try_send(1).unwrap();
        let first = rx.recv().await.unwrap();
        let next = tokio::spawn(async move {
            let (batch, _permit) = batch_for_writer(&mut rx, first, &writers, 100, Duration::ZERO)
                .await
                .unwrap();
            batch
        });
        // Let the collector reach its wait for the writer before the others arrive.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!next.is_finished(), "no batch while the writer is busy");
        tx.try_send(2).unwrap();
        tx.try_send(3).unwrap();
        drop(committing);
        assert_eq!(next.await.unwrap(), [1, 2, 3]);
    }

    #[test]
    fn no_delay_bound_before_the_first_commit_or_when_off() {
        assert_eq!(
            Pace::new(1, Duration::from_millis(50)).max_depth(),
            usize::MAX
        );
        let off = Pace::new(1, Duration::ZERO);
        off.observe(1_000, Duration::from_millis(100));
        assert_eq!(off.max_depth(), usize::MAX);
    }

    #[test]
    fn depth_follows_the_measured_commit_rate() {
        let pace = Pace::new(1, Duration::from_millis(50));
        // 10,000 reports/s: 50 ms is 500 reports.
        pace.observe(100, Duration::from_millis(10));
        assert_eq!(pace.max_depth(), 500);
        // Two parallel writers commit twice as much in the same time.
        let two = Pace::new(2, Duration::from_millis(50));
        two.observe(100, Duration::from_millis(10));
        assert_eq!(two.max_depth(), 1_000);
    }

    #[test]
    fn a_slower_store_shrinks_the_queue_gradually_down_to_the_floor() {
        let pace = Pace::new(1, Duration::from_millis(50));
        pace.observe(100, Duration::from_millis(10));
        // One commit at a tenth of the speed moves the estimate a quarter of the way.
        pace.observe(100, Duration::from_millis(100));
        assert_eq!(pace.max_depth(), 387);
        for _ in 0..40 {
            pace.observe(100, Duration::from_millis(100));
        }
        assert_eq!(pace.max_depth(), Pace::MIN_DEPTH);
    }
}
