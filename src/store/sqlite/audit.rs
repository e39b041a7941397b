use async_trait::async_trait;

use super::SqliteStore;
use crate::store::audit::{AuditRow, sql};
use crate::store::{AuditEntry, AuditStore, StoreResult, to_millis};

#[async_trait]
impl AuditStore for SqliteStore {
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
}
