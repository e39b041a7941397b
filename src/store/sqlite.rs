//! SQLite: the embedded default. One file, WAL, `synchronous=FULL` so a commit survives power
//! loss; one writer connection (SQLite serialises writers anyway) and a pool of readers.

use std::path::Path;

use anyhow::Context as _;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::{
    AuditEntry, AuditRow, Conflict, HistoryRow, IdempotentReport, IdempotentRow, ReportRow,
    ReportWrite, Store, StoreError, StoreResult, StoredReport, sql, to_millis,
};
use crate::config::DatabaseConfig;
use crate::domain::{Receipt, ReportStatus};

/// SQLite allows 32,766 bound parameters per statement; stay well below it.
const MAX_PARAMS: usize = 30_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
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
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options.clone())
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

    fn error(e: sqlx::Error) -> StoreError {
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
        sqlx::query(sql::PING)
            .execute(&self.reader)
            .await
            .map_err(Self::error)?;
        Ok(())
    }

    async fn insert_reports(&self, batch: &[ReportWrite]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin().await.map_err(Self::error)?;

        for chunk in batch.chunks(MAX_PARAMS / 24) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO reports ({}) ",
                sql::REPORT_COLUMNS
            ));
            q.push_values(chunk, |mut row, w| {
                let r = &w.report;
                let received = to_millis(r.received_at);
                row.push_bind(r.id)
                    .push_bind(r.receipt.as_str())
                    .push_bind(r.incident_id)
                    .push_bind(r.channel.as_ref())
                    .push_bind(r.provider.as_str())
                    .push_bind(r.service.as_str())
                    .push_bind(r.reporter_type.as_ref())
                    .push_bind(r.harm_type.as_ref())
                    .push_bind(r.occurred_at.map(to_millis))
                    .push_bind(r.amount_krw)
                    .push_bind(r.title.as_deref())
                    .push_bind(r.description.as_str())
                    .push_bind(r.reporter_name.as_slice())
                    .push_bind(r.phone.as_ref().map(|c| c.ciphertext.as_slice()))
                    .push_bind(r.phone.as_ref().map(|c| c.hmac.as_slice()))
                    .push_bind(r.email.as_ref().map(|c| c.ciphertext.as_slice()))
                    .push_bind(r.email.as_ref().map(|c| c.hmac.as_slice()))
                    .push_bind(r.notify_sms)
                    .push_bind(r.notify_email)
                    .push_bind(ReportStatus::Received.as_ref())
                    .push_bind(r.idempotency.as_ref().map(|i| i.key.as_str()))
                    .push_bind(r.idempotency.as_ref().map(|i| i.request_hash.as_slice()))
                    .push_bind(received)
                    .push_bind(received);
            });
            q.build().execute(&mut *tx).await.map_err(Self::error)?;
        }

        for chunk in batch.chunks(MAX_PARAMS / 7) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO report_events ({}) ",
                sql::EVENT_COLUMNS
            ));
            q.push_values(chunk, |mut row, w| {
                let r = &w.report;
                row.push_bind(uuid::Uuid::now_v7())
                    .push_bind(r.id)
                    .push_bind(ReportStatus::Received.as_ref())
                    .push_bind(None::<&str>)
                    .push_bind(true)
                    .push_bind(None::<&str>)
                    .push_bind(to_millis(r.received_at));
            });
            q.build().execute(&mut *tx).await.map_err(Self::error)?;
        }

        let messages: Vec<_> = batch.iter().flat_map(|w| &w.outbox).collect();
        for chunk in messages.chunks(MAX_PARAMS / 13) {
            let mut q = QueryBuilder::<Sqlite>::new(format!(
                "INSERT INTO outbox ({}) ",
                sql::OUTBOX_COLUMNS
            ));
            q.push_values(chunk, |mut row, m| {
                let due = to_millis(m.not_before);
                row.push_bind(m.id)
                    .push_bind(m.channel.as_ref())
                    .push_bind(m.template.as_str())
                    .push_bind(m.lang.as_str())
                    .push_bind(m.recipient.as_slice())
                    .push_bind(m.payload.to_string())
                    .push_bind(m.source_kind.as_str())
                    .push_bind(m.source_id)
                    .push_bind("pending")
                    .push_bind(0_i32)
                    .push_bind(due)
                    .push_bind(due)
                    .push_bind(due);
            });
            q.build().execute(&mut *tx).await.map_err(Self::error)?;
        }

        tx.commit().await.map_err(Self::error)
    }

    async fn find_report(&self, receipt: &Receipt) -> StoreResult<Option<StoredReport>> {
        let Some(row) = sqlx::query_as::<_, ReportRow>(sql::FIND_REPORT)
            .bind(receipt.as_str())
            .fetch_optional(&self.reader)
            .await
            .map_err(Self::error)?
        else {
            return Ok(None);
        };
        let history = sqlx::query_as::<_, HistoryRow>(sql::REPORT_PUBLIC_HISTORY)
            .bind(row.id)
            .fetch_all(&self.reader)
            .await
            .map_err(Self::error)?;
        row.into_stored(history).map(Some)
    }

    async fn find_idempotent(&self, key: &str) -> StoreResult<Option<IdempotentReport>> {
        sqlx::query_as::<_, IdempotentRow>(sql::FIND_IDEMPOTENT)
            .bind(key)
            .fetch_optional(&self.reader)
            .await
            .map_err(Self::error)?
            .map(IdempotentRow::into_record)
            .transpose()
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        sqlx::query(sql::INSERT_AUDIT)
            .bind(entry.id)
            .bind(to_millis(entry.at))
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(entry.target.as_deref())
            .bind(entry.detail.as_ref().map(ToString::to_string))
            .bind(entry.client_addr.as_deref())
            .execute(&self.writer)
            .await
            .map_err(Self::error)?;
        Ok(())
    }

    async fn recent_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query_as::<_, AuditRow>(sql::RECENT_AUDIT)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(Self::error)?;
        Ok(rows.into_iter().map(AuditEntry::from).collect())
    }

    async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}
