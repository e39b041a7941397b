//! SQLite: the embedded default. One file, WAL, `synchronous=FULL` so a commit survives power
//! loss; one writer connection (SQLite serialises writers anyway), a pool of readers, and a
//! checkpointer that copies the log into the database file beside the writer, not inside it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use tokio_util::sync::CancellationToken;

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

/// The write-ahead log is truncated back to this size when it is reset after a checkpoint, so
/// a surge's log does not keep its disk space.
const WAL_SIZE_LIMIT: &str = "67108864";

/// A log still this long after a checkpoint (1 GiB of 4 KiB pages: readers kept the checkpoint
/// from finishing, time after time) is checkpointed with `TRUNCATE`, which waits for them.
const WAL_PAGES_FORCE: i64 = 262_144;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The only connection that writes: SQLite serialises writers, so more would only queue.
    writer: SqlitePool,
    reader: SqlitePool,
    /// Stops the background checkpointer, if there is one.
    checkpoints: CancellationToken,
    /// The latest lease end a claim has set: each claim's is later (see `claim_group`).
    last_lease_ms: Arc<AtomicI64>,
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
            .pragma("temp_store", "memory")
            .pragma("journal_size_limit", WAL_SIZE_LIMIT);
        let checkpoint_every = config.sqlite_checkpoint();
        // The writer keeps 32 MiB of pages (SQLite's default is 2 MiB): claims and outcome
        // updates revisit the outbox rows it has just written, which then need no reads. With a
        // checkpointer it never checkpoints itself: a checkpoint inside a commit copies pages
        // and syncs the database file while every report of the batch waits.
        let writer_options = options.clone().pragma("cache_size", "-32768").pragma(
            "wal_autocheckpoint",
            if checkpoint_every.is_some() {
                "0"
            } else {
                "1000"
            },
        );
        let writer = pool_options()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout())
            .connect_with(writer_options)
            .await
            .with_context(|| format!("opening SQLite database {}", path.display()))?;
        let reader = pool_options()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options.clone())
            .await
            .with_context(|| format!("opening SQLite readers on {}", path.display()))?;
        let checkpoints = CancellationToken::new();
        if let Some(every) = checkpoint_every {
            let own = pool_options()
                .max_connections(1)
                .acquire_timeout(config.acquire_timeout())
                .connect_with(options)
                .await
                .with_context(|| format!("opening SQLite checkpointer on {}", path.display()))?;
            tokio::spawn(checkpoint_until(own, every, checkpoints.clone()));
        }
        Ok(Self {
            writer,
            reader,
            checkpoints,
            last_lease_ms: Arc::new(AtomicI64::new(i64::MIN)),
        })
    }

    pub(super) fn error(e: sqlx::Error) -> StoreError {
        StoreError::from_sqlx(e, conflict_of)
    }

    /// `e` from a script that opens its own transaction on the writer: a failed statement stops
    /// the script with that transaction open on the only writer connection, so end it. When the
    /// failure came before `BEGIN` or at `COMMIT` there may be none, which is fine.
    pub(super) async fn script_failed(conn: &mut SqliteConnection, e: sqlx::Error) -> StoreError {
        drop(sqlx::query("ROLLBACK").execute(conn).await);
        Self::error(e)
    }
}

/// Pool settings every SQLite pool shares. A connection is not pinged before each use, as a
/// network connection would be: it is a thread of this process holding a file open, which
/// cannot drop away unnoticed, and the ping is a round trip to that thread at every
/// acquisition, one more hand-over ahead of each batch on the writer's critical path.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().test_before_acquire(false)
}

/// Copy the log into the database file every `every` until `stop`, beside the writer: a
/// passive checkpoint takes what no reader still needs and never blocks a commit.
async fn checkpoint_until(pool: SqlitePool, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match checkpoint(&pool, "PRAGMA wal_checkpoint(PASSIVE)").await {
            Ok(left) if left >= WAL_PAGES_FORCE => {
                tracing::warn!(
                    pages = left,
                    "write-ahead log still long after a checkpoint; waiting for readers to truncate it"
                );
                if let Err(e) = checkpoint(&pool, "PRAGMA wal_checkpoint(TRUNCATE)").await {
                    tracing::warn!(error = %e, "SQLite checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "SQLite checkpoint failed"),
        }
    }
    pool.close().await;
}

/// Run one checkpoint; the pages of the log it could not copy yet.
async fn checkpoint(pool: &SqlitePool, statement: &'static str) -> sqlx::Result<i64> {
    let (_busy, log, copied): (i64, i64, i64) = sqlx::query_as(statement).fetch_one(pool).await?;
    Ok(log - copied)
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
        self.checkpoints.cancel();
        self.writer.close().await;
        self.reader.close().await;
    }
}
