//! The outbox dispatcher: claim due messages with a lease (committed), send each outside any
//! transaction under a timeout, then record the outcome.
//!
//! It runs as a pipeline: per channel, a claimer keeps a bounded queue of leased messages and
//! up to `concurrency` sends run from it; one recorder commits the outcomes of whatever has
//! finished in a single set-based statement while the sends go on. Intake puts receipt
//! confirmations it wrote already leased straight into the same queues ([`Handover`]).
//!
//! Transient failures are retried with exponential backoff and jitter (never sooner than a
//! gateway's `Retry-After`); permanent ones are not; a message out of attempts is dead-lettered
//! for staff to requeue. Per-channel token buckets keep sends under the gateways' contracted
//! rates. On shutdown it stops claiming, lets sends in flight finish, and hands back the
//! messages it had claimed but not started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use governor::{DefaultDirectRateLimiter, RateLimiter};
use lettre::message::Mailbox;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::config::{DispatcherConfig, NotifyConfig};
use super::email::EmailTransport;
use super::euckr;
use super::handover::{Claimed, Handover};
use super::render::{RenderSettings, Renderer};
use super::sms::{SmsMessage, SmsTransport};
use super::transport::{Delivered, SendError};
use crate::crypto::Keys;
use crate::incident::Clock;
use crate::store::{DynStore, MessageChannel, OutboxMessage, Outcome, StoreResult, Timestamp};
use crate::telemetry::names;
use crate::wakeup::Wakeup;

/// Most outcomes recorded in one transaction.
const RECORD_GROUP_MAX: usize = 256;

/// How long the recorder waits for more outcomes to join a group before committing it.
const RECORD_LINGER: Duration = Duration::from_millis(20);

/// Tries at recording one group of outcomes, and the wait before the first retry (then longer).
const RECORD_ATTEMPTS: u32 = 5;
const RECORD_RETRY_WAIT: Duration = Duration::from_millis(200);

/// The longest `Retry-After` honoured; a gateway asking for more is retried after this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 3600);

/// What one round did, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
    pub dead: usize,
    /// Claimed but handed back unsent: the dispatcher is stopping, or the rate limit held the
    /// message past half its lease.
    pub released: usize,
    /// The outcome could not be recorded: the lease had lapsed and another dispatcher took it.
    pub lost: usize,
}

impl Round {
    fn count(&mut self, outcome: &Outcome, channel: MessageChannel) {
        let label = match outcome {
            Outcome::Sent { .. } => {
                self.sent += 1;
                "sent"
            }
            Outcome::Retry { .. } => {
                self.retried += 1;
                "retry"
            }
            Outcome::Failed { .. } => {
                self.failed += 1;
                "failed"
            }
            Outcome::Dead { .. } => {
                self.dead += 1;
                "dead"
            }
            // Not an attempt: nothing to count as a notification outcome.
            Outcome::Released => {
                self.released += 1;
                return;
            }
        };
        metrics::counter!(
            names::NOTIFICATIONS,
            "channel" => channel_label(channel),
            "outcome" => label
        )
        .increment(1);
    }
}

pub struct Dispatcher {
    store: DynStore,
    keys: Arc<Keys>,
    renderer: Renderer,
    email: EmailTransport,
    sms: SmsTransport,
    from: Mailbox,
    sms_sender: String,
    config: DispatcherConfig,
    owner: String,
    clock: Clock,
    email_limit: Option<DefaultDirectRateLimiter>,
    sms_limit: Option<DefaultDirectRateLimiter>,
    /// Woken when this process commits messages; each lane polls as well.
    due: Wakeup,
    /// Each channel's queue of claimed messages: the claimer and intake's [`Handover`] fill it,
    /// the lane's senders take from it.
    email_queue: LaneQueue,
    sms_queue: LaneQueue,
    /// Set once the lanes run: only then does the [`Handover`] lease messages to them. When they
    /// stop, their queues close and take nothing more.
    open: Arc<AtomicBool>,
}

struct LaneQueue {
    /// Most messages claimed at once, held in the queue, and sent at once: under a rate limit,
    /// what the limit lets out in a quarter of a lease (see [`lane_size`]).
    size: usize,
    sender: mpsc::Sender<Claimed>,
    /// Until [`Dispatcher::run`] takes it.
    receiver: Mutex<Option<mpsc::Receiver<Claimed>>>,
}

impl LaneQueue {
    fn new(size: usize) -> Self {
        let (sender, receiver) = mpsc::channel(size.max(1));
        Self {
            size,
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

/// A claimed message after its delivery attempt, waiting to be recorded.
struct Finished {
    id: Uuid,
    channel: MessageChannel,
    outcome: Outcome,
}

impl Dispatcher {
    pub fn new(
        config: &NotifyConfig,
        public_base_url: &str,
        store: DynStore,
        keys: Arc<Keys>,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let renderer = Renderer::new(
            Arc::clone(&store),
            Arc::clone(&keys),
            &RenderSettings {
                public_base_url: public_base_url.to_owned(),
                contact_phone: config.contact_phone.clone(),
                contact_url: config.contact_url.clone(),
            },
        )?;
        let address =
            config.email.from_address.parse().map_err(|_| {
                anyhow::anyhow!("notify.email.from_address is not an e-mail address")
            })?;
        let from_name = Some(config.email.from_name.trim().to_owned()).filter(|n| !n.is_empty());
        let limiter = |limit: crate::ratelimit::Limit, key: &str| -> anyhow::Result<_> {
            let quota = limit.quota().map_err(|(field, why)| {
                anyhow::anyhow!("notify.rate_limits.{key}.{field}: {why}")
            })?;
            Ok(quota.map(RateLimiter::direct))
        };
        let lease = config.dispatcher.lease();
        let queue = |limit| LaneQueue::new(lane_size(&config.dispatcher, limit, lease));
        Ok(Self {
            email_queue: queue(config.rate_limits.email),
            sms_queue: queue(config.rate_limits.sms),
            open: Arc::new(AtomicBool::new(false)),
            renderer,
            email: EmailTransport::from_config(&config.email)?,
            sms: SmsTransport::from_config(&config.sms)?,
            from: Mailbox::new(from_name, address),
            sms_sender: config.sms.sender.clone(),
            config: config.dispatcher.clone(),
            owner: format!("dispatcher:{}", Uuid::now_v7()),
            email_limit: limiter(config.rate_limits.email, "email")?,
            sms_limit: limiter(config.rate_limits.sms, "sms")?,
            store,
            keys,
            clock,
            due: Wakeup::default(),
        })
    }

    /// Claim at once when `due` is woken instead of at the next poll.
    #[must_use]
    pub fn with_wakeup(mut self, due: Wakeup) -> Self {
        self.due = due;
        self
    }

    /// The lease owner name this dispatcher claims under.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Intake's way to hand this dispatcher the messages it writes, while [`Dispatcher::run`]
    /// runs.
    pub fn handover(&self) -> Handover {
        Handover::new(
            Arc::clone(&self.store),
            Arc::from(self.owner.as_str()),
            self.config.lease(),
            self.clock.clone(),
            (
                self.email_queue.sender.clone(),
                self.sms_queue.sender.clone(),
            ),
            Arc::clone(&self.open),
        )
    }

    fn queue(&self, channel: MessageChannel) -> &LaneQueue {
        match channel {
            MessageChannel::Email => &self.email_queue,
            MessageChannel::Sms => &self.sms_queue,
        }
    }

    /// One round for tests and tools: claim what is due on each channel, deliver it, record
    /// the outcomes.
    pub async fn run_once(&self) -> StoreResult<Round> {
        use strum::IntoEnumIterator as _;
        let shutdown = CancellationToken::new();
        let mut round = Round::default();
        for channel in MessageChannel::iter() {
            let (claimed, lease_until) = self.claim(channel).await?;
            round.claimed += claimed.len();
            let finished: Vec<Finished> = futures::stream::iter(claimed)
                .map(|message| self.deliver(message, lease_until, &shutdown))
                .buffer_unordered(self.config.concurrency)
                .collect()
                .await;
            for group in finished.chunks(RECORD_GROUP_MAX) {
                self.record(group, &mut round).await?;
            }
        }
        Ok(round)
    }

    /// Deliver until `shutdown`; then hand back anything still held.
    ///
    /// Each channel has its own lane: a claimer keeps a bounded queue of leased messages full,
    /// and up to `concurrency` sends run at once, so a slow gateway never holds the other
    /// channel back and the next claim overlaps the current sends. Outcomes go to one recorder
    /// task that writes whatever has finished in one statement, while the sends go on.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        use strum::IntoEnumIterator as _;
        let stats = tokio::spawn(Arc::clone(&self).report_pending(shutdown.clone()));
        let (outcomes, finished) = mpsc::channel(RECORD_GROUP_MAX * 4);
        let recorder = tokio::spawn(Arc::clone(&self).recorder(finished));
        let lanes: Vec<_> = MessageChannel::iter()
            .map(|channel| {
                tokio::spawn(Arc::clone(&self).lane(channel, shutdown.clone(), outcomes.clone()))
            })
            .collect();
        drop(outcomes);
        // On shutdown each lane closes its queue itself (see `lane`).
        self.open.store(true, Ordering::Release);
        for lane in lanes {
            drop(lane.await);
        }
        // Every lane has stopped, so the recorder drains what is left and ends.
        drop(recorder.await);
        match self.store.release_all(&self.owner, self.clock.now()).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(released = n, "outbox messages handed back on shutdown");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not hand back outbox messages; their leases will lapse");
            }
        }
        drop(stats.await);
    }

    /// Claim a batch of one channel's due messages, leased from now.
    async fn claim(&self, channel: MessageChannel) -> StoreResult<(Vec<OutboxMessage>, Timestamp)> {
        let now = self.clock.now();
        let lease_until = now + self.config.lease();
        let claimed = self
            .store
            .claim_due(
                &self.owner,
                channel,
                now,
                lease_until,
                u32::try_from(self.queue(channel).size).unwrap_or(u32::MAX),
            )
            .await?;
        Ok((claimed, lease_until))
    }

    /// One channel's claimer and senders, until `shutdown`.
    async fn lane(
        self: Arc<Self>,
        channel: MessageChannel,
        shutdown: CancellationToken,
        outcomes: mpsc::Sender<Finished>,
    ) {
        // Claimed messages waiting for a send slot: one batch, so the next claim is ready when
        // the sends need it and little waits out its lease in memory.
        let lane = self.queue(channel);
        let size = lane.size;
        let queue = lane.sender.clone();
        let taken = lane
            .receiver
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(claimed) = taken else {
            tracing::error!(
                channel = channel_label(channel),
                "a dispatcher's lanes run once; this one is already running"
            );
            return;
        };
        let mut due = self.due.waiter();
        let claimer = async {
            while !shutdown.is_cancelled() {
                due.mark_seen();
                let wait = match self.claim(channel).await {
                    Ok((batch, lease_until)) => {
                        let full = batch.len() >= size;
                        for message in batch {
                            if queue.send((message, lease_until)).await.is_err() {
                                return;
                            }
                        }
                        // A full batch: more is probably due, claim again as soon as there is room.
                        if full {
                            continue;
                        }
                        self.config.poll_interval()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, channel = channel_label(channel), "outbox claim failed; retrying");
                        self.config.poll_interval()
                    }
                };
                tokio::select! {
                    () = due.wait(wait) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            drop(queue);
        };
        // The senders are tasks of their own, so the sends of one lane use every worker thread:
        // rendering, encoding and the protocol work of a message are CPU-bound, and one task
        // polling all of a lane's sends would hold the lane to one core. They live as long as
        // the lane, each taking the next claimed message when it is free: a task per message
        // would allocate a whole send's state every time.
        let claimed = Arc::new(tokio::sync::Mutex::new(claimed));
        let senders = async {
            let mut running = JoinSet::new();
            for _ in 0..self.config.concurrency.min(size) {
                let this = Arc::clone(&self);
                let claimed = Arc::clone(&claimed);
                let outcomes = outcomes.clone();
                let shutdown = shutdown.clone();
                running.spawn(async move {
                    loop {
                        let next = {
                            let mut claimed = claimed.lock().await;
                            tokio::select! {
                                biased;
                                next = claimed.recv() => next,
                                // Intake may still hold room reserved for messages it is
                                // committing: take no more, but drain what is queued and what
                                // those reservations bring, handing it back unsent.
                                () = shutdown.cancelled() => {
                                    claimed.close();
                                    claimed.recv().await
                                }
                            }
                        };
                        let Some((message, lease_until)) = next else {
                            break;
                        };
                        let finished = this.deliver(message, lease_until, &shutdown).await;
                        // The recorder ends only after every lane; a send error cannot happen
                        // here. Waiting for room there slows sending to recording's pace.
                        drop(outcomes.send(finished).await);
                    }
                });
            }
            while let Some(done) = running.join_next().await {
                // Sends are guarded (`guarded`), so only the hand-over could fail here.
                if let Err(e) = done {
                    tracing::error!(error = %e, "a send task failed; its message is due again when its lease lapses");
                }
            }
        };
        tokio::join!(claimer, senders);
    }

    /// Record outcomes as they arrive, in groups of whatever has finished meanwhile.
    async fn recorder(self: Arc<Self>, mut finished: mpsc::Receiver<Finished>) {
        let mut group = Vec::with_capacity(RECORD_GROUP_MAX);
        while finished.recv_many(&mut group, RECORD_GROUP_MAX).await > 0 {
            // Let a few more finish before committing: every commit is a write to the log (an
            // fsync on SQLite), and recording a handful at a time would keep the single writer
            // too busy to claim. A lease lasts far longer than this wait.
            let linger = tokio::time::sleep(RECORD_LINGER);
            tokio::pin!(linger);
            while group.len() < RECORD_GROUP_MAX {
                let room = RECORD_GROUP_MAX - group.len();
                tokio::select! {
                    got = finished.recv_many(&mut group, room) => if got == 0 { break },
                    () = &mut linger => break,
                }
            }
            let mut round = Round::default();
            let mut attempt = 0;
            // A failed commit is retried while the leases hold; after that the messages are due
            // again and are sent once more (at least once, never silently dropped).
            while let Err(e) = self.record(&group, &mut round).await {
                attempt += 1;
                if attempt >= RECORD_ATTEMPTS {
                    tracing::error!(error = %e, messages = group.len(), "could not record outcomes; the messages will be sent again when their leases lapse");
                    break;
                }
                tracing::warn!(error = %e, attempt, "recording outcomes failed; retrying");
                tokio::time::sleep(RECORD_RETRY_WAIT * attempt).await;
            }
            group.clear();
        }
    }

    /// Write the outcomes of `group` in one transaction and count them into `round`.
    async fn record(&self, group: &[Finished], round: &mut Round) -> StoreResult<()> {
        let outcomes: Vec<_> = group.iter().map(|f| (f.id, f.outcome.clone())).collect();
        let recorded = self
            .store
            .record_outcomes(&self.owner, &outcomes, self.clock.now())
            .await?;
        for (finished, recorded) in group.iter().zip(recorded) {
            if !recorded {
                round.lost += 1;
                tracing::warn!(message_id = %finished.id, "lease lapsed before the outcome was recorded");
                continue;
            }
            round.count(&finished.outcome, finished.channel);
        }
        Ok(())
    }

    /// Deliver one claimed message and decide its outcome.
    async fn deliver(
        &self,
        message: OutboxMessage,
        lease_until: Timestamp,
        shutdown: &CancellationToken,
    ) -> Finished {
        let attempt = std::pin::pin!(self.attempt(&message, lease_until, shutdown));
        let result = guarded(attempt).await;
        let now = self.clock.now();
        let outcome = match result {
            None => Outcome::Released,
            Some(Ok(delivered)) => Outcome::Sent {
                gateway_ref: delivered.gateway_ref,
            },
            Some(Err(SendError::Permanent { reason })) => {
                tracing::warn!(message_id = %message.id, channel = channel_label(message.channel), reason, "notification refused for good");
                Outcome::Failed { error: reason }
            }
            Some(Err(SendError::Transient {
                reason,
                retry_after,
            })) => {
                if message.attempts >= self.config.max_attempts {
                    tracing::warn!(message_id = %message.id, attempts = message.attempts, reason, "notification dead-lettered");
                    Outcome::Dead { error: reason }
                } else {
                    let wait = backoff(&self.config, message.attempts, retry_after);
                    Outcome::Retry {
                        at: now + wait,
                        error: reason,
                    }
                }
            }
        };
        Finished {
            id: message.id,
            channel: message.channel,
            outcome,
        }
    }

    /// `None` when the send did not begin: the dispatcher is stopping, or the rate limit held
    /// the message so long that its lease could lapse mid-send (another replica might take it).
    async fn attempt(
        &self,
        message: &OutboxMessage,
        lease_until: Timestamp,
        shutdown: &CancellationToken,
    ) -> Option<Result<Delivered, SendError>> {
        if shutdown.is_cancelled() {
            return None;
        }
        let Ok(recipient) = self.keys.open(&message.recipient) else {
            return Some(Err(SendError::permanent(
                "recipient cannot be opened with this key",
            )));
        };
        let rendered = match self.renderer.render(message).await {
            Ok(r) => r,
            Err(e) if e.is_transient() => return Some(Err(SendError::transient(e.to_string()))),
            Err(e) => return Some(Err(SendError::permanent(e.to_string()))),
        };
        // A send begins in the first half of the lease or not at all, so it can finish and be
        // recorded while the lease holds.
        let begin_by = lease_until - self.config.lease() / 2;
        // Negative once past that point: the message goes back unsent.
        let time_left = (begin_by - self.clock.now()).to_std().ok()?;
        let limiter = match message.channel {
            MessageChannel::Email => self.email_limit.as_ref(),
            MessageChannel::Sms => self.sms_limit.as_ref(),
        };
        if let Some(limiter) = limiter {
            // Wait for a permit only as long as the send could still begin. A message that
            // would wait longer goes back without taking one: every permit is spent on a send.
            tokio::select! {
                ready = tokio::time::timeout(time_left, limiter.until_ready()) => {
                    if ready.is_err() {
                        return None;
                    }
                }
                () = shutdown.cancelled() => return None,
            }
        }
        if shutdown.is_cancelled() {
            return None;
        }
        let started = Instant::now();
        let send = async {
            match message.channel {
                MessageChannel::Email => {
                    self.email
                        .send(&self.from, message.id, &recipient, &rendered)
                        .await
                }
                MessageChannel::Sms => {
                    let (text, kind) = euckr::fit(&rendered.sms);
                    self.sms
                        .send(&SmsMessage {
                            message_id: message.id,
                            to: &recipient,
                            from: &self.sms_sender,
                            text: &text,
                            kind,
                        })
                        .await
                }
            }
        };
        // The outcome must be recorded while the lease holds, or another replica may take the
        // message and send it again: waiting for a free connection counts against the lease.
        let budget = (lease_until - self.config.lease() / 4 - self.clock.now())
            .to_std()
            .unwrap_or_default();
        let result = tokio::time::timeout(budget, send)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::transient(
                    "the send did not finish within the lease",
                ))
            });
        metrics::histogram!(
            names::NOTIFICATION_SEND_DURATION,
            "channel" => channel_label(message.channel)
        )
        .record(started.elapsed().as_secs_f64());
        Some(result)
    }

    /// Refresh the pending-message gauges from the store, which sees every replica's work.
    async fn report_pending(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.stats_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.cancelled() => break,
            }
            match self.store.pending_stats().await {
                Ok(stats) => publish_pending(&stats, self.clock.now()),
                Err(e) => tracing::warn!(error = %e, "could not read outbox statistics"),
            }
        }
    }
}

fn publish_pending(stats: &[crate::store::PendingStat], now: Timestamp) {
    use strum::IntoEnumIterator as _;
    for channel in MessageChannel::iter() {
        let stat = stats.iter().find(|s| s.channel == channel);
        let count = stat.map_or(0, |s| s.count);
        let oldest = stat.and_then(|s| s.oldest_created_at).map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        let label = channel_label(channel);
        metrics::gauge!(names::OUTBOX_PENDING, "channel" => label).set(count as f64);
        metrics::gauge!(names::OUTBOX_OLDEST_PENDING, "channel" => label).set(oldest);
    }
}

/// Messages a lane claims, queues and sends at once: `batch_size` (at most `concurrency` sending),
/// or under a rate limit what the limit lets out in a quarter of a lease, burst included. More
/// would wait for permits until past half their lease and go back unsent, to be claimed again:
/// writes for nothing. A lane holds at most two such batches (one queued, one sending), so its
/// last message gets its permit within about half a lease after an idle start.
fn lane_size(config: &DispatcherConfig, limit: crate::ratelimit::Limit, lease: Duration) -> usize {
    let batch = usize::try_from(config.batch_size)
        .unwrap_or(usize::MAX)
        .max(1);
    if limit.per_minute <= 0.0 {
        return batch;
    }
    let in_a_quarter_lease = limit.per_minute / 60.0 * lease.as_secs_f64() / 4.0;
    // Truncation is the intent: whole messages.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let size = (f64::from(limit.burst) + in_a_quarter_lease).floor() as usize;
    size.clamp(1, batch)
}

fn channel_label(channel: MessageChannel) -> &'static str {
    match channel {
        MessageChannel::Email => "email",
        MessageChannel::Sms => "sms",
    }
}

/// Wait before attempt `attempts + 1`: `base * 2^(attempts-1)` capped at the maximum, between
/// half and all of it at random (so retries of a burst spread out), and never less than the
/// gateway's `Retry-After`.
pub fn backoff(
    config: &DispatcherConfig,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let exponent = attempts.saturating_sub(1).min(32);
    let full = config
        .backoff_base_ms
        .saturating_mul(1_u64 << exponent)
        .min(config.backoff_max_ms);
    let jittered = Duration::from_millis(full).mul_f64(rand::random_range(0.5..=1.0));
    match retry_after {
        Some(asked) => jittered.max(asked.min(RETRY_AFTER_MAX)),
        None => jittered,
    }
}

/// Run a send attempt, turning a panic in it (rendering, encoding, a transport: a defect of
/// ours, not the message's) into a transient failure. The message is then retried with backoff
/// and dead-lettered after `max_attempts`, where staff see it and can re-queue it, instead of
/// coming back at every lease; and its sender lives on, so the lane keeps its concurrency.
/// The attempt is pinned where it is awaited: moving it in would double the send's state.
async fn guarded(
    attempt: std::pin::Pin<&mut impl Future<Output = Option<Result<Delivered, SendError>>>>,
) -> Option<Result<Delivered, SendError>> {
    use futures::FutureExt as _;
    match std::panic::AssertUnwindSafe(attempt).catch_unwind().await {
        Ok(result) => result,
        Err(cause) => {
            let text = crate::telemetry::panic_text(&*cause);
            tracing::error!(panic = text, "a send panicked; the message will be retried");
            Some(Err(SendError::transient(format!(
                "internal error while sending: {text}"
            ))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_send_that_panics_fails_transiently_and_the_next_one_runs() {
        let failed = guarded(std::pin::pin!(async { panic!("template blew up") })).await;
        match failed {
            Some(Err(SendError::Transient { reason, .. })) => {
                assert!(reason.contains("template blew up"), "{reason}");
            }
            other => panic!("expected a transient failure, got {other:?}"),
        }
        let sent = guarded(std::pin::pin!(async { Some(Ok(Delivered::default())) })).await;
        assert!(matches!(sent, Some(Ok(_))));
        assert!(guarded(std::pin::pin!(async { None })).await.is_none());
    }

    fn config() -> DispatcherConfig {
        DispatcherConfig {
            enabled: true,
            batch_size: 10,
            concurrency: 4,
            lease_secs: 60,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 10_000,
            poll_interval_ms: 100,
            stats_interval_ms: 1_000,
        }
    }

    #[test]
    fn a_rate_limited_lane_claims_what_the_limit_lets_out_in_a_quarter_lease() {
        let c = config();
        let lease = Duration::from_secs(60);
        let limit = |per_minute, burst| crate::ratelimit::Limit { per_minute, burst };
        // Off: the configured batch.
        assert_eq!(lane_size(&c, limit(0.0, 0), lease), 10);
        // 4 a minute: one per quarter lease, plus the burst.
        assert_eq!(lane_size(&c, limit(4.0, 1), lease), 2);
        assert_eq!(lane_size(&c, limit(4.0, 3), lease), 4);
        // 12 a minute: three in 15 s.
        assert_eq!(lane_size(&c, limit(12.0, 1), lease), 4);
        // Never more than the batch, never less than one.
        assert_eq!(lane_size(&c, limit(6_000.0, 100), lease), 10);
        assert_eq!(lane_size(&c, limit(1.0, 0), lease), 1);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let c = config();
        for (attempts, full) in [
            (1, 1_000),
            (2, 2_000),
            (3, 4_000),
            (4, 8_000),
            (5, 10_000),
            (40, 10_000),
        ] {
            for _ in 0..50 {
                let wait = backoff(&c, attempts, None).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&wait),
                    "attempt {attempts}: {wait} ms"
                );
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_when_longer() {
        let c = config();
        let wait = backoff(&c, 1, Some(Duration::from_secs(30)));
        assert_eq!(wait, Duration::from_secs(30));
        let wait = backoff(&c, 4, Some(Duration::from_millis(1)));
        assert!(wait >= Duration::from_millis(4_000));
        let wait = backoff(&c, 1, Some(Duration::from_secs(10 * 24 * 3600)));
        assert_eq!(wait, RETRY_AFTER_MAX);
    }
}
