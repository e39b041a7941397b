//! The outbox on PostgreSQL: replicas share the work, claiming with `FOR UPDATE SKIP LOCKED`.

use std::collections::HashSet;

use uuid::Uuid;

use super::PgStore;
use crate::store::fanout::sql::count_sent;
use crate::store::outbox::{MessageRow, OutcomeRow, impl_outbox_store, sql};
use crate::store::{MessageChannel, StoreResult};

impl_outbox_store!(PgStore, read: pool, write: pool);

/// A group of outcomes as column arrays, unnested into the `v` rows of the record statement,
/// and the fan-outs' sent counts moved on by the same statement. The rows updated come back
/// with their new state, so a message another owner took over is neither recorded nor counted.
const RECORD: &str = concat!(
    "WITH v(mid, state, next_at, error, gateway_ref, sent_at, released) AS (SELECT * FROM \
     UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], \
     $7::int4[])), done AS (",
    sql::record_set!("$8", "$9"),
    " RETURNING outbox.id, outbox.source_id, outbox.source_kind, outbox.channel, \
     outbox.state), counted AS (",
    count_sent!("$9", "done"),
    ") SELECT id FROM done"
);

impl PgStore {
    /// A claim reads its rows back with `RETURNING`, so lease ends need not differ.
    #[allow(clippy::unused_self)]
    fn lease_end_ms(&self, wanted: i64) -> i64 {
        wanted
    }

    /// Claim up to `limit` due messages of `channel` with one statement.
    async fn claim_group(
        &self,
        owner: &str,
        channel: MessageChannel,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<MessageRow>> {
        sqlx::query_as(sql::CLAIM_POSTGRES)
            .bind(owner)
            .bind(lease_ms)
            .bind(now_ms)
            .bind(limit)
            .bind(channel.as_ref())
            .fetch_all(&self.pool)
            .await
            .map_err(Self::error)
    }

    /// Record a group of outcomes with one statement; the ids `owner` still held.
    async fn record_group(
        &self,
        owner: &str,
        rows: &[OutcomeRow],
        now_ms: i64,
    ) -> StoreResult<HashSet<Uuid>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(RECORD)
            .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.state.as_ref()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.next_attempt_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.gateway_ref.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.sent_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.released).collect::<Vec<_>>())
            .bind(now_ms)
            .bind(owner)
            .fetch_all(&self.pool)
            .await
            .map_err(Self::error)?;
        Ok(ids.into_iter().collect())
    }
}
