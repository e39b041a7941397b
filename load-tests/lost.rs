//! The promise behind every `201`: the report is in the store. After the service has stopped,
//! every receipt the benchmark was given is looked up in the `reports` table itself, and the
//! stored contact hash is compared with the contact that was sent.

use std::collections::HashMap;
use std::str::FromStr as _;

use anyhow::Context as _;
use reliefline::crypto::Keys;
use reliefline::domain::{EmailAddress, PhoneNumber};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection as _, PgConnection, SqliteConnection};

use crate::reports::Contact;

/// A stored contact hash: the phone's and the e-mail's, each if given.
type Hashes = (Option<Vec<u8>>, Option<Vec<u8>>);
type Row = (String, Option<Vec<u8>>, Option<Vec<u8>>);
const ROWS: &str = "SELECT receipt, phone_hmac, email_hmac FROM reports";

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
}

pub async fn audit(
    database_url: &str,
    master_key: &str,
    receipts: &[(String, Contact)],
) -> anyhow::Result<Audit> {
    let rows: Vec<Row> = if database_url.starts_with("postgres") {
        let mut conn = PgConnection::connect(database_url).await?;
        sqlx::query_as(ROWS).fetch_all(&mut conn).await?
    } else {
        let options = SqliteConnectOptions::from_str(database_url)?;
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::query_as(ROWS).fetch_all(&mut conn).await?
    };
    let keys = Keys::from_hex(master_key).map_err(anyhow::Error::msg)?;
    let stored: HashMap<String, Hashes> = rows
        .into_iter()
        .map(|(receipt, phone, email)| (receipt, (phone, email)))
        .collect();
    let mut audit = Audit {
        stored: stored.len(),
        ..Audit::default()
    };
    let mut seen = std::collections::HashSet::new();
    for (receipt, contact) in receipts {
        if !seen.insert(receipt.as_str()) {
            continue;
        }
        audit.acknowledged += 1;
        let Some((phone_hmac, email_hmac)) = stored.get(receipt) else {
            audit.lost += 1;
            continue;
        };
        let (expected, stored_hash) = match contact {
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
