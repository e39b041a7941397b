//! The outbox on SQLite: one dispatcher, claims through the single writer.

use std::collections::HashSet;

use uuid::Uuid;

use super::SqliteStore;
use crate::store::StoreResult;
use crate::store::outbox::{OutcomeRow, impl_outbox_store, sql};

impl_outbox_store!(SqliteStore, read: reader, write: writer, claim: sql::CLAIM_SQLITE);

/// A group of outcomes arrives as one JSON array of `[id as hex, state, next_at, error,
/// gateway_ref, sent_at, released]` rows: the statement text is the same for every group size, so it is
/// prepared once and cached, where a `VALUES` list would be parsed and planned anew each time.
const RECORD: &str = concat!(
    "WITH v(mid, state, next_at, error, gateway_ref, sent_at, released) AS (SELECT \
     unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6 FROM json_each(?1)) ",
    sql::record_set!("?2", "?3")
);

impl SqliteStore {
    /// Record a group of outcomes with one statement; the ids `owner` still held.
    async fn record_group(
        &self,
        owner: &str,
        rows: &[OutcomeRow],
        now_ms: i64,
    ) -> StoreResult<HashSet<Uuid>> {
        let group: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.id.simple().to_string(),
                    r.state.as_ref(),
                    r.next_attempt_at,
                    r.error.as_deref(),
                    r.gateway_ref.as_deref(),
                    r.sent_at,
                    r.released,
                )
            })
            .collect();
        let group =
            serde_json::to_string(&group).map_err(|e| crate::store::StoreError::Other(e.into()))?;
        let ids: Vec<Uuid> = sqlx::query_scalar(RECORD)
            .bind(group)
            .bind(now_ms)
            .bind(owner)
            .fetch_all(&self.writer)
            .await
            .map_err(Self::error)?;
        Ok(ids.into_iter().collect())
    }
}
