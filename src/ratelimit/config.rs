//! The `[rate_limits]` configuration section. Defaults, with the reasons for them, are in
//! `src/config/defaults.toml`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use serde::Deserialize;

use crate::http::client_ip::TrustedProxies;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Our own reverse proxies; `X-Forwarded-For` is believed only from them.
    pub trusted_proxies: TrustedProxies,
    /// Most keys one keyed limiter holds per profile.
    pub max_keys: usize,
    pub prune_interval_ms: u64,
    pub normal: ProfileLimits,
    pub incident: ProfileLimits,
}

/// One profile's limits; the service switches between `normal` and `incident` at run time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileLimits {
    pub report_ip: Limit,
    pub lookup_ip: Limit,
    pub lookup_receipt: Limit,
    pub subscribe_ip: Limit,
    pub admission: Limit,
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`. `per_minute = 0` turns the
/// limit off (benchmarks do this through the environment); decimals express slow rates
/// (`0.1` = one every ten minutes).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per_minute: f64,
    pub burst: u32,
}

/// Fastest refill accepted: one request every 10 ns, far beyond anything one process serves.
const MAX_PER_MINUTE: f64 = 6_000_000_000.0;
const MAX_KEYS: usize = 10_000_000;
const MIN_PRUNE_INTERVAL_MS: u64 = 100;

/// A rejected `[rate_limits]` value; `Display` is one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate_limits.{key}: {why}")]
pub struct InvalidRateLimit {
    key: String,
    why: String,
}

impl InvalidRateLimit {
    fn new(key: impl fmt::Display, why: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            why: why.into(),
        }
    }
}

impl RateLimitConfig {
    pub fn prune_interval(&self) -> Duration {
        Duration::from_millis(self.prune_interval_ms)
    }

    pub fn validate(&self) -> Result<(), InvalidRateLimit> {
        if !(1..=MAX_KEYS).contains(&self.max_keys) {
            return Err(InvalidRateLimit::new(
                "max_keys",
                format!("must be between 1 and {MAX_KEYS}"),
            ));
        }
        if self.prune_interval_ms < MIN_PRUNE_INTERVAL_MS {
            return Err(InvalidRateLimit::new(
                "prune_interval_ms",
                format!("must be at least {MIN_PRUNE_INTERVAL_MS}"),
            ));
        }
        for (profile, limits) in [("normal", &self.normal), ("incident", &self.incident)] {
            for (name, limit) in limits.named() {
                limit.quota().map_err(|(field, why)| {
                    InvalidRateLimit::new(format_args!("{profile}.{name}.{field}"), why)
                })?;
            }
        }
        Ok(())
    }
}

impl ProfileLimits {
    fn named(&self) -> [(&'static str, Limit); 5] {
        [
            ("report_ip", self.report_ip),
            ("lookup_ip", self.lookup_ip),
            ("lookup_receipt", self.lookup_receipt),
            ("subscribe_ip", self.subscribe_ip),
            ("admission", self.admission),
        ]
    }
}

impl Limit {
    /// The governor quota, `None` when the limit is off; `Err` names the bad field.
    pub(crate) fn quota(self) -> Result<Option<Quota>, (&'static str, String)> {
        if !(self.per_minute.is_finite() && (0.0..=MAX_PER_MINUTE).contains(&self.per_minute)) {
            return Err((
                "per_minute",
                format!("must be 0 (off) or a positive rate of at most {MAX_PER_MINUTE}"),
            ));
        }
        if self.per_minute == 0.0 {
            return Ok(None);
        }
        let burst = NonZeroU32::new(self.burst).ok_or((
            "burst",
            "must be at least 1 (set per_minute = 0 to turn the limit off)".to_owned(),
        ))?;
        let period = Duration::from_secs_f64(60.0 / self.per_minute);
        let quota = Quota::with_period(period).ok_or((
            "per_minute",
            format!("must be 0 (off) or a positive rate of at most {MAX_PER_MINUTE}"),
        ))?;
        Ok(Some(quota.allow_burst(burst)))
    }
}
