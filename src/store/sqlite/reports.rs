//! Reports on SQLite: multi-row `VALUES` inserts, chunked under the bound-parameter limit.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite};

use super::SqliteStore;
use crate::domain::{Receipt, ReportStatus};
use crate::store::outbox::sql::OUTBOX_COLUMNS;
use crate::store::reports::sql;
use crate::store::reports::{ContactHashRow, IdempotentRow, ReportRow, report_from_rows};
use crate::store::{
    AuditEntry, ContactHashes, IdempotentReport, ReportStore, ReportWrite, StatusChange,
    StatusOutcome, StoreResult, StoredReport, to_millis,
};

/// SQLite allows 32,766 bound parameters per statement; stay well below it.
const MAX_PARAMS: usize = 30_000;

#[async_trait]
impl ReportStore for SqliteStore {
    async fn insert_reports(&self, batch: &[ReportWrite]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // The whole transaction is one script, sent to SQLite's thread in one go: a batch costs
        // one hand-off between the runtime and the database thread instead of one per
        // statement, which under a surge is most of a commit's latency.
        let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
        for chunk in batch.chunks(MAX_PARAMS / 25) {
            q.push(format_args!(
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
                    .push_bind(received)
                    .push_bind(r.lang.as_str());
            });
            q.push("; ");
        }
        for chunk in batch.chunks(MAX_PARAMS / 7) {
            q.push(format_args!(
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
            q.push("; ");
        }
        let messages: Vec<_> = batch.iter().flat_map(|w| &w.outbox).collect();
        for chunk in messages.chunks(MAX_PARAMS / 15) {
            q.push(format_args!("INSERT INTO outbox ({OUTBOX_COLUMNS}) "));
            q.push_values(chunk, |mut row, m| {
                let due = to_millis(m.not_before);
                let claim = m.claim_columns();
                row.push_bind(m.id)
                    .push_bind(m.channel.as_ref())
                    .push_bind(m.template.as_str())
                    .push_bind(m.lang.as_str())
                    .push_bind(m.recipient.as_slice())
                    .push_bind(m.payload.to_string())
                    .push_bind(m.source_kind.as_str())
                    .push_bind(m.source_id)
                    .push_bind(due)
                    .push_bind(due)
                    .push_bind(claim.state)
                    .push_bind(claim.attempts)
                    .push_bind(claim.next_attempt_at)
                    .push_bind(claim.lease_owner)
                    .push_bind(claim.lease_until);
            });
            q.push("; ");
        }
        q.push("COMMIT");
        let mut conn = self.writer.acquire().await.map_err(Self::error)?;
        // Each batch has its own shape: keep it out of the prepared-statement cache.
        match q.build().persistent(false).execute(&mut *conn).await {
            Ok(_) => Ok(()),
            Err(e) => Err(Self::script_failed(&mut conn, e).await),
        }
    }

    async fn find_report(&self, receipt: &Receipt) -> StoreResult<Option<StoredReport>> {
        let rows = sqlx::query_as::<_, ReportRow>(sql::FIND_REPORT)
            .bind(receipt.as_str())
            .fetch_all(&self.reader)
            .await
            .map_err(Self::error)?;
        report_from_rows(rows)
    }

    async fn contact_hashes(&self, receipt: &Receipt) -> StoreResult<ContactHashes> {
        sqlx::query_as::<_, ContactHashRow>(sql::CONTACT_HASHES)
            .bind(receipt.as_str())
            .fetch_one(&self.reader)
            .await
            .map(ContactHashes::from)
            .map_err(Self::error)
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

    async fn change_report_status(
        &self,
        change: &StatusChange,
        audit: &AuditEntry,
    ) -> StoreResult<StatusOutcome> {
        self.apply_status_change(change, audit).await
    }
}

crate::store::reports::impl_status_change!(SqliteStore, sqlx::Sqlite, writer);
