//! The promise behind every `201`: the report is in the store, with everything it causes. After
//! the service has stopped, every receipt the benchmark was given is looked up in the `reports`
//! table itself, the stored contact hash is compared with the contact that was sent, and the
//! report's receipt confirmations in the `outbox` are counted against the channels it asked for.

use std::collections::HashMap;
use std::str::FromStr as _;

use anyhow::Context as _;
use reliefline::crypto::Keys;
use reliefline::domain::{EmailAddress, PhoneNumber};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, PgConnection, SqliteConnection};

use crate::reports::{Acknowledged, Contact};

/// A stored contact hash: the phone's and the e-mail's, each if given.
type Hashes = (Option<Vec<u8>>, Option<Vec<u8>>);
/// A report's receipt, contact hashes and receipt confirmations in the outbox.
type Row = (String, Option<Vec<u8>>, Option<Vec<u8>>, i64);
const ROWS: &str = "SELECT r.receipt, r.phone_hmac, r.email_hmac, \
     (SELECT count(*) FROM outbox o WHERE o.source_id = r.id \
     AND o.template = 'receipt_confirmation') FROM reports r";
/// Confirmations still leased once the service has stopped in order: it hands back what it
/// had not sent, so only a shutdown cut short leaves any (they are due again when the lease
/// lapses).
const LEASED: &str = "SELECT count(*) FROM outbox WHERE state = 'sending'";

/// What the store holds of what was acknowledged.
#[derive(Debug, Default)]
pub struct Audit {
    /// Distinct receipts answered with `201`.
    pub acknowledged: usize,
    /// Rows in `reports`.
    pub stored: usize,
    /// Acknowledged receipts with no row.
    pub lost: usize,
    /// Rows whose contact hash is not the hash of what was sent.
    pub wrong_contact: usize,
    /// Receipt confirmations asked for by acknowledged reports, and how many of them have no
    /// outbox row.
    pub confirmations: usize,
    pub confirmations_missing: usize,
    /// Outbox rows still leased after the orderly stop.
    pub leased: i64,
}

impl Audit {
    /// Nothing acknowledged is missing or wrong.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.wrong_contact == 0 && self.confirmations_missing == 0
    }

    /// The audit's lines of a scenario's result table.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "receipts acknowledged",
                format!("{} (rows in store: {})", self.acknowledged, self.stored),
            ),
            ("lost", self.lost.to_string()),
            ("stored contact differs", self.wrong_contact.to_string()),
            (
                "confirmations missing",
                format!("{} of {}", self.confirmations_missing, self.confirmations),
            ),
            ("left leased after the stop", self.leased.to_string()),
        ]
    }
}

pub async fn audit(
    database_url: &str,
    master_key: &str,
    acknowledged: &[Acknowledged],
) -> anyhow::Result<Audit> {
    let (rows, leased): (Vec<Row>, i64) = if database_url.starts_with("postgres") {
        let mut conn = PgConnection::connect(database_url).await?;
        let rows = sqlx::query_as(ROWS).fetch_all(&mut conn).await?;
        (rows, sqlx::query_scalar(LEASED).fetch_one(&mut conn).await?)
    } else {
        let options = SqliteConnectOptions::from_str(database_url)?;
        let mut conn = SqliteConnection::connect_with(&options).await?;
        let rows = sqlx::query_as(ROWS).fetch_all(&mut conn).await?;
        (rows, sqlx::query_scalar(LEASED).fetch_one(&mut conn).await?)
    };
    let keys = Keys::from_hex(master_key).map_err(anyhow::Error::msg)?;
    let stored: HashMap<String, (Hashes, i64)> = rows
        .into_iter()
        .map(|(receipt, phone, email, confirmations)| (receipt, ((phone, email), confirmations)))
        .collect();
    let mut audit = Audit {
        stored: stored.len(),
        leased,
        ..Audit::default()
    };
    let mut seen = std::collections::HashSet::new();
    for ack in acknowledged {
        if !seen.insert(ack.receipt.as_str()) {
            continue;
        }
        audit.acknowledged += 1;
        audit.confirmations += ack.confirmations;
        let Some(((phone_hmac, email_hmac), written)) = stored.get(&ack.receipt) else {
            audit.lost += 1;
            audit.confirmations_missing += ack.confirmations;
            continue;
        };
        let written = usize::try_from(*written).unwrap_or_default();
        audit.confirmations_missing += ack.confirmations.saturating_sub(written);
        let (expected, stored_hash) = match &ack.contact {
            Contact::Phone(p) => (
                PhoneNumber::parse(p).context("a sent phone")?.e164(),
                phone_hmac,
            ),
            Contact::Email(e) => (
                EmailAddress::parse(e)
                    .context("a sent e-mail")?
                    .normalised(),
                email_hmac,
            ),
        };
        if stored_hash.as_deref() != Some(&keys.hash(&expected)[..]) {
            audit.wrong_contact += 1;
        }
    }
    Ok(audit)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use reliefline::config::Config;
    use reliefline::domain::Channel;
    use reliefline::intake::{ValidReport, sealed_write};
    use reliefline::notify::Lang;
    use secrecy::SecretString;

    use super::*;
    use crate::reports::{Sample, pool};

    /// Three acknowledged reports that ask for confirmations: one stored whole, one stored
    /// without its confirmations, one not stored at all.
    #[tokio::test]
    async fn missing_reports_and_missing_confirmations_are_both_counted() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let mut config = Config::defaults().unwrap();
        config.database.url = SecretString::from(url.clone());
        let store = reliefline::store::connect(&config.database).await.unwrap();
        store.migrate().await.unwrap();
        let master = "22".repeat(32);
        let keys = Keys::from_hex(&master).unwrap();

        let asking: Vec<Sample> = pool(200, 5, None)
            .into_iter()
            .filter(|s| s.confirmations > 0)
            .take(3)
            .collect();
        assert_eq!(asking.len(), 3);
        let mut acknowledged = Vec::new();
        let mut writes = Vec::new();
        for sample in &asking {
            let body: serde_json::Value = serde_json::from_slice(&sample.body).unwrap();
            let report = ValidReport::from_json(&body, Utc::now()).unwrap();
            let write = sealed_write(&keys, report, Channel::Api, Lang::Ko, None);
            assert_eq!(write.outbox.len(), sample.confirmations);
            acknowledged.push(Acknowledged {
                receipt: write.report.receipt.as_str().to_owned(),
                contact: sample.contact.clone(),
                confirmations: sample.confirmations,
            });
            writes.push(write);
        }
        writes[1].outbox.clear();
        store.insert_reports(&writes[..2]).await.unwrap();
        store.close().await;

        let audit = audit(&url, &master, &acknowledged).await.unwrap();
        assert_eq!((audit.acknowledged, audit.stored), (3, 2));
        assert_eq!((audit.lost, audit.wrong_contact), (1, 0));
        let asked: usize = asking.iter().map(|s| s.confirmations).sum();
        assert_eq!(audit.confirmations, asked);
        assert_eq!(
            audit.confirmations_missing,
            asking[1].confirmations + asking[2].confirmations
        );
        assert_eq!(audit.leased, 0);
        assert!(!audit.passed());
    }
}
