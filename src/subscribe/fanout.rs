//! The background worker that expands incident-update fan-out jobs into outbox rows, batch by
//! batch (the set-based statements are in `store/fanout.rs`), and keeps the subscription tables
//! tidy.
//!
//! Jobs are durable rows written with the update, so the API answers the update at once and a
//! restart loses nothing: the next worker continues after the last committed batch.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::config::{FanoutConfig, SubscriptionsConfig};
use crate::incident::Clock;
use crate::store::{DynStore, FanoutStep, StoreResult};
use crate::wakeup::{Waiter, Wakeup, Wakeups};

/// Expired rows are deleted this often.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long a confirmation send counts against its contact.
pub const CONTACT_WINDOW: chrono::Duration = chrono::Duration::hours(24);

pub struct FanoutWorker {
    store: DynStore,
    clock: Clock,
    batch_rows: u32,
    poll_interval: Duration,
    pending_expiry: chrono::Duration,
    /// Woken when an update is posted here; polls for other replicas' updates.
    due: Waiter,
    /// Woken after each batch written, so the dispatcher starts on it at once.
    outbox_due: Wakeup,
}

impl FanoutWorker {
    pub fn new(
        store: DynStore,
        clock: Clock,
        fanout: &FanoutConfig,
        subscriptions: &SubscriptionsConfig,
    ) -> Self {
        Self {
            store,
            clock,
            batch_rows: fanout.batch_rows,
            poll_interval: fanout.poll_interval(),
            pending_expiry: subscriptions.pending_expiry(),
            due: Wakeup::default().waiter(),
            outbox_due: Wakeup::default(),
        }
    }

    /// Start on updates posted in this process at once, and wake its dispatcher per batch.
    #[must_use]
    pub fn with_wakeups(mut self, wakeups: &Wakeups) -> Self {
        self.due = wakeups.fanout.waiter();
        self.outbox_due = wakeups.outbox.clone();
        self
    }

    /// Expand one batch of the oldest unfinished fan-out.
    pub async fn run_once(&self) -> StoreResult<FanoutStep> {
        let step = self
            .store
            .fanout_step(self.batch_rows, self.clock.now())
            .await?;
        if let FanoutStep::Expanded {
            update_id,
            rows,
            finished,
        } = step
        {
            tracing::debug!(update = %update_id, rows, finished, "fan-out batch written");
            self.outbox_due.wake();
            if finished {
                tracing::info!(update = %update_id, "fan-out finished");
            }
        }
        Ok(step)
    }

    /// Run every job to its end; for tests and tools. Returns the rows written.
    pub async fn drain(&self) -> StoreResult<u64> {
        let mut total = 0;
        while let FanoutStep::Expanded { rows, .. } = self.run_once().await? {
            total += rows;
        }
        Ok(total)
    }

    /// Delete confirmation sends that no longer count and subscriptions never confirmed.
    pub async fn prune(&self) -> StoreResult<u64> {
        let now = self.clock.now();
        self.store
            .prune_subscriptions(now - CONTACT_WINDOW, now - self.pending_expiry)
            .await
    }

    /// Wait a poll interval (or until woken), then expand batches back to back while there is
    /// work; until `shutdown`. A batch in progress finishes (it is one short transaction) before
    /// exit.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failing = false;
        let mut last_prune: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = self.due.wait(self.poll_interval) => {}
            }
            self.due.mark_seen();
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, "pruning expired subscriptions failed");
                }
            }
            loop {
                let outcome = self.run_once().await;
                // Logged once per outage, not once per poll.
                match (&outcome, failing) {
                    (Ok(_), true) => {
                        tracing::info!("fan-out recovered");
                        failing = false;
                    }
                    (Err(e), false) => {
                        tracing::warn!(error = %e, "fan-out batch failed; retrying");
                        failing = true;
                    }
                    _ => {}
                }
                if !matches!(outcome, Ok(FanoutStep::Expanded { .. })) || shutdown.is_cancelled() {
                    break;
                }
            }
        }
    }
}
