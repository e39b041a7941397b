use async_trait::async_trait;

use super::SqliteStore;
use crate::store::audit::{AuditRow, sql};
use crate::store::{AuditEntry, AuditStore, StoreResult};

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        crate::store::audit::insert_audit!(entry)
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
