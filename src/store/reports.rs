//! Harm reports: the batch write of everything a report causes, the status lookup, the
//! idempotency record, and a consultant's change of a report's status with the notice it sends.

use async_trait::async_trait;
use uuid::Uuid;

use super::outbox::NewMessage;
use super::{AuditEntry, StoreResult, Timestamp, from_millis, hash_from_bytes, parse_stored};
use crate::crypto::SealedContact;
use crate::domain::{Channel, HarmType, Receipt, ReportStatus, ReporterType};

#[async_trait]
pub trait ReportStore {
    /// Write every report of the batch, with its first history entry and its notifications, in
    /// one transaction: all committed or none.
    async fn insert_reports(&self, batch: &[ReportWrite]) -> StoreResult<()>;

    /// The report with this receipt, with its public history.
    async fn find_report(&self, receipt: &Receipt) -> StoreResult<Option<StoredReport>>;

    /// The keyed hashes of the contacts given with this receipt's report, read by one query
    /// that returns one row whether or not the report exists: what a lookup checks before it
    /// reads the report, so an unknown receipt and a wrong contact cost the same.
    async fn contact_hashes(&self, receipt: &Receipt) -> StoreResult<ContactHashes>;

    /// The report first submitted with this `Idempotency-Key`.
    async fn find_idempotent(&self, key: &str) -> StoreResult<Option<IdempotentReport>>;

    /// Move a report to a new status in one transaction: the report, its public history
    /// entry, a notice to each contact the reporter asked to be told on, and the audit entry.
    async fn change_report_status(
        &self,
        change: &StatusChange,
        audit: &AuditEntry,
    ) -> StoreResult<StatusOutcome>;
}

/// A change of a report's status, as a consultant makes it.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub receipt: Receipt,
    pub status: ReportStatus,
    /// Shown to the reporter in the lookup and in the notice.
    pub note: Option<String>,
    pub event_id: Uuid,
    pub actor: String,
    pub at: Timestamp,
    pub notice: StatusNotice,
}

/// The notice a status change sends: one message per channel the reporter chose, each with
/// its own stable id, rendered from `template` with `payload` in the report's own language.
#[derive(Debug, Clone)]
pub struct StatusNotice {
    pub sms_id: Uuid,
    pub email_id: Uuid,
    pub template: String,
    pub payload: serde_json::Value,
}

/// What became of a [`StatusChange`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusOutcome {
    Changed {
        report_id: Uuid,
        previous: ReportStatus,
        /// Notices written to the outbox (one per channel the reporter chose).
        notices: u64,
    },
    /// The report is in `current`, which cannot become the asked status, for `reason`.
    Refused {
        current: ReportStatus,
        reason: &'static str,
    },
    NotFound,
}

/// A harm report ready to be written: every field already validated and personal data sealed.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub id: Uuid,
    pub receipt: Receipt,
    pub incident_id: Option<Uuid>,
    pub channel: Channel,
    pub provider: String,
    pub service: String,
    pub reporter_type: ReporterType,
    pub harm_type: HarmType,
    pub occurred_at: Option<Timestamp>,
    pub amount_krw: Option<i64>,
    pub title: Option<String>,
    pub description: String,
    pub reporter_name: Vec<u8>,
    pub phone: Option<SealedContact>,
    pub email: Option<SealedContact>,
    pub notify_sms: bool,
    pub notify_email: bool,
    /// `ko` or `en`: the language of every notice to this reporter.
    pub lang: String,
    pub idempotency: Option<IdempotencyRecord>,
    pub received_at: Timestamp,
}

/// The client's `Idempotency-Key` and a hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request_hash: [u8; 32],
}

/// Everything one accepted report causes, committed together: the report, its first history
/// entry (derived from the report), and the notifications it triggers.
#[derive(Debug, Clone)]
pub struct ReportWrite {
    pub report: NewReport,
    pub outbox: Vec<NewMessage>,
}

impl ReportWrite {
    /// Give the report another receipt (its first collided with a stored one), in the report
    /// and in every notification that quotes it.
    pub fn replace_receipt(&mut self, receipt: Receipt) {
        for message in &mut self.outbox {
            if let Some(quoted) = message.payload.get_mut("receipt") {
                *quoted = serde_json::Value::from(receipt.as_str());
            }
        }
        self.report.receipt = receipt;
    }
}

/// The keyed hashes of a report's contacts; both `None` when there is no such report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactHashes {
    pub phone: Option<[u8; 32]>,
    pub email: Option<[u8; 32]>,
}

/// What the status lookup needs to know about a report.
#[derive(Debug, Clone)]
pub struct StoredReport {
    pub id: Uuid,
    pub receipt: Receipt,
    pub status: ReportStatus,
    pub incident_id: Option<Uuid>,
    pub received_at: Timestamp,
    /// Public history entries, oldest first.
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub status: ReportStatus,
    pub at: Timestamp,
    pub note: Option<String>,
}

/// The first answer given to an idempotent submission, kept with the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentReport {
    pub receipt: Receipt,
    pub request_hash: [u8; 32],
    pub incident_id: Option<Uuid>,
    pub received_at: Timestamp,
}

/// Statements both backends run as written.
pub(super) mod sql {
    /// The report and its public history in one round trip.
    pub const FIND_REPORT: &str = "SELECT r.id, r.receipt, r.status, r.incident_id, \
         r.received_at, e.status AS event_status, \
         e.at AS event_at, e.note AS event_note \
         FROM reports r LEFT JOIN report_events e ON e.report_id = r.id AND e.public \
         WHERE r.receipt = $1 ORDER BY e.at, e.id";

    /// One row for any receipt: the report's contact hashes, or NULLs when there is none.
    pub const CONTACT_HASHES: &str = "SELECT r.phone_hmac, r.email_hmac \
         FROM (SELECT 1) AS one LEFT JOIN reports r ON r.receipt = $1";

    pub const FIND_IDEMPOTENT: &str = "SELECT receipt, request_hash, incident_id, received_at \
         FROM reports WHERE idempotency_key = $1";

    /// Columns of a report row, in the order the SQLite batch insert binds them.
    pub const REPORT_COLUMNS: &str = "id, receipt, incident_id, channel, provider, service, \
         reporter_type, harm_type, occurred_at, amount_krw, title, description, \
         reporter_name_enc, phone_enc, phone_hmac, email_enc, email_hmac, notify_sms, \
         notify_email, status, idempotency_key, request_hash, received_at, updated_at, lang";

    pub const EVENT_COLUMNS: &str = "id, report_id, status, note, public, actor, at";

    pub const CURRENT_STATUS: &str = "SELECT id, status FROM reports WHERE receipt = $1";

    /// Compare-and-set: a change made by someone else in between leaves no row changed.
    pub const SET_STATUS: &str =
        "UPDATE reports SET status = $2, updated_at = $3 WHERE id = $1 AND status = $4";

    pub const INSERT_EVENT: &str = "INSERT INTO report_events (id, report_id, status, note, \
         public, actor, at) VALUES ($1, $2, $3, $4, TRUE, $5, $6)";

    /// The notice on channel `$2` (`sms` or `email`) to report `$5`'s own sealed contact, in the
    /// report's language, if the reporter asked for notices there; the report is also the
    /// message's source.
    pub const NOTIFY_REPORTER: &str = "INSERT INTO outbox (id, channel, template, lang, \
         recipient_enc, payload, source_kind, source_id, state, attempts, next_attempt_at, \
         created_at, updated_at) \
         SELECT $1, $2, $3, r.lang, CASE WHEN $2 = 'sms' THEN r.phone_enc ELSE r.email_enc END, \
         $4, 'report_status', $5, 'pending', 0, $6, $6, $6 FROM reports r WHERE r.id = $5 \
         AND CASE WHEN $2 = 'sms' THEN r.notify_sms AND r.phone_enc IS NOT NULL \
         ELSE r.notify_email AND r.email_enc IS NOT NULL END";
}

/// `change_report_status` for a store type on database `$db` whose writing pool is `$pool`:
/// the statements are the same on both backends.
macro_rules! impl_status_change {
    ($store:ty, $db:ty, $pool:ident) => {
        impl $store {
            async fn apply_status_change(
                &self,
                change: &$crate::store::StatusChange,
                audit: &$crate::store::AuditEntry,
            ) -> $crate::store::StoreResult<$crate::store::StatusOutcome> {
                use $crate::store::reports::sql;
                use $crate::store::{StatusOutcome, to_millis};
                let mut tx = self.$pool.begin().await.map_err(Self::error)?;
                let Some((report_id, current)) =
                    sqlx::query_as::<_, (uuid::Uuid, String)>(sql::CURRENT_STATUS)
                        .bind(change.receipt.as_str())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(Self::error)?
                else {
                    return Ok(StatusOutcome::NotFound);
                };
                let current: $crate::domain::ReportStatus =
                    $crate::store::parse_stored(&current, "reports.status")?;
                if let Some(reason) = current.refuses(change.status) {
                    return Ok(StatusOutcome::Refused { current, reason });
                }
                let at = to_millis(change.at);
                let updated = sqlx::query(sql::SET_STATUS)
                    .bind(report_id)
                    .bind(change.status.as_ref())
                    .bind(at)
                    .bind(current.as_ref())
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                if updated.rows_affected() == 0 {
                    return Ok(StatusOutcome::Refused {
                        current,
                        reason: "the report was changed by someone else at the same moment",
                    });
                }
                sqlx::query(sql::INSERT_EVENT)
                    .bind(change.event_id)
                    .bind(report_id)
                    .bind(change.status.as_ref())
                    .bind(change.note.as_deref())
                    .bind(change.actor.as_str())
                    .bind(at)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                let notice = &change.notice;
                let payload = notice.payload.to_string();
                let mut notices = 0;
                for (id, channel) in [(notice.sms_id, "sms"), (notice.email_id, "email")] {
                    notices += sqlx::query(sql::NOTIFY_REPORTER)
                        .bind(id)
                        .bind(channel)
                        .bind(notice.template.as_str())
                        .bind(payload.as_str())
                        .bind(report_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await
                        .map_err(Self::error)?
                        .rows_affected();
                }
                $crate::store::audit::insert_audit!(audit)
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                tx.commit().await.map_err(Self::error)?;
                Ok(StatusOutcome::Changed {
                    report_id,
                    previous: current,
                    notices,
                })
            }
        }
    };
}

pub(super) use impl_status_change;

/// One row of [`sql::FIND_REPORT`]: the report repeated beside each public history entry.
#[derive(sqlx::FromRow)]
pub(super) struct ReportRow {
    id: Uuid,
    receipt: String,
    status: String,
    incident_id: Option<Uuid>,
    received_at: i64,
    event_status: Option<String>,
    event_at: Option<i64>,
    event_note: Option<String>,
}

/// The one row of [`sql::CONTACT_HASHES`].
#[derive(sqlx::FromRow)]
pub(super) struct ContactHashRow {
    phone_hmac: Option<Vec<u8>>,
    email_hmac: Option<Vec<u8>>,
}

impl From<ContactHashRow> for ContactHashes {
    fn from(row: ContactHashRow) -> Self {
        Self {
            phone: hash_from_bytes(row.phone_hmac),
            email: hash_from_bytes(row.email_hmac),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct IdempotentRow {
    receipt: String,
    request_hash: Option<Vec<u8>>,
    incident_id: Option<Uuid>,
    received_at: i64,
}

/// Fold the joined rows of one report into the report with its history.
pub(super) fn report_from_rows(rows: Vec<ReportRow>) -> StoreResult<Option<StoredReport>> {
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let mut history = Vec::new();
    let mut push = |row: &ReportRow| -> StoreResult<()> {
        if let (Some(status), Some(at)) = (&row.event_status, row.event_at) {
            history.push(HistoryEntry {
                status: parse_stored(status, "report_events.status")?,
                at: from_millis(at),
                note: row.event_note.clone(),
            });
        }
        Ok(())
    };
    push(&first)?;
    for row in rows {
        push(&row)?;
    }
    Ok(Some(StoredReport {
        id: first.id,
        receipt: parse_stored(&first.receipt, "reports.receipt")?,
        status: parse_stored(&first.status, "reports.status")?,
        incident_id: first.incident_id,
        received_at: from_millis(first.received_at),
        history,
    }))
}

impl IdempotentRow {
    pub(super) fn into_record(self) -> StoreResult<IdempotentReport> {
        Ok(IdempotentReport {
            receipt: parse_stored(&self.receipt, "reports.receipt")?,
            request_hash: hash_from_bytes(self.request_hash).unwrap_or_default(),
            incident_id: self.incident_id,
            received_at: from_millis(self.received_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use crate::crypto::Keys;
    use crate::domain::{Channel, Receipt};
    use crate::intake::{ValidReport, sealed_write};
    use crate::notify::Lang;

    #[test]
    fn a_replaced_receipt_is_the_one_the_confirmations_quote() {
        let body = serde_json::json!({
            "provider": "Kakao", "service": "KakaoTalk", "reporter_type": "individual",
            "harm_type": "service_unavailable", "description": "메시지가 전송되지 않습니다.",
            "reporter": {"name": "홍길동", "phone": "010-1234-5678", "email": "hong@example.kr"},
            "notify": {"sms": true, "email": true}, "consent": {"personal_info": true}
        });
        let report = ValidReport::from_json(&body, Utc::now()).unwrap();
        let keys = Keys::from_master(&[5u8; 32]);
        let mut write = sealed_write(&keys, report, Channel::Api, Lang::Ko, None);
        assert_eq!(write.outbox.len(), 2);
        let fresh = Receipt::generate();
        write.replace_receipt(fresh.clone());
        assert_eq!(write.report.receipt, fresh);
        for message in &write.outbox {
            assert_eq!(message.payload["receipt"], fresh.as_str(), "{message:?}");
        }
    }
}
