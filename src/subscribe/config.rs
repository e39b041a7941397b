//! The `[subscriptions]` and `[fanout]` configuration sections. Defaults, with the reasons for
//! them, are in `src/config/defaults.toml`.

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// Confirmation messages one contact may be sent in any 24 hours, whoever asks.
    pub max_confirmations_per_contact_per_day: u32,
    /// Wrong codes a pending subscription tolerates before it must be requested again.
    pub confirm_code_attempts: u32,
    /// A pending subscription not confirmed within this many hours expires.
    pub pending_expiry_hours: u32,
}

impl SubscriptionsConfig {
    pub fn pending_expiry(&self) -> chrono::Duration {
        chrono::Duration::hours(i64::from(self.pending_expiry_hours))
    }

    pub fn validate(&self) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("subscriptions.{key}: {why}"));
        if self.max_confirmations_per_contact_per_day == 0 {
            return bad(
                "max_confirmations_per_contact_per_day",
                "must be greater than 0 (nobody could subscribe)",
            );
        }
        if !(1..=100).contains(&self.confirm_code_attempts) {
            return bad("confirm_code_attempts", "must be between 1 and 100");
        }
        if !(1..=24 * 30).contains(&self.pending_expiry_hours) {
            return bad("pending_expiry_hours", "must be between 1 and 720");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutConfig {
    /// Whether this replica runs the fan-out worker (another replica may do it instead).
    pub enabled: bool,
    /// Recipients expanded into the outbox per statement (and per transaction).
    pub batch_rows: u32,
    /// How often an idle worker looks for new fan-out jobs.
    pub poll_interval_ms: u64,
    /// Delivery progress is counted at most once per this long per update; 0 counts every time.
    pub progress_cache_ms: u64,
}

/// Largest batch: one transaction should stay short enough not to hold up other writers.
pub const MAX_BATCH_ROWS: u32 = 100_000;

impl FanoutConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn progress_cache(&self) -> Duration {
        Duration::from_millis(self.progress_cache_ms)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_BATCH_ROWS).contains(&self.batch_rows) {
            return Err(format!(
                "fanout.batch_rows: must be between 1 and {MAX_BATCH_ROWS}"
            ));
        }
        if self.poll_interval_ms == 0 {
            return Err("fanout.poll_interval_ms: must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_defaults_are_valid_and_bad_values_name_their_key() {
        let config = Config::defaults().unwrap();
        assert_eq!(
            config.subscriptions.max_confirmations_per_contact_per_day,
            3
        );
        let mut fanout = config.fanout.clone();
        fanout.batch_rows = 0;
        assert!(
            fanout
                .validate()
                .unwrap_err()
                .starts_with("fanout.batch_rows")
        );
        let mut subscriptions = config.subscriptions;
        subscriptions.max_confirmations_per_contact_per_day = 0;
        assert!(
            subscriptions
                .validate()
                .unwrap_err()
                .starts_with("subscriptions.max_confirmations_per_contact_per_day")
        );
    }
}
