//! Persistence: one narrow trait of use-case methods, implemented for SQLite (the embedded
//! default) and PostgreSQL (shared by several replicas).
//!
//! The trait is split by capability (`reports`, `audit`, `outbox`, …), each file holding its
//! records and the statements that read the same on both backends; `sqlite/` and `postgres/`
//! implement each capability in a file of the same name, writing per backend only what really
//! differs (batch inserts, claims). Times are stored as Unix epoch
//! milliseconds, ids as UUIDv7.

mod audit;
mod fanout;
mod incidents;
mod outbox;
mod postgres;
mod reports;
mod sqlite;
mod subscriptions;

use std::sync::Arc;

use crate::config::{DatabaseConfig, DatabaseTarget};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};

pub use audit::{AuditEntry, AuditStore};
pub use fanout::{FanoutProgress, FanoutState, FanoutStep, FanoutStore};
pub use incidents::{
    Confirmation, Incident, IncidentRecord, IncidentStore, IncidentUpdate, NewIncident,
    NewIncidentUpdate, Transition,
};
pub use outbox::{
    Lease, MessageChannel, MessageState, NewMessage, OutboxMessage, OutboxProgress, OutboxStore,
    Outcome, PendingStat, Requeue,
};
pub use postgres::PgStore;
pub use reports::{
    ContactHashes, HistoryEntry, IdempotencyRecord, IdempotentReport, NewReport, ReportStore,
    ReportWrite, StatusChange, StatusNotice, StatusOutcome, StoredReport,
};
pub use sqlite::SqliteStore;
pub use subscriptions::{
    Confirm, ConfirmOutcome, ContactLimit, NewSubscription, Proof, Scope, SubscribeOutcome,
    SubscriptionStore,
};

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

/// Everything Reliefline asks of its database: one trait per capability, plus the lifecycle.
#[async_trait]
pub trait Store:
    ReportStore
    + AuditStore
    + IncidentStore
    + SubscriptionStore
    + FanoutStore
    + OutboxStore
    + Send
    + Sync
    + 'static
{
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Apply pending migrations.
    async fn migrate(&self) -> StoreResult<()>;

    /// A cheap round trip proving the database answers.
    async fn ping(&self) -> StoreResult<()>;

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

/// A value read back from our own tables that does not parse means the data was changed
/// outside Reliefline; report it rather than guess.
fn parse_stored<T: std::str::FromStr>(text: &str, column: &str) -> StoreResult<T> {
    text.parse()
        .map_err(|_| StoreError::Other(anyhow::anyhow!("unreadable value in {column}")))
}
