//! Nudges between the part of this process that commits durable work and the worker that polls
//! the store for it, so the worker starts at once instead of at its next poll. The store stays
//! the truth: a nudge carries nothing, one that finds nothing is harmless, and work another
//! replica committed is still found by polling.

use tokio::sync::watch;

/// One kind of work: every [`Wakeup::wake`] is seen by every [`Waiter`] made before or after it,
/// and a wake that comes while a waiter is busy is not lost.
#[derive(Clone)]
pub struct Wakeup(watch::Sender<u64>);

impl Default for Wakeup {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Wakeup {
    /// Work was committed.
    pub fn wake(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn waiter(&self) -> Waiter {
        Waiter(self.0.subscribe())
    }
}

/// The worker's end of a [`Wakeup`].
pub struct Waiter(watch::Receiver<u64>);

impl Waiter {
    /// Call before looking for work: wakes until now are answered by that look.
    pub fn mark_seen(&mut self) {
        self.0.borrow_and_update();
    }

    /// Until a wake after the last [`Waiter::mark_seen`] (at once if one came meanwhile), or
    /// `poll` elapses.
    pub async fn wait(&mut self, poll: std::time::Duration) {
        let changed = async {
            // With the sender gone (a worker nobody wakes) only the poll is left.
            if self.0.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let _ = tokio::time::timeout(poll, changed).await;
    }
}

/// The nudges of one process: incident updates to fan out, outbox messages to deliver.
#[derive(Clone, Default)]
pub struct Wakeups {
    pub fanout: Wakeup,
    pub outbox: Wakeup,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wake_while_busy_is_kept_and_one_already_answered_is_not() {
        let wakeup = Wakeup::default();
        let mut waiter = wakeup.waiter();
        let poll = Duration::from_secs(60);
        let started = tokio::time::Instant::now();

        // Woken while busy (before waiting): the wait returns at once.
        wakeup.wake();
        waiter.wait(poll).await;
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Woken, then the work looked for: the wait lasts the whole poll.
        wakeup.wake();
        waiter.mark_seen();
        waiter.wait(poll).await;
        assert_eq!(started.elapsed(), poll);

        // Woken during the wait: it ends then.
        let later = wakeup.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            later.wake();
        });
        waiter.mark_seen();
        waiter.wait(poll).await;
        assert_eq!(started.elapsed(), poll + Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_nobody_can_wake_waits_the_poll() {
        let mut waiter = Wakeup::default().waiter();
        let started = tokio::time::Instant::now();
        waiter.wait(Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}
