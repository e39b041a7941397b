//! The outbox on SQLite: one dispatcher, claims through the single writer.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use uuid::Uuid;

use super::SqliteStore;
use crate::store::fanout::sql::count_sent;
use crate::store::outbox::{MessageRow, OutcomeRow, impl_outbox_store, sql};
use crate::store::{MessageChannel, StoreError, StoreResult};

impl_outbox_store!(SqliteStore, read: reader, write: writer);

/// A claim comes back as one row (a JSON array of the claimed rows' columns, blobs in hex):
/// SQLite's thread hands rows over one at a time, and `UPDATE … RETURNING` would cost a
/// hand-over per message. The rows just claimed are the owner's with this claim's lease end,
/// which no earlier claim of the store shares (see `claim_group`); the due index finds them.
const CLAIM: &str = concat!(
    "BEGIN IMMEDIATE; ",
    sql::claim_update!(""),
    "; SELECT json_group_array(json_array(hex(id), channel, template, lang, hex(recipient_enc), \
     payload, source_kind, nullif(hex(source_id), ''), state, attempts, next_attempt_at, \
     last_error, gateway_ref, delivery_status, created_at, updated_at, sent_at)) FROM outbox \
     WHERE channel = $5 AND next_attempt_at = $2 AND state IN ('pending', 'sending') \
     AND lease_owner = $1; COMMIT"
);

/// A group of outcomes arrives as one JSON array of `[id as hex, state, next_at, error,
/// gateway_ref, sent_at, released]` rows: the statement text is the same for every group size, so it is
/// prepared once and cached, where a `VALUES` list would be parsed and planned anew each time.
///
/// The ids still held are read first, in the same write transaction and with the same condition
/// as the update, as one row (a JSON array): SQLite's thread hands rows over one at a time, and
/// an `UPDATE … RETURNING` would cost a hand-over per message. With the same condition, the
/// messages about to be marked sent move their fan-outs' sent counts on.
const RECORD: &str = concat!(
    "BEGIN IMMEDIATE; \
     SELECT json_group_array(hex(id)) FROM outbox WHERE id IN \
     (SELECT unhex(value ->> 0) FROM json_each(?1)) AND lease_owner = ?3 AND state = 'sending'; ",
    count_sent!(
        "?3",
        "(SELECT o.source_id, o.source_kind, o.channel, j.value ->> 1 AS state \
         FROM json_each(?1) j JOIN outbox o ON o.id = unhex(j.value ->> 0) \
         WHERE o.lease_owner = ?3 AND o.state = 'sending') held"
    ),
    "; WITH v(mid, state, next_at, error, gateway_ref, sent_at, released) AS (SELECT \
     unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6 FROM json_each(?1)) ",
    sql::record_set!("?2", "?3"),
    "; COMMIT"
);

impl SqliteStore {
    /// `wanted`, or a millisecond after the latest lease end this store has handed out if that
    /// is as late: every claim, and every batch of messages written leased, gets a lease end of
    /// its own, by which a claim reads back exactly the rows it took. A later end than asked
    /// for is only more careful.
    fn lease_end_ms(&self, wanted: i64) -> i64 {
        let after = |last: i64| wanted.max(last.saturating_add(1));
        let previous = self
            .last_lease_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(after(last))
            })
            .unwrap_or_else(|last| last);
        after(previous)
    }

    /// Claim up to `limit` due messages of `channel` in one transaction, read back as one row.
    /// The lease ends at `lease_ms` or later (see `lease_end_ms`).
    async fn claim_group(
        &self,
        owner: &str,
        channel: MessageChannel,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<MessageRow>> {
        let lease_ms = self.lease_end_ms(lease_ms);
        let mut conn = self.writer.acquire().await.map_err(Self::error)?;
        let claimed = match sqlx::query_scalar::<_, String>(CLAIM)
            .bind(owner)
            .bind(lease_ms)
            .bind(now_ms)
            .bind(limit)
            .bind(channel.as_ref())
            .fetch_all(&mut *conn)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => return Err(Self::script_failed(&mut conn, e).await),
        };
        match claimed.first() {
            Some(json) => serde_json::from_str(json).map_err(|e| StoreError::Other(e.into())),
            None => Ok(Vec::new()),
        }
    }

    /// Record a group of outcomes in one transaction; the ids `owner` still held.
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
        let group = serde_json::to_string(&group).map_err(|e| StoreError::Other(e.into()))?;
        let mut conn = self.writer.acquire().await.map_err(Self::error)?;
        let held = match sqlx::query_scalar::<_, String>(RECORD)
            .bind(group)
            .bind(now_ms)
            .bind(owner)
            .fetch_all(&mut *conn)
            .await
        {
            Ok(held) => held,
            Err(e) => return Err(Self::script_failed(&mut conn, e).await),
        };
        let held: Vec<String> = match held.first() {
            Some(list) => serde_json::from_str(list).map_err(|e| StoreError::Other(e.into()))?,
            None => Vec::new(),
        };
        held.iter()
            .map(|hex| Uuid::try_parse(hex).map_err(|e| StoreError::Other(e.into())))
            .collect()
    }
}
