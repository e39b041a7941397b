//! Surge detection: the rate of accepted reports over a sliding window.
//!
//! The intake calls [`SurgeDetector::record_accepted`] after each committed batch; the mode
//! evaluation reads [`SurgeDetector::rate_per_minute`]. Counts are kept per second in a ring as
//! long as the window, so memory is fixed and both calls are cheap.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::clock::Clock;
use crate::store::Timestamp;

/// Shared handle; clones count into the same window.
#[derive(Debug, Clone)]
pub struct SurgeDetector {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: Clock,
    window_secs: u64,
    threshold_per_minute: u32,
    /// One slot per second of the window: (the Unix second it counts, reports accepted in it).
    slots: Mutex<Vec<(i64, u64)>>,
}

impl SurgeDetector {
    /// `threshold_per_minute` 0 never reports a surge.
    pub fn new(clock: Clock, window: Duration, threshold_per_minute: u32) -> Self {
        let window_secs = window.as_secs().max(1);
        let len = usize::try_from(window_secs).unwrap_or(usize::MAX);
        Self {
            inner: Arc::new(Inner {
                clock,
                window_secs,
                threshold_per_minute,
                slots: Mutex::new(vec![(i64::MIN, 0); len]),
            }),
        }
    }

    /// Count `count` reports accepted now. Called by the intake after each committed batch.
    pub fn record_accepted(&self, count: u64) {
        self.record_accepted_at(self.inner.clock.now(), count);
    }

    /// Count `count` reports accepted at `at`.
    pub fn record_accepted_at(&self, at: Timestamp, count: u64) {
        if count == 0 {
            return;
        }
        let second = at.timestamp();
        let mut slots = self.slots();
        let slot = &mut slots[self.slot_of(second)];
        if slot.0 == second {
            slot.1 += count;
        } else if slot.0 < second {
            *slot = (second, count);
        }
        // An older second than the slot holds has already left the window: not counted.
    }

    /// Accepted reports per minute, averaged over the window ending at `now`.
    pub fn rate_per_minute(&self, now: Timestamp) -> f64 {
        let newest = now.timestamp();
        let oldest = newest - i64::try_from(self.inner.window_secs).unwrap_or(i64::MAX) + 1;
        let total: u64 = self
            .slots()
            .iter()
            .filter(|(second, _)| (oldest..=newest).contains(second))
            .map(|(_, count)| count)
            .sum();
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        let rate = total as f64 * 60.0 / self.inner.window_secs as f64;
        rate
    }

    /// Whether `rate_per_minute` is a surge.
    pub fn is_surge(&self, rate_per_minute: f64) -> bool {
        self.inner.threshold_per_minute > 0
            && rate_per_minute > f64::from(self.inner.threshold_per_minute)
    }

    pub fn threshold_per_minute(&self) -> u32 {
        self.inner.threshold_per_minute
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.inner.window_secs)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<(i64, u64)>> {
        self.inner
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn slot_of(&self, second: i64) -> usize {
        let len = i64::try_from(self.inner.window_secs).unwrap_or(i64::MAX);
        usize::try_from(second.rem_euclid(len)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;

    fn at(second: i64) -> Timestamp {
        Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
    }

    #[test]
    fn the_rate_is_averaged_over_the_window() {
        let d = SurgeDetector::new(Clock::System, Duration::from_secs(120), 100);
        d.record_accepted_at(at(0), 150);
        d.record_accepted_at(at(59), 50);
        d.record_accepted_at(at(59), 10);
        // 210 reports in a 2-minute window.
        assert!((d.rate_per_minute(at(60)) - 105.0).abs() < 1e-9);
        assert!(d.is_surge(d.rate_per_minute(at(60))));
        // At 120 s the reports of second 0 have left the window.
        assert!((d.rate_per_minute(at(120)) - 30.0).abs() < 1e-9);
        assert!(!d.is_surge(d.rate_per_minute(at(120))));
        assert_eq!(d.rate_per_minute(at(500)), 0.0);
    }

    #[test]
    fn a_reused_slot_forgets_its_old_second() {
        let d = SurgeDetector::new(Clock::System, Duration::from_secs(10), 1);
        d.record_accepted_at(at(3), 7);
        d.record_accepted_at(at(13), 2);
        // Late news about second 3 does not resurrect it.
        d.record_accepted_at(at(3), 100);
        assert!((d.rate_per_minute(at(13)) - 12.0).abs() < 1e-9);
    }

    #[test]
    fn threshold_zero_turns_detection_off() {
        let d = SurgeDetector::new(Clock::System, Duration::from_secs(60), 0);
        d.record_accepted_at(at(0), 1_000_000);
        assert!(!d.is_surge(d.rate_per_minute(at(0))));
    }

    #[test]
    fn record_accepted_uses_the_clock() {
        let clock = super::super::clock::ManualClock::new(at(0));
        let d = SurgeDetector::new(clock.clone().into(), Duration::from_secs(60), 10);
        d.record_accepted(30);
        clock.advance(Duration::from_secs(30));
        d.record_accepted(30);
        assert!((d.rate_per_minute(clock.now()) - 60.0).abs() < 1e-9);
        clock.advance(Duration::from_secs(31));
        assert!((d.rate_per_minute(clock.now()) - 30.0).abs() < 1e-9);
    }
}
