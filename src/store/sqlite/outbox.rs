//! The outbox on SQLite: one dispatcher, claims through the single writer.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Sqlite};
use uuid::Uuid;

use super::SqliteStore;
use crate::store::StoreResult;
use crate::store::outbox::{OutcomeRow, impl_outbox_store, sql};

impl_outbox_store!(SqliteStore, read: reader, write: writer, claim: sql::CLAIM_SQLITE);

/// Outcomes per statement: six parameters each, well under SQLite's limit.
const RECORD_CHUNK: usize = 1_000;

impl SqliteStore {
    /// Record a group of outcomes with one `UPDATE … FROM (VALUES …)` per chunk, in one
    /// transaction; the ids `owner` still held.
    async fn record_group(
        &self,
        owner: &str,
        rows: &[OutcomeRow],
        now_ms: i64,
    ) -> StoreResult<HashSet<Uuid>> {
        let mut recorded = HashSet::with_capacity(rows.len());
        let mut tx = self.writer.begin().await.map_err(Self::error)?;
        for chunk in rows.chunks(RECORD_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "WITH v(mid, state, next_at, error, gateway_ref, sent_at) AS (",
            );
            q.push_values(chunk, |mut row, r| {
                row.push_bind(r.id)
                    .push_bind(r.state.as_ref())
                    .push_bind(r.next_attempt_at)
                    .push_bind(r.error.as_deref())
                    .push_bind(r.gateway_ref.as_deref())
                    .push_bind(r.sent_at);
            });
            q.push(") ");
            q.push(sql::record_set!("?", "?"));
            let ids: Vec<Uuid> = q
                .build_query_scalar()
                .bind(now_ms)
                .bind(owner)
                .fetch_all(&mut *tx)
                .await
                .map_err(Self::error)?;
            recorded.extend(ids);
        }
        tx.commit().await.map_err(Self::error)?;
        Ok(recorded)
    }
}
