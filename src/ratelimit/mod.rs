//! Rate limits for the public intake: per client IP for reports, lookups and subscriptions,
//! per receipt for lookups (so the contact given at submission cannot be guessed by trying), and
//! one global admission limit that keeps a surge within what the store can commit.
//!
//! Each limit is a GCRA token bucket (governor). There are two profiles, `normal` and
//! `incident`, each with its own buckets; [`Limiters::set_profile`] switches between them at run
//! time with one atomic store, so the hot path takes no lock of its own (only the sharded map's).
//! The profile not in use keeps its state, so switching back and forth cannot be used to reset a
//! bucket; its keys expire like any others.
//!
//! Memory is bounded whatever keys appear: [`Limiters::run_pruner`] drops keys whose buckets are
//! full again every `prune_interval_ms`, and each limiter holds at most `max_keys` keys per
//! profile. When a limiter is full it prunes at once (at most once a second); if it is still
//! full, every key it has not seen before shares one overflow bucket until keys expire. Clients
//! already known keep their own buckets, and a flood of new sources slows only other new
//! sources rather than growing memory. The global admission limit applies either way.
//!
//! Suggested use in a handler: keyed limits first (they turn away one abusive source without
//! spending global capacity), then admission. Every refusal here is a 429 `rate_limited` with
//! the returned wait as `Retry-After`; a 503 `overloaded` is the intake queue's own refusal,
//! when the store cannot commit in time what was admitted.
//!
//! Metrics: `reliefline_rate_limited_total{limiter}` on every refusal and
//! `reliefline_rate_limiter_keys{limiter}` after every prune. Keys themselves (addresses,
//! receipts) never become labels or log fields; receipts are held only as a keyed hash.

mod config;
mod store;

use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{InvalidRateLimit, Limit, ProfileLimits, RateLimitConfig};
use store::BoundedStore;

use crate::domain::Receipt;
use crate::http::client_ip::ClientKey;
use crate::telemetry::names;

/// A full limiter prunes on the request path at most this often.
const FORCED_PRUNE_SPACING: Duration = Duration::from_secs(1);

/// Which set of limits is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::AsRefStr, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum Profile {
    Normal,
    Incident,
}

impl Profile {
    /// Position of this profile's buckets in the per-profile arrays.
    fn index(self) -> usize {
        match self {
            Self::Normal => 0,
            Self::Incident => 1,
        }
    }
}

/// The limiters by name; the name is the `limiter` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::Display)]
#[strum(serialize_all = "snake_case")]
pub enum LimiterName {
    ReportIp,
    LookupIp,
    LookupReceipt,
    SubscribeIp,
    Admission,
}

impl LimiterName {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A refusal: how long until the limiter would let the next request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// A receipt as a limiter key: a keyed hash, so no receipt text is kept in the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ReceiptKey(u64);

type Bucket<C> = NoOpMiddleware<<C as Clock>::Instant>;
type KeyedBuckets<K, C> = RateLimiter<K, BoundedStore<K>, C, Bucket<C>>;
type GlobalBucket<C> = RateLimiter<NotKeyed, InMemoryState, C, Bucket<C>>;

/// Every rate limit of the public intake. Cheap to clone; clones share their state.
pub struct Limiters<C: Clock = DefaultClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Clone for Limiters<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<C: Clock> {
    /// The profile in force: `true` for incident.
    incident: AtomicBool,
    report_ip: KeyedLimiter<ClientKey, C>,
    lookup_ip: KeyedLimiter<ClientKey, C>,
    lookup_receipt: KeyedLimiter<ReceiptKey, C>,
    subscribe_ip: KeyedLimiter<ClientKey, C>,
    admission: [Option<GlobalBucket<C>>; 2],
    receipt_hasher: RandomState,
    prune_interval: Duration,
    clock: C,
}

impl Limiters {
    /// Limiters on the monotonic clock, starting in the `normal` profile.
    pub fn new(config: &RateLimitConfig) -> Result<Self, InvalidRateLimit> {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C> Limiters<C>
where
    C: Clock + Clone,
{
    /// Limiters on a given clock; tests pass governor's `FakeRelativeClock`.
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Result<Self, InvalidRateLimit> {
        config.validate()?;
        let quotas = |pick: fn(&ProfileLimits) -> Limit| {
            // Validated above, so neither profile's quota can fail here.
            [&config.normal, &config.incident].map(|p| pick(p).quota().ok().flatten())
        };
        let max_keys = config.max_keys;
        let admission = quotas(|p| p.admission)
            .map(|q| q.map(|q| RateLimiter::direct_with_clock(q, clock.clone())));
        Ok(Self {
            inner: Arc::new(Inner {
                incident: AtomicBool::new(false),
                report_ip: KeyedLimiter::new(
                    LimiterName::ReportIp,
                    quotas(|p| p.report_ip),
                    max_keys,
                    &clock,
                ),
                lookup_ip: KeyedLimiter::new(
                    LimiterName::LookupIp,
                    quotas(|p| p.lookup_ip),
                    max_keys,
                    &clock,
                ),
                lookup_receipt: KeyedLimiter::new(
                    LimiterName::LookupReceipt,
                    quotas(|p| p.lookup_receipt),
                    max_keys,
                    &clock,
                ),
                subscribe_ip: KeyedLimiter::new(
                    LimiterName::SubscribeIp,
                    quotas(|p| p.subscribe_ip),
                    max_keys,
                    &clock,
                ),
                admission,
                receipt_hasher: RandomState::new(),
                prune_interval: config.prune_interval(),
                clock,
            }),
        })
    }

    pub fn profile(&self) -> Profile {
        if self.inner.incident.load(Ordering::Relaxed) {
            Profile::Incident
        } else {
            Profile::Normal
        }
    }

    /// Switch every limiter to `profile`'s limits, effective for the next check.
    pub fn set_profile(&self, profile: Profile) {
        let incident = profile == Profile::Incident;
        if self.inner.incident.swap(incident, Ordering::Relaxed) != incident {
            tracing::info!(%profile, "rate-limit profile switched");
        }
    }

    /// `POST /api/v1/reports`, per client.
    pub fn check_report_ip(&self, client: &ClientKey) -> Result<(), RetryAfter> {
        self.inner.report_ip.check(self.profile(), client)
    }

    /// `POST /api/v1/reports/lookup`, per client.
    pub fn check_lookup_ip(&self, client: &ClientKey) -> Result<(), RetryAfter> {
        self.inner.lookup_ip.check(self.profile(), client)
    }

    /// `POST /api/v1/reports/lookup`, per receipt, whoever asks: this is what makes guessing the
    /// contact that unlocks a receipt hopeless.
    pub fn check_lookup_receipt(&self, receipt: &Receipt) -> Result<(), RetryAfter> {
        let key = ReceiptKey(self.inner.receipt_hasher.hash_one(receipt.as_str()));
        self.inner.lookup_receipt.check(self.profile(), &key)
    }

    /// `POST /api/v1/subscriptions`, per client.
    pub fn check_subscribe_ip(&self, client: &ClientKey) -> Result<(), RetryAfter> {
        self.inner.subscribe_ip.check(self.profile(), client)
    }

    /// The global admission limit on intake, shared by every client.
    pub fn check_admission(&self) -> Result<(), RetryAfter> {
        let Some(bucket) = &self.inner.admission[self.profile().index()] else {
            return Ok(());
        };
        bucket
            .check()
            .map_err(|refusal| refused(LimiterName::Admission, &refusal, &self.inner.clock))
    }

    /// Keys a limiter holds now, over both profiles (0 for `admission`, which is not keyed).
    pub fn key_count(&self, limiter: LimiterName) -> usize {
        let inner = &self.inner;
        match limiter {
            LimiterName::ReportIp => inner.report_ip.len(),
            LimiterName::LookupIp => inner.lookup_ip.len(),
            LimiterName::LookupReceipt => inner.lookup_receipt.len(),
            LimiterName::SubscribeIp => inner.subscribe_ip.len(),
            LimiterName::Admission => 0,
        }
    }

    /// One housekeeping pass: drop keys whose buckets are full again, give memory back, and
    /// publish `reliefline_rate_limiter_keys`.
    pub fn prune(&self) {
        let inner = &self.inner;
        let counts = [
            (inner.report_ip.name, inner.report_ip.prune()),
            (inner.lookup_ip.name, inner.lookup_ip.prune()),
            (inner.lookup_receipt.name, inner.lookup_receipt.prune()),
            (inner.subscribe_ip.name, inner.subscribe_ip.prune()),
        ];
        for (name, keys) in counts {
            metrics::gauge!(names::RATE_LIMITER_KEYS, "limiter" => name.as_str()).set(keys as f64);
        }
    }
}

impl<C> Limiters<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Prune every `prune_interval_ms` until `cancel` fires. Spawn it on the application's
    /// background task tracker.
    pub async fn run_pruner(self, cancel: CancellationToken) {
        let mut ticks = tokio::time::interval(self.inner.prune_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = ticks.tick() => {}
            }
            // A pass walks every key; keep it off the request-serving worker threads.
            let limiters = self.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || limiters.prune()).await {
                tracing::error!(error = %e, "rate-limiter pruning failed");
            }
        }
    }

    /// [`run_pruner`](Self::run_pruner) on a new task.
    pub fn spawn_pruner(&self, cancel: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(self.clone().run_pruner(cancel))
    }
}

/// One named keyed limit, with a bucket set per profile (`None`: the limit is off).
struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock> {
    name: LimiterName,
    by_profile: [Option<KeyedBuckets<K, C>>; 2],
    max_keys: usize,
    clock: C,
    start: C::Instant,
    /// Nanoseconds after `start` before which the request path may not prune again.
    next_forced_prune: AtomicU64,
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedLimiter<K, C> {
    fn new(name: LimiterName, quotas: [Option<Quota>; 2], max_keys: usize, clock: &C) -> Self {
        Self {
            name,
            by_profile: quotas.map(|quota| {
                quota.map(|q| RateLimiter::new(q, BoundedStore::new(max_keys), clock.clone()))
            }),
            max_keys,
            start: clock.now(),
            clock: clock.clone(),
            next_forced_prune: AtomicU64::new(0),
        }
    }

    fn check(&self, profile: Profile, key: &K) -> Result<(), RetryAfter> {
        let Some(buckets) = &self.by_profile[profile.index()] else {
            return Ok(());
        };
        if buckets.len() >= self.max_keys {
            self.prune_when_full(buckets);
        }
        buckets
            .check_key(key)
            .map_err(|refusal| refused(self.name, &refusal, &self.clock))
    }

    /// Make room at once, but let only one request in a second pay for a pass.
    fn prune_when_full(&self, buckets: &KeyedBuckets<K, C>) {
        let now = self.clock.now().duration_since(self.start).as_u64();
        let due = self.next_forced_prune.load(Ordering::Relaxed);
        let next = now.saturating_add(duration_nanos(FORCED_PRUNE_SPACING));
        if now < due
            || self
                .next_forced_prune
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        buckets.retain_recent();
        let keys = buckets.len();
        if keys >= self.max_keys {
            tracing::warn!(
                limiter = self.name.as_str(),
                keys,
                "rate limiter full: new clients share one overflow bucket until keys expire"
            );
        }
    }

    fn prune(&self) -> usize {
        self.by_profile
            .iter()
            .flatten()
            .map(|buckets| {
                buckets.retain_recent();
                buckets.shrink_to_fit();
                buckets.len()
            })
            .sum()
    }

    fn len(&self) -> usize {
        self.by_profile.iter().flatten().map(RateLimiter::len).sum()
    }
}

fn refused<C: Clock>(name: LimiterName, refusal: &NotUntil<C::Instant>, clock: &C) -> RetryAfter {
    metrics::counter!(names::RATE_LIMITED, "limiter" => name.as_str()).increment(1);
    RetryAfter(refusal.wait_time_from(clock.now()))
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
