//! Fan-out of incident updates into the outbox.
//!
//! Posting an update writes a `fanouts` job in the same transaction (see `incidents.rs`). A
//! worker then expands the job with set-based `INSERT … SELECT` statements, one keyset range of
//! recipients per transaction: first every confirmed subscription to the incident or its
//! provider, then every reporter of the incident who asked for notices, one row per chosen
//! channel. The range's upper bound is stored with the batch, in the same transaction, so a fan-out
//! interrupted at any moment resumes after the last committed range and writes no row twice.
//! Recipients are never loaded into the process.
//!
//! A contact subscribed twice to the same update (to the incident and to its provider) gets it
//! once; a reporter who also subscribed gets it as a subscriber only; a contact that reported
//! several times gets it by its first report, unless that report stopped the incident's notices.
//! The contacts of the ranges done so far are kept in `fanout_contacts` until the job is done, so
//! no step looks reports up by contact.
//!
//! Claiming the job (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so replicas work on different jobs)
//! and generating ids and JSON in SQL differ per backend: each backend passes its statements to
//! [`impl_fanout_store!`] in a `fanout_sql` module. Every expansion statement binds the same
//! parameters: `$1` incident id, `$2` provider (`''` for none), `$3` cursor (exclusive), `$4`
//! upper bound (inclusive), `$5` update id, `$6` now (epoch ms), `$7` incident id as text, `$8`
//! update id as text.

use async_trait::async_trait;
use uuid::Uuid;

use super::{OutboxProgress, StoreResult, Timestamp};

#[async_trait]
pub trait FanoutStore {
    /// Expand one batch of at most `batch_rows` recipients of the oldest unfinished fan-out.
    async fn fanout_step(&self, batch_rows: u32, now: Timestamp) -> StoreResult<FanoutStep>;

    /// No more notices about its incident by report `report_id`: a contact's first report
    /// decides for the contact (see `reporters_in_range`). Whether it changed anything.
    async fn stop_incident_notices(&self, report_id: Uuid) -> StoreResult<bool>;

    /// How far the delivery of one update has got; `None` for an unknown update.
    async fn fanout_progress(
        &self,
        incident_id: Uuid,
        update_id: Uuid,
    ) -> StoreResult<Option<FanoutProgress>>;
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutStep {
    /// No unfinished fan-out.
    Idle,
    /// Wrote `rows` outbox rows for `update_id`; `finished` when its last range is done.
    Expanded {
        update_id: Uuid,
        rows: u64,
        finished: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum FanoutState {
    Pending,
    Running,
    Done,
}

/// The fan-out of one update and the outbox rows it has written, by state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutProgress {
    pub state: FanoutState,
    pub enqueued: u64,
    pub messages: OutboxProgress,
}

/// Statements both backends run as written.
pub(super) mod sql {
    /// Written with the update, in the transaction of the incident command.
    pub const INSERT_FANOUT: &str = "INSERT INTO fanouts (update_id, incident_id, provider, \
         state, subscriptions_done, enqueued, created_at, updated_at) \
         VALUES ($1, $2, $3, 'pending', FALSE, 0, $4, $4)";

    /// The last subscription id of the next batch (`$5` = batch size − 1); none when the rest
    /// fits in one batch.
    pub const SUBSCRIPTION_BOUND: &str = "SELECT s.id FROM subscriptions s \
         WHERE (s.incident_id = $1 OR (s.provider = $2 AND $2 <> '')) \
         AND s.state = 'confirmed' AND s.id > $3 ORDER BY s.id LIMIT 1 OFFSET $4";

    pub const REPORT_BOUND: &str = "SELECT r.id FROM reports r \
         WHERE r.incident_id = $1 AND r.id > $2 \
         AND ((r.notify_sms AND r.phone_enc IS NOT NULL) \
           OR (r.notify_email AND r.email_enc IS NOT NULL)) \
         ORDER BY r.id LIMIT 1 OFFSET $3";

    pub const ADVANCE_SUBSCRIPTIONS: &str = "UPDATE fanouts SET state = 'running', \
         subscriptions_done = $2, subscription_cursor = $3, enqueued = enqueued + $4, \
         updated_at = $5 WHERE update_id = $1";

    pub const ADVANCE_REPORTS: &str = "UPDATE fanouts SET \
         state = CASE WHEN $2 THEN 'done' ELSE 'running' END, \
         finished_at = CASE WHEN $2 THEN $5 ELSE NULL END, \
         report_cursor = $3, enqueued = enqueued + $4, updated_at = $5 WHERE update_id = $1";

    /// Messages of update `$1` in one state: an equality on both columns of `outbox_source`,
    /// so the count walks that state's index entries and nothing else, whatever the planner's
    /// statistics say.
    macro_rules! in_state {
        ($state:literal) => {
            concat!(
                "SELECT '",
                $state,
                "' AS state, count(*) AS n FROM outbox WHERE source_id = $1 AND state = '",
                $state,
                "'"
            )
        };
    }

    /// The job with its count of sent messages (`fanout_sent`, kept as outcomes are recorded),
    /// and how many are sending, failed or dead, one row per state, in one snapshot. Those are
    /// few while an update goes out; the pending are the rest of what the fan-out enqueued
    /// (counted in the same transactions), so a poll never walks the bulk of a
    /// million-recipient update.
    pub const FIND: &str = concat!(
        "SELECT f.state, f.enqueued, CAST(COALESCE((SELECT sum(s.sent) FROM fanout_sent s \
         WHERE s.update_id = f.update_id), 0) AS BIGINT), c.state, c.n FROM fanouts f, (",
        in_state!("sending"),
        " UNION ALL ",
        in_state!("failed"),
        " UNION ALL ",
        in_state!("dead"),
        ") c WHERE f.update_id = $1 AND f.incident_id = $2"
    );

    /// Add the messages of the outcome rows `$rows` (a row source with `source_id`,
    /// `source_kind`, `channel` and `state` as recorded) marked sent to `fanout_sent` under
    /// dispatcher `$owner`.
    macro_rules! count_sent {
        ($owner:literal, $rows:literal) => {
            concat!(
                "INSERT INTO fanout_sent (update_id, channel, owner, sent) \
                 SELECT source_id, channel, ",
                $owner,
                ", count(*) FROM ",
                $rows,
                " WHERE state = 'sent' AND source_kind = 'incident_update' \
                 GROUP BY source_id, channel \
                 ON CONFLICT (update_id, channel, owner) \
                 DO UPDATE SET sent = fanout_sent.sent + excluded.sent"
            )
        };
    }

    pub const STOP_NOTICES: &str =
        "UPDATE reports SET incident_notices = FALSE WHERE id = $1 AND incident_notices";

    /// The condition a subscription meets to receive the update, on alias `$a`.
    macro_rules! in_scope {
        ($a:literal) => {
            concat!(
                "(",
                $a,
                ".incident_id = $1 OR (",
                $a,
                ".provider = $2 AND $2 <> '')) AND ",
                $a,
                ".state = 'confirmed'"
            )
        };
    }

    /// The subscriptions of one range, each contact once per channel (the lowest id wins).
    macro_rules! subscriptions_in_range {
        () => {
            concat!(
                " FROM subscriptions s WHERE ",
                $crate::store::fanout::sql::in_scope!("s"),
                " AND s.id > $3 AND s.id <= $4 AND NOT EXISTS (SELECT 1 FROM subscriptions o \
                 WHERE o.contact_hmac = s.contact_hmac AND o.channel = s.channel AND o.id < s.id \
                 AND ",
                $crate::store::fanout::sql::in_scope!("o"),
                ")"
            )
        };
    }

    /// The reports of one range that ask for notices on one channel (`sms`/`phone` or
    /// `email`/`email`) as `report_id, hmac, recipient, lang, wanted`, with `nth` = 1 on the first
    /// report of each contact in the range.
    macro_rules! range_reports {
        ($channel:literal, $contact:literal, $cursor:literal, $upper:literal) => {
            concat!(
                "SELECT r.id AS report_id, r.",
                $contact,
                "_hmac AS hmac, r.",
                $contact,
                "_enc AS recipient, r.lang, r.incident_notices AS wanted, row_number() OVER \
                 (PARTITION BY r.",
                $contact,
                "_hmac ORDER BY r.id) AS nth FROM reports r WHERE r.incident_id = $1 AND r.id > ",
                $cursor,
                " AND r.id <= ",
                $upper,
                " AND r.notify_",
                $channel,
                " AND r.",
                $contact,
                "_enc IS NOT NULL"
            )
        };
    }

    /// The reporters of one range on one channel: once per contact, the contact's first report
    /// deciding (earlier ranges' contacts are in `fanout_contacts`), none whose first report
    /// stopped the incident's notices, and none that subscribed on that channel.
    macro_rules! reporters_in_range {
        ($channel:literal, $contact:literal) => {
            concat!(
                "SELECT x.report_id, '",
                $channel,
                "' AS channel, x.recipient, x.lang FROM (",
                $crate::store::fanout::sql::range_reports!($channel, $contact, "$3", "$4"),
                ") x WHERE x.nth = 1 AND x.wanted AND NOT EXISTS (SELECT 1 FROM fanout_contacts f \
                 WHERE f.update_id = $5 AND f.channel = '",
                $channel,
                "' AND f.contact_hmac = x.hmac) AND NOT EXISTS (SELECT 1 FROM subscriptions o \
                 WHERE o.contact_hmac = x.hmac AND o.channel = '",
                $channel,
                "' AND ",
                $crate::store::fanout::sql::in_scope!("o"),
                ")"
            )
        };
    }

    /// Both channels of one range of reports, as `report_id, channel, recipient, lang`.
    macro_rules! reporters {
        () => {
            concat!(
                "(",
                $crate::store::fanout::sql::reporters_in_range!("sms", "phone"),
                " UNION ALL ",
                $crate::store::fanout::sql::reporters_in_range!("email", "email"),
                ") c"
            )
        };
    }

    /// After a range is expanded, its contacts, so later ranges skip them: `$1` incident, `$2`
    /// cursor, `$3` upper bound, `$4` update id.
    pub const REMEMBER_CONTACTS: &str = concat!(
        "INSERT INTO fanout_contacts (update_id, channel, contact_hmac) SELECT $4, channel, hmac \
         FROM (SELECT 'sms' AS channel, hmac FROM (",
        range_reports!("sms", "phone", "$2", "$3"),
        ") p WHERE p.nth = 1 UNION ALL SELECT 'email', hmac FROM (",
        range_reports!("email", "email", "$2", "$3"),
        ") e WHERE e.nth = 1) c WHERE true ON CONFLICT DO NOTHING"
    );

    /// A finished fan-out's contacts are not needed any more.
    pub const FORGET_CONTACTS: &str = "DELETE FROM fanout_contacts WHERE update_id = $1";

    pub(in crate::store) use {
        count_sent, in_scope, range_reports, reporters, reporters_in_range, subscriptions_in_range,
    };

    /// The outbox columns every expansion writes, in this order.
    macro_rules! outbox_columns {
        () => {
            "INSERT INTO outbox (id, channel, template, lang, recipient_enc, payload, \
             source_kind, source_id, state, attempts, next_attempt_at, created_at, updated_at) "
        };
    }

    pub(in crate::store) use outbox_columns;
}

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    pub update_id: Uuid,
    pub incident_id: Uuid,
    pub provider: String,
    pub subscriptions_done: bool,
    pub subscription_cursor: Option<Uuid>,
    pub report_cursor: Option<Uuid>,
}

/// The implementation of [`FanoutStore`] for a store type whose pools are `$read` and
/// `$write`, with the backend's statements in module `$sql` (`CLAIM`, `EXPAND_SUBSCRIPTIONS`,
/// `EXPAND_REPORTS`).
macro_rules! impl_fanout_store {
    ($store:ty, read: $read:ident, write: $write:ident, sql: $sql:path) => {
        #[async_trait::async_trait]
        impl $crate::store::FanoutStore for $store {
            async fn fanout_step(
                &self,
                batch_rows: u32,
                now: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<$crate::store::FanoutStep> {
                use $crate::store::FanoutStep;
                use $crate::store::fanout::{JobRow, sql};
                use $sql as backend;
                let now = $crate::store::to_millis(now);
                let offset = i64::from(batch_rows.max(1) - 1);
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let Some(job) = sqlx::query_as::<_, JobRow>(backend::CLAIM)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::error)?
                else {
                    return Ok(FanoutStep::Idle);
                };
                let (cursor, bound) = if job.subscriptions_done {
                    let cursor = job.report_cursor.unwrap_or(uuid::Uuid::nil());
                    let bound: Option<uuid::Uuid> = sqlx::query_scalar(sql::REPORT_BOUND)
                        .bind(job.incident_id)
                        .bind(cursor)
                        .bind(offset)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(Self::error)?;
                    (cursor, bound)
                } else {
                    let cursor = job.subscription_cursor.unwrap_or(uuid::Uuid::nil());
                    let bound: Option<uuid::Uuid> = sqlx::query_scalar(sql::SUBSCRIPTION_BOUND)
                        .bind(job.incident_id)
                        .bind(job.provider.as_str())
                        .bind(cursor)
                        .bind(offset)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(Self::error)?;
                    (cursor, bound)
                };
                // No bound: the rest fits in this batch, and this range is the last one.
                let upper = bound.unwrap_or(uuid::Uuid::max());
                let last = bound.is_none();
                let expand = if job.subscriptions_done {
                    backend::EXPAND_REPORTS
                } else {
                    backend::EXPAND_SUBSCRIPTIONS
                };
                let rows = sqlx::query(expand)
                    .bind(job.incident_id)
                    .bind(job.provider.as_str())
                    .bind(cursor)
                    .bind(upper)
                    .bind(job.update_id)
                    .bind(now)
                    .bind(job.incident_id.to_string())
                    .bind(job.update_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?
                    .rows_affected();
                if job.subscriptions_done {
                    sqlx::query(sql::REMEMBER_CONTACTS)
                        .bind(job.incident_id)
                        .bind(cursor)
                        .bind(upper)
                        .bind(job.update_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::error)?;
                    if last {
                        sqlx::query(sql::FORGET_CONTACTS)
                            .bind(job.update_id)
                            .execute(&mut *tx)
                            .await
                            .map_err(Self::error)?;
                    }
                }
                let advance = if job.subscriptions_done {
                    sql::ADVANCE_REPORTS
                } else {
                    sql::ADVANCE_SUBSCRIPTIONS
                };
                sqlx::query(advance)
                    .bind(job.update_id)
                    .bind(last)
                    .bind(upper)
                    .bind(i64::try_from(rows).unwrap_or(i64::MAX))
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                tx.commit().await.map_err(Self::error)?;
                Ok(FanoutStep::Expanded {
                    update_id: job.update_id,
                    rows,
                    finished: last && job.subscriptions_done,
                })
            }

            async fn stop_incident_notices(
                &self,
                report_id: uuid::Uuid,
            ) -> $crate::store::StoreResult<bool> {
                use $crate::store::fanout::sql;
                let changed = sqlx::query(sql::STOP_NOTICES)
                    .bind(report_id)
                    .execute(&self.$write)
                    .await
                    .map_err(Self::error)?
                    .rows_affected();
                Ok(changed > 0)
            }

            async fn fanout_progress(
                &self,
                incident_id: uuid::Uuid,
                update_id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::store::FanoutProgress>> {
                use $crate::store::fanout::sql;
                let rows: Vec<(String, i64, i64, String, i64)> = sqlx::query_as(sql::FIND)
                    .bind(update_id)
                    .bind(incident_id)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                let Some((state, enqueued, sent, _, _)) = rows.first() else {
                    return Ok(None);
                };
                let enqueued = u64::try_from(*enqueued).unwrap_or_default();
                let mut messages = $crate::store::OutboxProgress {
                    sent: u64::try_from(*sent).unwrap_or_default(),
                    ..Default::default()
                };
                for (_, _, _, state, n) in &rows {
                    messages.add(state, *n)?;
                }
                messages.pending = enqueued.saturating_sub(messages.total());
                Ok(Some($crate::store::FanoutProgress {
                    state: $crate::store::parse_stored(state, "fanouts.state")?,
                    enqueued,
                    messages,
                }))
            }
        }
    };
}

pub(super) use impl_fanout_store;
