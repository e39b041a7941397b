//! Persistence: one narrow trait of use-case methods, implemented for SQLite (the embedded
//! default) and PostgreSQL (shared by several replicas).
//!
//! Statements that are identical on both backends live once in [`sql`]; only what really
//! differs (batch inserts, claims) is written per backend. Times are stored as Unix epoch
//! milliseconds, ids as UUIDv7.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use crate::config::{DatabaseConfig, DatabaseTarget};
use crate::crypto::SealedContact;
use crate::domain::{Channel, HarmType, Receipt, ReportStatus, ReporterType};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub type Timestamp = DateTime<Utc>;

/// Shared handle to whichever backend the configuration chose.
pub type DynStore = Arc<dyn Store>;

/// Why a store call failed, in the terms callers act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer in time: retry later, answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A uniqueness rule was broken; the caller decides what that means.
    #[error("conflict on {0:?}")]
    Conflict(Conflict),
    /// The row refers to something that does not exist (a foreign key).
    #[error("reference to a missing row")]
    MissingReference,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Which uniqueness rule a write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Receipt,
    IdempotencyKey,
    Other,
}

impl StoreError {
    /// Classify a driver error. `conflict_of` names the unique constraint from the backend's
    /// message, which differs between SQLite and PostgreSQL.
    fn from_sqlx(error: sqlx::Error, conflict_of: fn(&str) -> Conflict) -> Self {
        use sqlx::error::ErrorKind;
        match &error {
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => {
                    let name = db.constraint().unwrap_or_else(|| db.message());
                    Self::Conflict(conflict_of(name))
                }
                ErrorKind::ForeignKeyViolation => Self::MissingReference,
                // SQLite reports a busy/locked database as a plain database error.
                _ if is_transient(db.message()) => Self::Unavailable(error),
                _ => Self::Other(anyhow::Error::new(error)),
            },
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => Self::Unavailable(error),
            _ => Self::Other(anyhow::Error::new(error)),
        }
    }

    /// Transient: the same call may succeed later (used to answer 503 rather than 500).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

fn is_transient(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("database is locked")
        || m.contains("database is busy")
        || m.contains("disk i/o error")
        || m.contains("unable to open database")
        || m.contains("the database system is")
        || m.contains("terminating connection")
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A harm report ready to be written: every field already validated and personal data sealed.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub id: Uuid,
    pub receipt: Receipt,
    pub incident_id: Option<Uuid>,
    pub channel: Channel,
    pub provider: String,
    pub service: String,
    pub reporter_type: ReporterType,
    pub harm_type: HarmType,
    pub occurred_at: Option<Timestamp>,
    pub amount_krw: Option<i64>,
    pub title: Option<String>,
    pub description: String,
    pub reporter_name: Vec<u8>,
    pub phone: Option<SealedContact>,
    pub email: Option<SealedContact>,
    pub notify_sms: bool,
    pub notify_email: bool,
    pub idempotency: Option<IdempotencyRecord>,
    pub received_at: Timestamp,
}

/// The client's `Idempotency-Key` and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// Everything one accepted report causes, committed together: the report, its first history
/// entry (derived from the report), and the notifications it triggers.
#[derive(Debug, Clone)]
pub struct ReportWrite {
    pub report: NewReport,
    pub outbox: Vec<NewMessage>,
}

/// A notification to be delivered later by the outbox dispatcher.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Stable message id, sent to the gateway so receivers can deduplicate.
    pub id: Uuid,
    pub channel: MessageChannel,
    pub template: String,
    pub lang: String,
    pub recipient: Vec<u8>,
    pub payload: serde_json::Value,
    pub source_kind: String,
    pub source_id: Option<Uuid>,
    pub not_before: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum MessageChannel {
    Email,
    Sms,
}

/// What the status lookup needs to know about a report.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub id: Uuid,
    pub receipt: Receipt,
    pub status: ReportStatus,
    pub incident_id: Option<Uuid>,
    pub phone_hmac: Option<[u8; 32]>,
    pub email_hmac: Option<[u8; 32]>,
    pub received_at: Timestamp,
    /// Public history entries, oldest first.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub status: ReportStatus,
    pub at: Timestamp,
    pub note: Option<String>,
}

/// The first answer given to an idempotent submission, kept with the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentReport {
    pub receipt: Receipt,
    pub request_hash: [u8; 32],
    pub incident_id: Option<Uuid>,
    pub received_at: Timestamp,
}

/// One line of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<serde_json::Value>,
    pub client_addr: Option<String>,
}

/// The use cases Reliefline asks of its database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Apply pending migrations.
    async fn migrate(&self) -> StoreResult<()>;

    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Write every report of the batch, with its first history entry and its notifications, in
    /// one transaction: all committed or none.
    async fn insert_reports(&self, batch: &[ReportWrite]) -> StoreResult<()>;

    /// The report with this receipt, with its public history.
    async fn find_report(&self, receipt: &Receipt) -> StoreResult<Option<StoredReport>>;

    /// The report first submitted with this `Idempotency-Key`.
    async fn find_idempotent(&self, key: &str) -> StoreResult<Option<IdempotentReport>>;

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// Most recent audit entries first.
    async fn recent_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>>;

    /// Close connections; pending writes are already committed or abandoned by then.
    async fn close(&self);
}

/// Open the store the configuration points at, creating the SQLite folder when needed.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<DynStore> {
    let store: DynStore = match config.target() {
        DatabaseTarget::Sqlite { path } => Arc::new(SqliteStore::open(&path, config).await?),
        DatabaseTarget::Postgres => Arc::new(PgStore::connect(config).await?),
    };
    Ok(store)
}

pub(crate) fn to_millis(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Timestamp {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn hash_from_bytes(bytes: Option<Vec<u8>>) -> Option<[u8; 32]> {
    bytes.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

/// Rows shared by both backends' decoders.
#[derive(sqlx::FromRow)]
struct ReportRow {
    id: Uuid,
    receipt: String,
    status: String,
    incident_id: Option<Uuid>,
    phone_hmac: Option<Vec<u8>>,
    email_hmac: Option<Vec<u8>>,
    received_at: i64,
}

#[derive(sqlx::FromRow)]
struct HistoryRow {
    status: String,
    at: i64,
    note: Option<String>,
}

#[derive(sqlx::FromRow)]
struct IdempotentRow {
    receipt: String,
    request_hash: Option<Vec<u8>>,
    incident_id: Option<Uuid>,
    received_at: i64,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: Uuid,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    detail: Option<String>,
    client_addr: Option<String>,
}

impl ReportRow {
    fn into_stored(self, history: Vec<HistoryRow>) -> StoreResult<StoredReport> {
        Ok(StoredReport {
            id: self.id,
            receipt: parse_stored(&self.receipt, "reports.receipt")?,
            status: parse_stored(&self.status, "reports.status")?,
            incident_id: self.incident_id,
            phone_hmac: hash_from_bytes(self.phone_hmac),
            email_hmac: hash_from_bytes(self.email_hmac),
            received_at: from_millis(self.received_at),
            history: history
                .into_iter()
                .map(|h| {
                    Ok(HistoryEntry {
                        status: parse_stored(&h.status, "report_events.status")?,
                        at: from_millis(h.at),
                        note: h.note,
                    })
                })
                .collect::<StoreResult<_>>()?,
        })
    }
}

impl IdempotentRow {
    fn into_record(self) -> StoreResult<IdempotentReport> {
        Ok(IdempotentReport {
            receipt: parse_stored(&self.receipt, "reports.receipt")?,
            request_hash: hash_from_bytes(self.request_hash).unwrap_or_default(),
            incident_id: self.incident_id,
            received_at: from_millis(self.received_at),
        })
    }
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            at: from_millis(row.at),
            actor: row.actor,
            action: row.action,
            target: row.target,
            detail: row.detail.and_then(|d| serde_json::from_str(&d).ok()),
            client_addr: row.client_addr,
        }
    }
}

/// A value read back from our own tables that does not parse means the data was changed
/// outside Reliefline; report it rather than guess.
fn parse_stored<T: std::str::FromStr>(text: &str, column: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| StoreError::Other(anyhow::anyhow!("unreadable value in {column}")))
}
