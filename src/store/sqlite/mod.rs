//! SQLite: the embedded default. One file, WAL, `synchronous=FULL` so a commit survives power
//! loss; one writer connection (SQLite serialises writers anyway) and a pool of readers.

use std::path::Path;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Conflict, Store, StoreError, StoreResult};
use crate::config::DatabaseConfig;

mod audit;
mod fanout;
mod incidents;
mod outbox;
mod reports;
mod subscriptions;

/// Liveness probe, the same on every backend.
const PING: &str = "SELECT 1";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes: SQLite serialises writers, so more would only queue.
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path, config: &DatabaseConfig) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating database folder {}", dir.display()))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(config.busy_timeout())
            .foreign_keys(true)
            .pragma("temp_store", "memory");
        // The writer keeps 32 MiB of pages (SQLite's default is 2 MiB): claims and outcome
        // updates revisit the outbox rows it has just written, which then need no reads.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options.clone().pragma("cache_size", "-32768"))
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options)
            .await
            .with_context(|| format!("opening SQLite readers on {}", path.display()))?;
        Ok(Self { writer, reader })
    }

    pub(super) fn error(e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(e, conflict_of)
    }
}

/// SQLite names the columns, not the constraint: "UNIQUE constraint failed: reports.receipt".
fn conflict_of(message: &str) -> Conflict {
    if message.contains("reports.receipt") {
        Conflict::Receipt
    } else if message.contains("reports.idempotency_key") {
        Conflict::IdempotencyKey
    } else {
        Conflict::Other
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .context("applying SQLite migrations")?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query(PING)
            .execute(&self.reader)
            .await
            .map_err(Self::error)?;
        Ok(())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
