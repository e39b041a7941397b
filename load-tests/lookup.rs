//! Lookup timing: an unknown receipt and a wrong contact for a real receipt must not be told
//! apart by how long the `404` takes, or the answer's timing would say which receipts exist.
//!
//! Sixteen keep-alive connections each send lookups one at a time, the three kinds in random
//! order: an unknown receipt with a real contact, a known
//! receipt with a wrong contact of the same kind and length, and the right contact. The difference of the two `404` kinds' medians is taken in
//! each of [`BLOCKS`] consecutive blocks, so a slow minute on a shared machine moves both alike;
//! the mean difference and its 95% interval over the blocks are the result. "No measurable
//! difference" means the interval includes zero.

use bytes::Bytes;
use hyper::Method;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use reliefline::domain::Receipt;
use tokio::time::Instant;

use crate::client::Conn;
use crate::reports::{self, Contact};
use crate::service;
use crate::{Common, Workspace, table};

const BLOCKS: usize = 20;
/// Connections, each sending one lookup at a time: a lookup without a match waits out a floor
/// (see `intake::lookup`), so one connection alone would gather few samples.
const CONNECTIONS: usize = 16;
/// Reports looked up (each with its right and a wrong contact).
const REPORTS: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    UnknownReceipt,
    WrongContact,
    Found,
}

pub async fn lookup(common: &Common) -> anyhow::Result<bool> {
    let ws = Workspace::new(common).await?;
    let mut env = Vec::new();
    for profile in ["NORMAL", "INCIDENT"] {
        for limit in ["LOOKUP_IP", "LOOKUP_RECEIPT"] {
            // The limits would answer 429 long before a measurement is done.
            env.push((
                format!("RELIEFLINE_RATE_LIMITS__{profile}__{limit}__PER_MINUTE"),
                "0".to_owned(),
            ));
        }
    }
    let svc = service::start_service_with(&ws.spec, None, "service-lookup.log", &env).await?;
    let mut conn = Conn::new(svc.http);
    let mut known = Vec::new();
    for sample in reports::pool(REPORTS, 11, None) {
        let reply = conn
            .send(
                Method::POST,
                "/api/v1/reports",
                &[],
                Some(sample.body.clone()),
            )
            .await?;
        anyhow::ensure!(
            reply.status == 201,
            "a report was answered {}",
            reply.status
        );
        let answer: serde_json::Value = serde_json::from_slice(&reply.body)?;
        let receipt = answer["receipt"].as_str().unwrap_or_default().to_owned();
        let contact = match sample.contact {
            Contact::Phone(p) | Contact::Email(p) => p,
        };
        known.push((receipt, contact));
    }

    let known = std::sync::Arc::new(known);
    let warmup_end = Instant::now() + std::time::Duration::from_secs(common.warmup);
    let end = warmup_end + std::time::Duration::from_secs(common.duration);
    let connections: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let known = std::sync::Arc::clone(&known);
            tokio::spawn(measure(svc.http, known, 12 + i as u64, warmup_end, end))
        })
        .collect();
    let mut timed = Vec::new();
    let (mut not_found_right, mut wrong_answers) = (0, 0);
    for connection in connections {
        let measured = connection.await??;
        timed.extend(measured.samples);
        not_found_right += measured.not_found_right;
        wrong_answers += measured.wrong_answers;
    }
    // In the order they were sent, so that each block is a stretch of time.
    timed.sort_by_key(|(at, _, _)| *at);
    let samples: Vec<(Kind, u64)> = timed.into_iter().map(|(_, k, t)| (k, t)).collect();
    let peak = svc.stop().await?;
    ws.drop_database().await?;

    let of = |kind| times(&samples, kind);
    let (unknown, wrong, found) = (
        of(Kind::UnknownReceipt),
        of(Kind::WrongContact),
        of(Kind::Found),
    );
    let (mean, half_width) = block_difference(&samples);
    let indistinguishable = (mean - half_width..=mean + half_width).contains(&0.0);
    println!(
        "## Lookup timing: unknown receipt against wrong contact ({CONNECTIONS} connections, one lookup at a time each)"
    );
    let describe = |xs: &[u64]| {
        format!(
            "{} lookups; p10 / p50 / p90 {:.1} / {:.1} / {:.1} µs",
            xs.len(),
            quantile(xs, 0.1) / 1e3,
            quantile(xs, 0.5) / 1e3,
            quantile(xs, 0.9) / 1e3
        )
    };
    table(&[
        ("unknown receipt (404)", describe(&unknown)),
        ("wrong contact (404)", describe(&wrong)),
        ("right contact (200)", describe(&found)),
        (
            "ratio of medians wrong / unknown",
            format!(
                "{:.3}",
                quantile(&wrong, 0.5) / quantile(&unknown, 0.5).max(1.0)
            ),
        ),
        (
            "difference of medians",
            format!(
                "{:+.2} µs, 95% interval {:+.2} .. {:+.2} µs over {BLOCKS} blocks  (target: includes 0: {})",
                mean / 1e3,
                (mean - half_width) / 1e3,
                (mean + half_width) / 1e3,
                crate::verdict(indistinguishable)
            ),
        ),
        ("right contact not found", not_found_right.to_string()),
        ("404s answered otherwise", wrong_answers.to_string()),
        (
            "peak RSS (VmHWM)",
            format!("{:.0} MiB", peak as f64 / 1024.0),
        ),
    ]);
    println!();
    // Every acknowledged report must be found with its contact, and nothing else.
    Ok(not_found_right == 0 && wrong_answers == 0)
}

/// Another contact of the same kind and length as `contact`, so parsing it costs the same: an
/// e-mail address with another first letter, a phone number with other last four digits (in
/// the same width).
fn wrong_but_alike(contact: &str, rng: &mut StdRng) -> String {
    loop {
        let wrong = alike(contact, rng);
        if wrong != contact {
            return wrong;
        }
    }
}

fn alike(contact: &str, rng: &mut StdRng) -> String {
    if contact.contains('@') {
        let first = if contact.starts_with('z') { 'y' } else { 'z' };
        format!(
            "{first}{}",
            &contact[contact.char_indices().nth(1).map_or(0, |(i, _)| i)..]
        )
    } else {
        let chars: Vec<char> = contact.chars().collect();
        let keep = chars.len().saturating_sub(4);
        let wide = chars.last().is_some_and(|c| !c.is_ascii());
        let tail = (0..4).map(|_| {
            let d = rng.random_range(0..10u32);
            let digit = if wide {
                char::from_u32(0xFF10 + d)
            } else {
                char::from_digit(d, 10)
            };
            digit.unwrap_or('0')
        });
        chars[..keep].iter().copied().chain(tail).collect()
    }
}

/// What one connection measured: when each lookup was sent, its kind and how long it took.
struct Measured {
    samples: Vec<(Instant, Kind, u64)>,
    not_found_right: u64,
    wrong_answers: u64,
}

/// Lookups one at a time on one connection until `end`, kept from `warmup_end` on.
async fn measure(
    addr: std::net::SocketAddr,
    known: std::sync::Arc<Vec<(String, String)>>,
    seed: u64,
    warmup_end: Instant,
    end: Instant,
) -> anyhow::Result<Measured> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = Conn::new(addr);
    let mut measured = Measured {
        samples: Vec::new(),
        not_found_right: 0,
        wrong_answers: 0,
    };
    while Instant::now() < end {
        let (receipt, contact) = &known[rng.random_range(0..known.len())];
        let kind = match rng.random_range(0..5) {
            0..=1 => Kind::UnknownReceipt,
            2..=3 => Kind::WrongContact,
            _ => Kind::Found,
        };
        let body = match kind {
            Kind::UnknownReceipt => lookup_body(Receipt::generate().as_str(), contact),
            Kind::WrongContact => lookup_body(receipt, &wrong_but_alike(contact, &mut rng)),
            Kind::Found => lookup_body(receipt, contact),
        };
        let started = Instant::now();
        let reply = conn
            .send(Method::POST, "/api/v1/reports/lookup", &[], Some(body))
            .await?;
        let took = started.elapsed();
        let expected = if kind == Kind::Found { 200 } else { 404 };
        if reply.status != expected {
            if kind == Kind::Found {
                measured.not_found_right += 1;
            } else {
                measured.wrong_answers += 1;
            }
            continue;
        }
        if started >= warmup_end {
            let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            measured.samples.push((started, kind, nanos));
        }
    }
    Ok(measured)
}

fn lookup_body(receipt: &str, contact: &str) -> Bytes {
    Bytes::from(serde_json::json!({"receipt": receipt, "contact": contact}).to_string())
}

/// The times of `kind`'s lookups among `samples`.
fn times(samples: &[(Kind, u64)], kind: Kind) -> Vec<u64> {
    samples
        .iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, t)| *t)
        .collect()
}

/// The `q` quantile of `xs` (nanoseconds), 0 when empty.
fn quantile(xs: &[u64], q: f64) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at] as f64
}

/// Median(wrong contact) − median(unknown receipt) in each of [`BLOCKS`] consecutive blocks of
/// `samples`: their mean and the half-width of its 95% interval (t ≈ 2.09 for 19 degrees of
/// freedom), in nanoseconds.
fn block_difference(samples: &[(Kind, u64)]) -> (f64, f64) {
    let size = (samples.len() / BLOCKS).max(1);
    let diffs: Vec<f64> = samples
        .chunks(size)
        .take(BLOCKS)
        .map(|block| {
            quantile(&times(block, Kind::WrongContact), 0.5)
                - quantile(&times(block, Kind::UnknownReceipt), 0.5)
        })
        .collect();
    let n = diffs.len() as f64;
    if n < 2.0 {
        return (0.0, f64::INFINITY);
    }
    let mean = diffs.iter().sum::<f64>() / n;
    let variance = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 2.09 * (variance / n).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_gap_is_measured_and_none_is_not() {
        // Wrong contact always 5 µs slower, with noise that both kinds share per block.
        let mut rng = StdRng::seed_from_u64(1);
        let mut with_gap = Vec::new();
        let mut without = Vec::new();
        for i in 0..20_000_u64 {
            let base = 150_000 + (i / 1000) * 3_000 + rng.random_range(0..20_000);
            let kind = if i % 2 == 0 {
                Kind::UnknownReceipt
            } else {
                Kind::WrongContact
            };
            let gap = if kind == Kind::WrongContact { 5_000 } else { 0 };
            with_gap.push((kind, base + gap));
            without.push((kind, base));
        }
        let (mean, half) = block_difference(&with_gap);
        assert!(
            (mean - 5_000.0).abs() < 1_000.0 && half < 2_000.0,
            "{mean} ± {half}"
        );
        let (mean, half) = block_difference(&without);
        assert!(
            (mean - half..=mean + half).contains(&0.0),
            "{mean} ± {half}"
        );
    }
}
