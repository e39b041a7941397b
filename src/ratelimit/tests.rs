use std::net::IpAddr;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::config::Config;

fn config() -> RateLimitConfig {
    Config::defaults().unwrap().rate_limits
}

fn limit(per_minute: f64, burst: u32) -> Limit {
    Limit { per_minute, burst }
}

fn limiters(config: &RateLimitConfig) -> (Limiters<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (Limiters::with_clock(config, clock.clone()).unwrap(), clock)
}

fn client(ip: &str) -> ClientKey {
    ClientKey::from_ip(ip.parse::<IpAddr>().unwrap())
}

/// The n-th of many distinct IPv4 clients.
fn nth_client(n: u32) -> ClientKey {
    ClientKey::from_ip(IpAddr::V4(std::net::Ipv4Addr::from_bits(0x0A00_0000 + n)))
}

#[test]
fn builds_on_the_real_clock_and_can_be_shared_between_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>(_: &T) {}
    let limiters = Limiters::new(&config()).unwrap();
    shareable(&limiters);
    assert_eq!(limiters.check_report_ip(&client("198.51.100.1")), Ok(()));
    assert_eq!(limiters.check_admission(), Ok(()));
}

#[test]
fn a_burst_passes_then_refusal_says_when_to_come_back() {
    let mut config = config();
    config.normal.report_ip = limit(6.0, 3);
    let (limiters, clock) = limiters(&config);
    let alice = client("198.51.100.1");

    for _ in 0..3 {
        assert_eq!(limiters.check_report_ip(&alice), Ok(()));
    }
    // One token every 10 s; the bucket is empty, so the next one is 10 s away.
    assert_eq!(
        limiters.check_report_ip(&alice),
        Err(RetryAfter(Duration::from_secs(10)))
    );
    clock.advance(Duration::from_secs(4));
    assert_eq!(
        limiters.check_report_ip(&alice),
        Err(RetryAfter(Duration::from_secs(6)))
    );
    clock.advance(Duration::from_secs(6));
    assert_eq!(limiters.check_report_ip(&alice), Ok(()));
    assert!(limiters.check_report_ip(&alice).is_err());
}

#[test]
fn keys_and_limiters_are_independent() {
    let mut config = config();
    config.normal.report_ip = limit(1.0, 2);
    config.normal.lookup_ip = limit(1.0, 2);
    let (limiters, _clock) = limiters(&config);
    let alice = client("198.51.100.1");
    let bob = client("198.51.100.2");

    for _ in 0..2 {
        limiters.check_report_ip(&alice).unwrap();
    }
    assert!(limiters.check_report_ip(&alice).is_err());
    assert_eq!(limiters.check_report_ip(&bob), Ok(()));
    assert_eq!(limiters.check_lookup_ip(&alice), Ok(()));
}

#[test]
fn one_ipv6_host_cannot_rotate_through_its_64() {
    let mut config = config();
    config.normal.report_ip = limit(1.0, 2);
    let (limiters, _clock) = limiters(&config);
    limiters
        .check_report_ip(&client("2001:db8:5:6::1"))
        .unwrap();
    limiters
        .check_report_ip(&client("2001:db8:5:6::2"))
        .unwrap();
    assert!(
        limiters
            .check_report_ip(&client("2001:db8:5:6:abcd::9"))
            .is_err()
    );
    assert_eq!(limiters.check_report_ip(&client("2001:db8:5:7::1")), Ok(()));
}

#[test]
fn switching_profile_changes_the_quota_without_resetting_it() {
    let mut config = config();
    config.normal.report_ip = limit(1.0, 2);
    config.incident.report_ip = limit(60.0, 5);
    let (limiters, _clock) = limiters(&config);
    let carrier_nat = client("203.0.113.9");
    assert_eq!(limiters.profile(), Profile::Normal);

    for _ in 0..2 {
        limiters.check_report_ip(&carrier_nat).unwrap();
    }
    assert!(limiters.check_report_ip(&carrier_nat).is_err());

    limiters.set_profile(Profile::Incident);
    assert_eq!(limiters.profile(), Profile::Incident);
    for _ in 0..5 {
        assert_eq!(limiters.check_report_ip(&carrier_nat), Ok(()));
    }
    assert_eq!(
        limiters.check_report_ip(&carrier_nat),
        Err(RetryAfter(Duration::from_secs(1)))
    );

    // Back in normal mode the old bucket is still empty: toggling is no way to reset it.
    limiters.set_profile(Profile::Normal);
    assert!(limiters.check_report_ip(&carrier_nat).is_err());
}

#[test]
fn clones_share_the_profile_and_the_buckets() {
    let mut config = config();
    config.normal.lookup_ip = limit(1.0, 1);
    let (limiters, _clock) = limiters(&config);
    let other = limiters.clone();
    other.set_profile(Profile::Incident);
    assert_eq!(limiters.profile(), Profile::Incident);
    other.set_profile(Profile::Normal);
    limiters.check_lookup_ip(&client("198.51.100.1")).unwrap();
    assert!(other.check_lookup_ip(&client("198.51.100.1")).is_err());
}

#[test]
fn per_minute_zero_turns_a_limit_off() {
    let mut config = config();
    config.normal.report_ip = limit(0.0, 0);
    config.normal.admission = limit(0.0, 1);
    let (limiters, _clock) = limiters(&config);
    let busy = client("198.51.100.1");
    for _ in 0..10_000 {
        assert_eq!(limiters.check_report_ip(&busy), Ok(()));
        assert_eq!(limiters.check_admission(), Ok(()));
    }
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 0);
}

#[test]
fn admission_is_one_bucket_for_everyone() {
    let mut config = config();
    config.normal.admission = limit(120.0, 3);
    let (limiters, clock) = limiters(&config);
    for _ in 0..3 {
        assert_eq!(limiters.check_admission(), Ok(()));
    }
    assert_eq!(
        limiters.check_admission(),
        Err(RetryAfter(Duration::from_millis(500)))
    );
    clock.advance(Duration::from_millis(500));
    assert_eq!(limiters.check_admission(), Ok(()));
}

#[test]
fn lookups_per_receipt_stay_tight_in_both_profiles() {
    let (limiters, clock) = limiters(&config());
    let receipt = Receipt::parse("HR-7K3M-Q9XD-2PZA-8WNE").unwrap();
    let same_receipt_typed_loosely = Receipt::parse("hr 7k3m q9xd 2pza 8wne").unwrap();
    let other = Receipt::parse("HR-0000-1111-2222-3333").unwrap();

    limiters.set_profile(Profile::Incident);
    for _ in 0..5 {
        limiters.check_lookup_receipt(&receipt).unwrap();
    }
    let Err(RetryAfter(wait)) = limiters.check_lookup_receipt(&same_receipt_typed_loosely) else {
        panic!("a sixth try on the same receipt must be refused");
    };
    assert_eq!(wait, Duration::from_secs(600));
    assert_eq!(limiters.check_lookup_receipt(&other), Ok(()));

    // An hour of trying yields six more attempts, not hundreds.
    let mut allowed = 0;
    for _ in 0..360 {
        clock.advance(Duration::from_secs(10));
        allowed += u32::from(limiters.check_lookup_receipt(&receipt).is_ok());
    }
    assert_eq!(allowed, 6);
}

#[test]
fn refusals_are_counted_by_limiter_without_the_key() {
    let handle = crate::telemetry::metrics_handle();
    let refusals = || {
        let rendered = handle.render();
        rendered
            .lines()
            .find(|l| l.starts_with("reliefline_rate_limited_total{limiter=\"lookup_receipt\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = refusals();
    let (limiters, _clock) = limiters(&config());
    let receipt = Receipt::parse("HR-7K3M-Q9XD-2PZA-8WNE").unwrap();
    let mut refused = 0.0;
    for _ in 0..8 {
        if limiters.check_lookup_receipt(&receipt).is_err() {
            refused += 1.0;
        }
    }
    assert_eq!(refused, 3.0);
    // Other tests may refuse lookups concurrently; they can only add to the count.
    assert!(refusals() - before >= refused);
    let rendered = handle.render();
    assert!(!rendered.contains("7K3M"), "a receipt leaked into /metrics");
}

#[test]
fn pruning_drops_idle_keys_and_keeps_active_ones() {
    let mut config = config();
    config.normal.report_ip = limit(6.0, 3);
    let (limiters, clock) = limiters(&config);
    for n in 0..1_000 {
        limiters.check_report_ip(&nth_client(n)).unwrap();
    }
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 1_000);

    // Still within their buckets' memory: nothing may be forgotten yet.
    limiters.prune();
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 1_000);

    clock.advance(Duration::from_secs(60));
    let regular = nth_client(7);
    for _ in 0..3 {
        limiters.check_report_ip(&regular).unwrap();
    }
    limiters.prune();
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 1);
    assert!(
        limiters.check_report_ip(&regular).is_err(),
        "an active key keeps its state through a prune"
    );
}

#[test]
fn a_flood_of_new_keys_cannot_grow_memory_past_the_cap() {
    let mut config = config();
    config.max_keys = 100;
    config.normal.report_ip = limit(6.0, 3);
    let (limiters, clock) = limiters(&config);
    let regular = client("198.51.100.1");
    limiters.check_report_ip(&regular).unwrap();

    let mut flood_allowed = 0;
    for n in 0..10_000 {
        flood_allowed += u32::from(limiters.check_report_ip(&nth_client(n)).is_ok());
    }
    // 100 keys plus the one overflow bucket every later newcomer shares.
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 101);
    assert_eq!(flood_allowed, 99 + 3);

    // A client known before the flood keeps its own bucket...
    assert_eq!(limiters.check_report_ip(&regular), Ok(()));
    // ...while a newcomer lands in the exhausted overflow bucket.
    assert!(limiters.check_report_ip(&client("192.0.2.1")).is_err());

    // Once the flood's keys have gone idle, the next newcomer makes room and gets its own.
    clock.advance(Duration::from_secs(60));
    assert_eq!(limiters.check_report_ip(&client("192.0.2.1")), Ok(()));
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 1);
}

#[test]
fn a_full_limiter_prunes_on_the_request_path_at_most_once_a_second() {
    let mut config = config();
    config.max_keys = 10;
    config.normal.report_ip = limit(600.0, 1);
    let (limiters, clock) = limiters(&config);
    for n in 0..10 {
        limiters.check_report_ip(&nth_client(n)).unwrap();
    }
    // Full: this request prunes (nothing is idle yet) and then uses the overflow bucket.
    limiters.check_report_ip(&nth_client(100)).unwrap();
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 11);
    // Every key is idle 200 ms later, but the request path may not prune again so soon.
    clock.advance(Duration::from_millis(500));
    limiters.check_report_ip(&nth_client(101)).unwrap();
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 11);
    // A second after the last forced prune, the next request makes room.
    clock.advance(Duration::from_millis(500));
    limiters.check_report_ip(&nth_client(102)).unwrap();
    assert_eq!(limiters.key_count(LimiterName::ReportIp), 1);
}

#[tokio::test(start_paused = true)]
async fn the_pruner_runs_on_its_interval_and_stops_when_cancelled() {
    let mut config = config();
    config.prune_interval_ms = 10_000;
    config.normal.subscribe_ip = limit(6.0, 3);
    let (limiters, clock) = limiters(&config);
    for n in 0..500 {
        limiters.check_subscribe_ip(&nth_client(n)).unwrap();
    }
    let cancel = CancellationToken::new();
    let pruner = limiters.spawn_pruner(cancel.clone());

    clock.advance(Duration::from_secs(60));
    let mut intervals = 0;
    while limiters.key_count(LimiterName::SubscribeIp) > 0 {
        intervals += 1;
        assert!(intervals < 10, "the pruner did not run");
        tokio::time::sleep(config.prune_interval()).await;
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(1), pruner)
        .await
        .expect("the pruner stops when cancelled")
        .unwrap();
}

#[test]
fn default_limits_are_generous_in_incident_mode_except_per_receipt() {
    let config = config();
    let (normal, incident) = (&config.normal, &config.incident);
    assert!(incident.report_ip.per_minute >= 10.0 * normal.report_ip.per_minute);
    assert!(incident.admission.per_minute > normal.admission.per_minute);
    assert_eq!(incident.lookup_receipt, normal.lookup_receipt);
    assert!(normal.lookup_receipt.per_minute * 60.0 <= 10.0);
    assert!(config.trusted_proxies.is_empty());
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
fn config_errors_name_the_key() {
    for (var, value, key) in [
        (
            "RELIEFLINE_RATE_LIMITS__NORMAL__REPORT_IP__BURST",
            "0",
            "rate_limits.normal.report_ip.burst",
        ),
        (
            "RELIEFLINE_RATE_LIMITS__INCIDENT__LOOKUP_RECEIPT__PER_MINUTE",
            "-1",
            "rate_limits.incident.lookup_receipt.per_minute",
        ),
        (
            "RELIEFLINE_RATE_LIMITS__NORMAL__ADMISSION__PER_MINUTE",
            "lots",
            "rate_limits.normal.admission.per_minute",
        ),
        (
            "RELIEFLINE_RATE_LIMITS__NORMAL__REPORT_IP__PER_HOUR",
            "5",
            "rate_limits.normal.report_ip.per_hour",
        ),
        (
            "RELIEFLINE_RATE_LIMITS__MAX_KEYS",
            "0",
            "rate_limits.max_keys",
        ),
        (
            "RELIEFLINE_RATE_LIMITS__PRUNE_INTERVAL_MS",
            "5",
            "rate_limits.prune_interval_ms",
        ),
        (
            "RELIEFLINE_RATE_LIMITS__TRUSTED_PROXIES",
            "10.0.0.0/33",
            "rate_limits.trusted_proxies",
        ),
    ] {
        figment::Jail::expect_with(|jail| {
            jail.set_env(var, value);
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
            Ok(())
        });
    }
}

#[test]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
fn the_environment_turns_limits_off_or_up() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("RELIEFLINE_RATE_LIMITS__NORMAL__REPORT_IP__PER_MINUTE", "0");
        jail.set_env(
            "RELIEFLINE_RATE_LIMITS__NORMAL__ADMISSION__BURST",
            "1000000",
        );
        jail.set_env("RELIEFLINE_RATE_LIMITS__TRUSTED_PROXIES", "10.0.0.0/8,::1");
        let config = Config::load(None).map_err(|e| e.to_string())?;
        let rate_limits = &config.rate_limits;
        assert!(rate_limits.trusted_proxies.contains("::1".parse().unwrap()));
        assert!(
            rate_limits
                .trusted_proxies
                .contains("10.1.1.1".parse().unwrap())
        );
        let (limiters, _clock) = limiters(rate_limits);
        let benchmark = client("127.0.0.1");
        for _ in 0..100_000 {
            assert_eq!(limiters.check_report_ip(&benchmark), Ok(()));
            assert_eq!(limiters.check_admission(), Ok(()));
        }
        Ok(())
    });
}
