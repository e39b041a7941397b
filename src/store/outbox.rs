//! Notifications waiting to be delivered (the transactional outbox).
//!
//! A message is written in the same transaction as the event that causes it, then claimed by a
//! dispatcher with a lease: the claim is committed before anything is sent, so no transaction is
//! held open across a network call, and a lease that lapses (the process died mid-send) makes the
//! message due again. Everything but the claim reads the same on both backends and is written
//! once, in [`impl_outbox_store!`].

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use super::{StoreError, StoreResult, Timestamp, from_millis, parse_stored};

/// A notification to be delivered later by the outbox dispatcher.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Stable message id, sent to the gateway so receivers can deduplicate.
    pub id: Uuid,
    pub channel: MessageChannel,
    pub template: String,
    pub lang: String,
    pub recipient: Vec<u8>,
    pub payload: serde_json::Value,
    pub source_kind: String,
    pub source_id: Option<Uuid>,
    pub not_before: Timestamp,
    /// Written already claimed, for the dispatcher of the process that writes it: no claim
    /// needs to find it, and it is due to anyone else only once the lease lapses.
    pub lease: Option<Lease>,
}

/// The columns a claim sets, as a new row starts them (times in milliseconds).
pub(super) struct ClaimColumns<'a> {
    pub state: &'static str,
    pub attempts: i32,
    pub next_attempt_at: i64,
    pub lease_owner: Option<&'a str>,
    pub lease_until: Option<i64>,
}

/// A claim made as a message is written: `owner` holds it until `until`, the first attempt
/// counted, exactly as if a claim had taken it at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: Arc<str>,
    /// From [`OutboxStore::lease_end`], so no claim's lease ends at the same instant.
    pub until: Timestamp,
}

impl NewMessage {
    /// What the row's claim columns start as.
    pub(super) fn claim_columns(&self) -> ClaimColumns<'_> {
        match &self.lease {
            None => ClaimColumns {
                state: "pending",
                attempts: 0,
                next_attempt_at: super::to_millis(self.not_before),
                lease_owner: None,
                lease_until: None,
            },
            Some(lease) => {
                let until = super::to_millis(lease.until);
                ClaimColumns {
                    state: "sending",
                    attempts: 1,
                    next_attempt_at: until,
                    lease_owner: Some(&lease.owner),
                    lease_until: Some(until),
                }
            }
        }
    }

    /// The message as a claim would have read it back, with its lease end; `None` unless it
    /// was written leased.
    pub fn into_claimed(self) -> Option<(OutboxMessage, Timestamp)> {
        let until = self.lease?.until;
        let message = OutboxMessage {
            id: self.id,
            channel: self.channel,
            template: self.template,
            lang: self.lang,
            recipient: self.recipient,
            payload: self.payload,
            source_kind: self.source_kind,
            source_id: self.source_id,
            state: MessageState::Sending,
            attempts: 1,
            next_attempt_at: until,
            last_error: None,
            gateway_ref: None,
            delivery_status: None,
            created_at: self.not_before,
            updated_at: self.not_before,
            sent_at: None,
        };
        Some((message, until))
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::AsRefStr, strum::EnumString, strum::EnumIter,
)]
#[strum(serialize_all = "snake_case")]
pub enum MessageChannel {
    Email,
    Sms,
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum MessageState {
    /// Waiting for its `next_attempt_at`.
    Pending,
    /// Claimed by a dispatcher whose lease runs until `lease_until`.
    Sending,
    Sent,
    /// Refused for good (an invalid address, a 4xx); not retried.
    Failed,
    /// Every attempt failed; waits for staff to requeue it.
    Dead,
}

#[async_trait]
pub trait OutboxStore {
    /// Write messages outside any other change (most are written with the event causing them).
    async fn enqueue(&self, messages: &[NewMessage]) -> StoreResult<()>;

    /// Lease up to `limit` due messages of one channel to `owner` until `lease_until`, counting
    /// an attempt on each; committed before returning. Messages whose lease has lapsed are due again.
    async fn claim_due(
        &self,
        owner: &str,
        channel: MessageChannel,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<OutboxMessage>>;

    /// A lease end for messages written already leased ([`NewMessage::lease`]): `wanted`, or a
    /// little later where the backend needs every claim's lease to end at its own instant.
    fn lease_end(&self, wanted: Timestamp) -> Timestamp;

    /// Record what happened to claimed messages, in one transaction. Each answer is `false`
    /// when `owner` no longer held that message (its lease lapsed and another dispatcher took
    /// it): that outcome is then not recorded.
    async fn record_outcomes(
        &self,
        owner: &str,
        outcomes: &[(Uuid, Outcome)],
        now: Timestamp,
    ) -> StoreResult<Vec<bool>>;

    /// [`OutboxStore::record_outcomes`] for one message.
    async fn record_outcome(
        &self,
        id: Uuid,
        owner: &str,
        outcome: &Outcome,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let recorded = self
            .record_outcomes(owner, &[(id, outcome.clone())], now)
            .await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }

    /// Hand back every message `owner` holds, unsent and due at once, the attempt not counted.
    async fn release_all(&self, owner: &str, now: Timestamp) -> StoreResult<u64>;

    /// Dead letters, most recently dead first.
    async fn dead_letters(&self, limit: u32) -> StoreResult<Vec<OutboxMessage>>;

    /// Give a dead letter a fresh set of attempts, due at `now`.
    async fn requeue(&self, id: Uuid, now: Timestamp) -> StoreResult<Requeue>;

    /// Store the gateway's delivery report for a message; `false` for an unknown id.
    async fn set_delivery_status(
        &self,
        id: Uuid,
        status: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Messages waiting (pending or sending) per channel, with the oldest one's creation time.
    async fn pending_stats(&self) -> StoreResult<Vec<PendingStat>>;

    /// How far the messages caused by one source (a report, an incident update) have got.
    async fn outbox_progress(&self, source_id: Uuid) -> StoreResult<OutboxProgress>;

    /// One message, whatever its state.
    async fn find_message(&self, id: Uuid) -> StoreResult<Option<OutboxMessage>>;
}

/// A stored message as the dispatcher and staff see it. The recipient is still sealed.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    pub id: Uuid,
    pub channel: MessageChannel,
    pub template: String,
    pub lang: String,
    pub recipient: Vec<u8>,
    pub payload: serde_json::Value,
    pub source_kind: String,
    pub source_id: Option<Uuid>,
    pub state: MessageState,
    /// Attempts made, including the one a claim just started.
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub gateway_ref: Option<String>,
    pub delivery_status: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub sent_at: Option<Timestamp>,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        gateway_ref: Option<String>,
    },
    Retry {
        at: Timestamp,
        error: String,
    },
    Failed {
        error: String,
    },
    Dead {
        error: String,
    },
    /// Not attempted (the dispatcher is stopping, or a rate limit held the message past half
    /// its lease): pending and due again at once, the claim's attempt not counted.
    Released,
}

impl Outcome {
    pub fn state(&self) -> MessageState {
        match self {
            Self::Sent { .. } => MessageState::Sent,
            Self::Retry { .. } | Self::Released => MessageState::Pending,
            Self::Failed { .. } => MessageState::Failed,
            Self::Dead { .. } => MessageState::Dead,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    Done,
    NotFound,
    /// The message exists but is not dead; nothing changed.
    NotDead(MessageState),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStat {
    pub channel: MessageChannel,
    pub count: u64,
    pub oldest_created_at: Option<Timestamp>,
}

/// Messages of one source by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxProgress {
    pub pending: u64,
    pub sending: u64,
    pub sent: u64,
    pub failed: u64,
    pub dead: u64,
}

impl OutboxProgress {
    pub fn total(&self) -> u64 {
        self.pending + self.sending + self.sent + self.failed + self.dead
    }

    pub(super) fn add(&mut self, state: &str, count: i64) -> StoreResult<()> {
        let n = u64::try_from(count).unwrap_or_default();
        match parse_stored::<MessageState>(state, "outbox.state")? {
            MessageState::Pending => self.pending += n,
            MessageState::Sending => self.sending += n,
            MessageState::Sent => self.sent += n,
            MessageState::Failed => self.failed += n,
            MessageState::Dead => self.dead += n,
        }
        Ok(())
    }
}

pub(super) mod sql {
    /// Columns of an outbox row, in the order the SQLite batch insert binds them: the
    /// message's, then its [`super::NewMessage::claim_columns`].
    pub const OUTBOX_COLUMNS: &str = "id, channel, template, lang, recipient_enc, payload, \
         source_kind, source_id, created_at, updated_at, state, attempts, next_attempt_at, \
         lease_owner, lease_until";

    /// Every column, in [`super::MessageRow`]'s order.
    macro_rules! message_columns {
        () => {
            "id, channel, template, lang, recipient_enc, payload, source_kind, source_id, state, \
             attempts, next_attempt_at, last_error, gateway_ref, delivery_status, created_at, \
             updated_at, sent_at"
        };
    }

    /// Binds the message's columns, then its [`super::NewMessage::claim_columns`].
    pub const INSERT_ONE: &str = "INSERT INTO outbox (id, channel, template, lang, \
         recipient_enc, payload, source_kind, source_id, created_at, updated_at, state, \
         attempts, next_attempt_at, lease_owner, lease_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14)";

    /// The due messages a claim takes: pending or with a lapsed lease, oldest due first. The
    /// claim pushes `next_attempt_at` to the lease end, so leased rows drop out of the due index.
    macro_rules! due_ids {
        () => {
            "SELECT id FROM outbox WHERE state IN ('pending', 'sending') \
             AND channel = $5 AND next_attempt_at <= $3 \
             AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4"
        };
    }

    /// What a claim sets on the due rows it takes; `$lock` locks them (PostgreSQL).
    pub(crate) use due_ids;

    macro_rules! claim_update {
        ($lock:literal) => {
            concat!(
                "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $2, \
                 next_attempt_at = $2, attempts = attempts + 1, updated_at = $3 \
                 WHERE id IN (",
                $crate::store::outbox::sql::due_ids!(),
                $lock,
                ")"
            )
        };
    }
    pub(crate) use claim_update;

    /// PostgreSQL: replicas skip rows another claim is taking, so none waits and none takes a
    /// row twice.
    pub const CLAIM_POSTGRES: &str = concat!(
        claim_update!(" FOR UPDATE SKIP LOCKED"),
        " RETURNING ",
        message_columns!()
    );

    /// What a recorded outcome sets, from the `v` rows of `(mid, state, next_at, error,
    /// gateway_ref, sent_at, released)` each backend supplies; `$now` and `$owner` are its
    /// parameters. A released row gives back its attempt and keeps its last error.
    macro_rules! record_set {
        ($now:literal, $owner:literal) => {
            concat!(
                "UPDATE outbox SET state = v.state, \
                 next_attempt_at = COALESCE(v.next_at, outbox.next_attempt_at), \
                 attempts = CASE WHEN v.released = 1 AND outbox.attempts > 0 \
                 THEN outbox.attempts - 1 ELSE outbox.attempts END, \
                 last_error = CASE WHEN v.released = 1 THEN outbox.last_error ELSE v.error END, \
                 gateway_ref = COALESCE(v.gateway_ref, outbox.gateway_ref), \
                 sent_at = v.sent_at, lease_owner = NULL, lease_until = NULL, updated_at = ",
                $now,
                " FROM v WHERE outbox.id = v.mid AND outbox.lease_owner = ",
                $owner,
                " AND outbox.state = 'sending'"
            )
        };
    }
    pub(crate) use record_set;

    pub const RELEASE_ALL: &str = "UPDATE outbox SET state = 'pending', \
         attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, next_attempt_at = $2, \
         lease_owner = NULL, lease_until = NULL, updated_at = $2 \
         WHERE lease_owner = $1 AND state = 'sending'";

    pub const DEAD_LETTERS: &str = concat!(
        "SELECT ",
        message_columns!(),
        " FROM outbox WHERE state = 'dead' ORDER BY updated_at DESC, id DESC LIMIT $1"
    );

    pub const REQUEUE: &str = "UPDATE outbox SET state = 'pending', attempts = 0, \
         next_attempt_at = $2, lease_owner = NULL, lease_until = NULL, updated_at = $2 \
         WHERE id = $1 AND state = 'dead'";

    pub const STATE_OF: &str = "SELECT state FROM outbox WHERE id = $1";

    pub const SET_DELIVERY: &str =
        "UPDATE outbox SET delivery_status = $2, updated_at = $3 WHERE id = $1";

    /// One channel's waiting messages and the oldest one's creation time: an equality on the
    /// first column of `outbox_due_channel`. Grouping all channels at once let SQLite, once it
    /// had statistics, sort every waiting row on each metrics tick (as the fan-out progress did).
    macro_rules! waiting_in {
        ($channel:literal) => {
            concat!(
                "SELECT '",
                $channel,
                "', count(*), min(created_at) FROM outbox WHERE channel = '",
                $channel,
                "' AND state IN ('pending', 'sending')"
            )
        };
    }

    /// A row per channel, its count 0 and oldest null when nothing waits.
    pub const PENDING_STATS: &str =
        concat!(waiting_in!("email"), " UNION ALL ", waiting_in!("sms"));

    pub const PROGRESS: &str =
        "SELECT state, count(*) AS n FROM outbox WHERE source_id = $1 GROUP BY state";

    pub const FIND: &str = concat!("SELECT ", message_columns!(), " FROM outbox WHERE id = $1");
}

/// An outbox row as read. Also read from a JSON array of the same columns in the same order,
/// with the blob as hex (how SQLite hands back a whole claim as one value).
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(super) struct MessageRow {
    id: Uuid,
    channel: String,
    template: String,
    lang: String,
    #[serde(deserialize_with = "from_hex")]
    recipient_enc: Vec<u8>,
    payload: String,
    source_kind: String,
    source_id: Option<Uuid>,
    state: String,
    attempts: i32,
    next_attempt_at: i64,
    last_error: Option<String>,
    gateway_ref: Option<String>,
    delivery_status: Option<String>,
    created_at: i64,
    updated_at: i64,
    sent_at: Option<i64>,
}

impl TryFrom<MessageRow> for OutboxMessage {
    type Error = StoreError;

    fn try_from(row: MessageRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            channel: parse_stored(&row.channel, "outbox.channel")?,
            template: row.template,
            lang: row.lang,
            recipient: row.recipient_enc,
            payload: serde_json::from_str(&row.payload).map_err(|_| {
                StoreError::Other(anyhow::anyhow!("unreadable value in outbox.payload"))
            })?,
            source_kind: row.source_kind,
            source_id: row.source_id,
            state: parse_stored(&row.state, "outbox.state")?,
            attempts: u32::try_from(row.attempts).unwrap_or_default(),
            next_attempt_at: from_millis(row.next_attempt_at),
            last_error: row.last_error,
            gateway_ref: row.gateway_ref,
            delivery_status: row.delivery_status,
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
            sent_at: row.sent_at.map(from_millis),
        })
    }
}

fn from_hex<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    hex::decode(&*text).map_err(serde::de::Error::custom)
}

pub(super) fn messages(rows: Vec<MessageRow>) -> StoreResult<Vec<OutboxMessage>> {
    rows.into_iter().map(OutboxMessage::try_from).collect()
}

/// One outcome as the set-based record statement takes it.
pub(super) struct OutcomeRow {
    pub id: Uuid,
    pub state: MessageState,
    pub next_attempt_at: Option<i64>,
    pub error: Option<String>,
    pub gateway_ref: Option<String>,
    pub sent_at: Option<i64>,
    /// 1 for [`Outcome::Released`], else 0.
    pub released: i32,
}

impl OutcomeRow {
    pub(super) fn new(id: Uuid, outcome: &Outcome, now_ms: i64) -> Self {
        let (next_attempt_at, error, gateway_ref, sent_at) = match outcome {
            Outcome::Sent { gateway_ref } => (None, None, gateway_ref.clone(), Some(now_ms)),
            Outcome::Retry { at, error } => (
                Some(super::to_millis(*at)),
                Some(clip_error(error)),
                None,
                None,
            ),
            Outcome::Failed { error } | Outcome::Dead { error } => {
                (None, Some(clip_error(error)), None, None)
            }
            Outcome::Released => (Some(now_ms), None, None, None),
        };
        Self {
            id,
            state: outcome.state(),
            next_attempt_at,
            error,
            gateway_ref,
            sent_at,
            released: i32::from(*outcome == Outcome::Released),
        }
    }
}

/// Longest error text kept with a message: enough to diagnose, bounded per row.
const ERROR_MAX: usize = 500;

fn clip_error(error: &str) -> String {
    match error.char_indices().nth(ERROR_MAX) {
        Some((end, _)) => format!("{}…", &error[..end]),
        None => error.to_owned(),
    }
}

/// The implementation of [`OutboxStore`] for a store type whose pools are `$read` and `$write`
/// (the same pool on PostgreSQL). Each backend claims (`claim_group`) and records
/// (`record_group`) in its own way.
macro_rules! impl_outbox_store {
    ($store:ty, read: $read:ident, write: $write:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::OutboxStore for $store {
            async fn enqueue(
                &self,
                messages: &[$crate::store::NewMessage],
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::outbox::sql;
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                for m in messages {
                    let claim = m.claim_columns();
                    sqlx::query(sql::INSERT_ONE)
                        .bind(m.id)
                        .bind(m.channel.as_ref())
                        .bind(m.template.as_str())
                        .bind(m.lang.as_str())
                        .bind(m.recipient.as_slice())
                        .bind(m.payload.to_string())
                        .bind(m.source_kind.as_str())
                        .bind(m.source_id)
                        .bind($crate::store::to_millis(m.not_before))
                        .bind(claim.state)
                        .bind(claim.attempts)
                        .bind(claim.next_attempt_at)
                        .bind(claim.lease_owner)
                        .bind(claim.lease_until)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::error)?;
                }
                tx.commit().await.map_err(Self::error)
            }

            fn lease_end(&self, wanted: $crate::store::Timestamp) -> $crate::store::Timestamp {
                $crate::store::from_millis(self.lease_end_ms($crate::store::to_millis(wanted)))
            }

            async fn claim_due(
                &self,
                owner: &str,
                channel: $crate::store::MessageChannel,
                now: $crate::store::Timestamp,
                lease_until: $crate::store::Timestamp,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::OutboxMessage>> {
                let rows = self
                    .claim_group(
                        owner,
                        channel,
                        $crate::store::to_millis(now),
                        $crate::store::to_millis(lease_until),
                        i64::from(limit),
                    )
                    .await?;
                $crate::store::outbox::messages(rows)
            }

            async fn record_outcomes(
                &self,
                owner: &str,
                outcomes: &[(uuid::Uuid, $crate::store::Outcome)],
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<Vec<bool>> {
                use $crate::store::outbox::OutcomeRow;
                if outcomes.is_empty() {
                    return Ok(Vec::new());
                }
                let now_ms = $crate::store::to_millis(now);
                let rows: Vec<OutcomeRow> = outcomes
                    .iter()
                    .map(|(id, outcome)| OutcomeRow::new(*id, outcome, now_ms))
                    .collect();
                // One statement and one commit for the lot: on SQLite every commit is an fsync.
                let recorded = self.record_group(owner, &rows, now_ms).await?;
                Ok(outcomes
                    .iter()
                    .map(|(id, _)| recorded.contains(id))
                    .collect())
            }

            async fn release_all(
                &self,
                owner: &str,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<u64> {
                use $crate::store::outbox::sql;
                let done = sqlx::query(sql::RELEASE_ALL)
                    .bind(owner)
                    .bind($crate::store::to_millis(now))
                    .execute(&self.$write)
                    .await
                    .map_err(Self::error)?;
                Ok(done.rows_affected())
            }

            async fn dead_letters(
                &self,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::OutboxMessage>> {
                use $crate::store::outbox::{MessageRow, messages, sql};
                let rows = sqlx::query_as::<_, MessageRow>(sql::DEAD_LETTERS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                messages(rows)
            }

            async fn requeue(
                &self,
                id: uuid::Uuid,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::Requeue> {
                use $crate::store::Requeue;
                use $crate::store::outbox::sql;
                let done = sqlx::query(sql::REQUEUE)
                    .bind(id)
                    .bind($crate::store::to_millis(now))
                    .execute(&self.$write)
                    .await
                    .map_err(Self::error)?;
                if done.rows_affected() == 1 {
                    return Ok(Requeue::Done);
                }
                let state: Option<String> = sqlx::query_scalar(sql::STATE_OF)
                    .bind(id)
                    .fetch_optional(&self.$write)
                    .await
                    .map_err(Self::error)?;
                match state {
                    None => Ok(Requeue::NotFound),
                    Some(s) => Ok(Requeue::NotDead($crate::store::parse_stored(
                        &s,
                        "outbox.state",
                    )?)),
                }
            }

            async fn set_delivery_status(
                &self,
                id: uuid::Uuid,
                status: &str,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<bool> {
                use $crate::store::outbox::sql;
                let done = sqlx::query(sql::SET_DELIVERY)
                    .bind(id)
                    .bind(status)
                    .bind($crate::store::to_millis(now))
                    .execute(&self.$write)
                    .await
                    .map_err(Self::error)?;
                Ok(done.rows_affected() == 1)
            }

            async fn pending_stats(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::PendingStat>> {
                use $crate::store::outbox::sql;
                let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(sql::PENDING_STATS)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                rows.into_iter()
                    .map(|(channel, n, oldest)| {
                        Ok($crate::store::PendingStat {
                            channel: $crate::store::parse_stored(&channel, "outbox.channel")?,
                            count: u64::try_from(n).unwrap_or_default(),
                            oldest_created_at: oldest.map($crate::store::from_millis),
                        })
                    })
                    .collect()
            }

            async fn outbox_progress(
                &self,
                source_id: uuid::Uuid,
            ) -> $crate::store::StoreResult<$crate::store::OutboxProgress> {
                use $crate::store::outbox::sql;
                let rows: Vec<(String, i64)> = sqlx::query_as(sql::PROGRESS)
                    .bind(source_id)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                let mut progress = $crate::store::OutboxProgress::default();
                for (state, n) in rows {
                    progress.add(&state, n)?;
                }
                Ok(progress)
            }

            async fn find_message(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::store::OutboxMessage>> {
                use $crate::store::outbox::{MessageRow, sql};
                sqlx::query_as::<_, MessageRow>(sql::FIND)
                    .bind(id)
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(Self::error)?
                    .map($crate::store::OutboxMessage::try_from)
                    .transpose()
            }
        }
    };
}

pub(super) use impl_outbox_store;
