//! The store's own ceiling for intake: the surge's reports, checked and sealed exactly as the
//! service does it, written straight into the store in batches of `intake.batch_max` by as many
//! writers as the service uses, with no HTTP, queue or handler in front. Only the commits are
//! timed (building the batches is not).
//!
//! Intake can never commit faster than this; how far below it the service stays is what HTTP,
//! the batcher and the dispatcher sharing the writer cost. And if this ceiling is itself below a
//! target set against the baseline, no service on this store and machine could reach that target.
//!
//! A closed loop of n clients can never fill a batch beyond n reports (n / writers on each of
//! several writers), and a commit has a fixed cost (the fsync, the pages every commit rewrites),
//! so the same measurement in batches of that size is the ceiling for such a run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use reliefline::config::Config;
use reliefline::crypto::Keys;
use reliefline::domain::Channel;
use reliefline::intake::{ValidReport, sealed_write};
use reliefline::notify::Lang;
use reliefline::store::{self, DynStore, ReportWrite};
use secrecy::SecretString;

use crate::reports::Sample;

/// What the store committed on its own.
pub struct Ceiling {
    pub per_second: f64,
    pub reports: usize,
    pub batch: usize,
    pub writers: usize,
}

/// The service's store, opened once for every measurement of a run.
pub struct StoreAlone {
    store: DynStore,
    keys: Keys,
    batch_max: usize,
    writers: usize,
}

impl StoreAlone {
    /// Open the store at `database_url` as the service would, with its default batching.
    pub async fn open(database_url: &str, postgres: bool) -> anyhow::Result<Self> {
        let mut config = Config::defaults()?;
        config.database.url = SecretString::from(database_url.to_owned());
        Ok(Self {
            store: store::connect(&config.database).await?,
            keys: Keys::from_master(&rand::random()),
            batch_max: config.intake.batch_max,
            writers: if postgres {
                config.intake.postgres_writers
            } else {
                1
            },
        })
    }

    /// Write batches until `budget` of commit time has passed. With `clients`, a batch holds no
    /// more reports than that many clients can have waiting on each writer at once.
    pub async fn measure(
        &self,
        samples: &[Sample],
        clients: Option<usize>,
        budget: Duration,
    ) -> anyhow::Result<Ceiling> {
        let writers = self.writers;
        let batch = batch_size(self.batch_max, writers, clients);
        let mut next = samples.iter().cycle();
        let mut build = || -> anyhow::Result<Vec<ReportWrite>> {
            (0..batch)
                .map(|_| {
                    let sample = next.next().context("no samples")?;
                    let body: serde_json::Value = serde_json::from_slice(&sample.body)?;
                    let valid = ValidReport::from_json(&body, chrono::Utc::now())
                        .map_err(|e| anyhow::anyhow!("a benchmark report is invalid: {e:?}"))?;
                    Ok(sealed_write(
                        &self.keys,
                        valid,
                        Channel::Api,
                        Lang::Ko,
                        None,
                    ))
                })
                .collect()
        };
        let (mut spent, mut reports) = (Duration::ZERO, 0);
        while spent < budget {
            let batches = (0..writers)
                .map(|_| build())
                .collect::<anyhow::Result<Vec<_>>>()?;
            let started = Instant::now();
            futures::future::try_join_all(batches.iter().map(|b| self.store.insert_reports(b)))
                .await
                .context("writing a batch straight into the store")?;
            spent += started.elapsed();
            reports += batch * writers;
        }
        Ok(Ceiling {
            per_second: reports as f64 / spent.as_secs_f64(),
            reports,
            batch,
            writers,
        })
    }

    pub async fn close(self) {
        self.store.close().await;
    }
}

/// Reports in one batch: the configured most, or fewer when `clients` spread over `writers`
/// cannot fill it.
fn batch_size(batch_max: usize, writers: usize, clients: Option<usize>) -> usize {
    let batch_max = batch_max.max(1);
    clients.map_or(batch_max, |n| {
        n.div_ceil(writers.max(1)).clamp(1, batch_max)
    })
}

#[cfg(test)]
mod tests {
    use super::batch_size;

    #[test]
    fn a_closed_loop_fills_batches_only_up_to_its_clients_per_writer() {
        assert_eq!(batch_size(1000, 1, None), 1000);
        assert_eq!(batch_size(1000, 1, Some(64)), 64);
        assert_eq!(batch_size(1000, 2, Some(64)), 32);
        assert_eq!(batch_size(1000, 2, Some(5)), 3);
        assert_eq!(batch_size(1000, 1, Some(5000)), 1000);
        assert_eq!(batch_size(1000, 1, Some(0)), 1);
    }
}
