//! Reports on PostgreSQL: `INSERT … SELECT FROM UNNEST(arrays)`, one statement per table per
//! batch whatever its size.

use async_trait::async_trait;
use uuid::Uuid;

use super::PgStore;
use crate::domain::{Receipt, ReportStatus};
use crate::store::reports::sql;
use crate::store::reports::{ContactHashRow, IdempotentRow, ReportRow, report_from_rows};
use crate::store::{
    AuditEntry, ContactHashes, IdempotentReport, ReportStore, ReportWrite, StatusChange,
    StatusOutcome, StoreResult, StoredReport, to_millis,
};

const INSERT_REPORTS: &str = "INSERT INTO reports (id, receipt, incident_id, channel, provider, \
     service, reporter_type, harm_type, occurred_at, amount_krw, title, description, \
     reporter_name_enc, phone_enc, phone_hmac, email_enc, email_hmac, notify_sms, notify_email, \
     status, idempotency_key, request_hash, received_at, updated_at, lang) \
     SELECT id, receipt, incident_id, channel, provider, service, reporter_type, harm_type, \
     occurred_at, amount_krw, title, description, reporter_name_enc, phone_enc, phone_hmac, \
     email_enc, email_hmac, notify_sms, notify_email, $20, idempotency_key, request_hash, \
     received_at, received_at, lang \
     FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], \
     $7::text[], $8::text[], $9::int8[], $10::int8[], $11::text[], $12::text[], $13::bytea[], \
     $14::bytea[], $15::bytea[], $16::bytea[], $17::bytea[], $18::bool[], $19::bool[], \
     $21::text[], $22::bytea[], $23::int8[], $24::text[]) \
     AS t(id, receipt, incident_id, channel, provider, service, reporter_type, harm_type, \
     occurred_at, amount_krw, title, description, reporter_name_enc, phone_enc, phone_hmac, \
     email_enc, email_hmac, notify_sms, notify_email, idempotency_key, request_hash, received_at, \
     lang)";

const INSERT_EVENTS: &str = "INSERT INTO report_events (id, report_id, status, note, public, \
     actor, at) SELECT id, report_id, $3, NULL, TRUE, NULL, at \
     FROM UNNEST($1::uuid[], $2::uuid[], $4::int8[]) AS t(id, report_id, at)";

const INSERT_OUTBOX: &str = "INSERT INTO outbox (id, channel, template, lang, recipient_enc, \
     payload, source_kind, source_id, state, attempts, next_attempt_at, lease_owner, \
     lease_until, created_at, updated_at) \
     SELECT id, channel, template, lang, recipient_enc, payload, source_kind, source_id, \
     state, attempts, next_at, lease_owner, lease_until, due, due \
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], \
     $7::text[], $8::uuid[], $9::int8[], $10::text[], $11::int4[], $12::int8[], $13::text[], \
     $14::int8[]) \
     AS t(id, channel, template, lang, recipient_enc, payload, source_kind, source_id, due, \
     state, attempts, next_at, lease_owner, lease_until)";

/// Column arrays for one UNNEST insert of reports.
#[derive(Default)]
struct ReportColumns<'a> {
    id: Vec<Uuid>,
    receipt: Vec<&'a str>,
    incident_id: Vec<Option<Uuid>>,
    channel: Vec<&'a str>,
    provider: Vec<&'a str>,
    service: Vec<&'a str>,
    reporter_type: Vec<&'a str>,
    harm_type: Vec<&'a str>,
    occurred_at: Vec<Option<i64>>,
    amount_krw: Vec<Option<i64>>,
    title: Vec<Option<&'a str>>,
    description: Vec<&'a str>,
    reporter_name: Vec<&'a [u8]>,
    phone_enc: Vec<Option<&'a [u8]>>,
    phone_hmac: Vec<Option<&'a [u8]>>,
    email_enc: Vec<Option<&'a [u8]>>,
    email_hmac: Vec<Option<&'a [u8]>>,
    notify_sms: Vec<bool>,
    notify_email: Vec<bool>,
    idempotency_key: Vec<Option<&'a str>>,
    request_hash: Vec<Option<&'a [u8]>>,
    received_at: Vec<i64>,
    lang: Vec<&'a str>,
}

impl<'a> ReportColumns<'a> {
    fn from_batch(batch: &'a [ReportWrite]) -> Self {
        let mut c = Self::default();
        for w in batch {
            let r = &w.report;
            c.id.push(r.id);
            c.receipt.push(r.receipt.as_str());
            c.incident_id.push(r.incident_id);
            c.channel.push(r.channel.as_ref());
            c.provider.push(&r.provider);
            c.service.push(&r.service);
            c.reporter_type.push(r.reporter_type.as_ref());
            c.harm_type.push(r.harm_type.as_ref());
            c.occurred_at.push(r.occurred_at.map(to_millis));
            c.amount_krw.push(r.amount_krw);
            c.title.push(r.title.as_deref());
            c.description.push(&r.description);
            c.reporter_name.push(&r.reporter_name);
            c.phone_enc
                .push(r.phone.as_ref().map(|p| p.ciphertext.as_slice()));
            c.phone_hmac
                .push(r.phone.as_ref().map(|p| p.hmac.as_slice()));
            c.email_enc
                .push(r.email.as_ref().map(|e| e.ciphertext.as_slice()));
            c.email_hmac
                .push(r.email.as_ref().map(|e| e.hmac.as_slice()));
            c.notify_sms.push(r.notify_sms);
            c.notify_email.push(r.notify_email);
            c.idempotency_key
                .push(r.idempotency.as_ref().map(|i| i.key.as_str()));
            c.request_hash
                .push(r.idempotency.as_ref().map(|i| i.request_hash.as_slice()));
            c.received_at.push(to_millis(r.received_at));
            c.lang.push(&r.lang);
        }
        c
    }
}

#[async_trait]
impl ReportStore for PgStore {
    async fn insert_reports(&self, batch: &[ReportWrite]) -> StoreResult<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let c = ReportColumns::from_batch(batch);
        let mut tx = self.pool.begin().await.map_err(Self::error)?;
        sqlx::query(INSERT_REPORTS)
            .bind(&c.id)
            .bind(&c.receipt)
            .bind(&c.incident_id)
            .bind(&c.channel)
            .bind(&c.provider)
            .bind(&c.service)
            .bind(&c.reporter_type)
            .bind(&c.harm_type)
            .bind(&c.occurred_at)
            .bind(&c.amount_krw)
            .bind(&c.title)
            .bind(&c.description)
            .bind(&c.reporter_name)
            .bind(&c.phone_enc)
            .bind(&c.phone_hmac)
            .bind(&c.email_enc)
            .bind(&c.email_hmac)
            .bind(&c.notify_sms)
            .bind(&c.notify_email)
            .bind(ReportStatus::Received.as_ref())
            .bind(&c.idempotency_key)
            .bind(&c.request_hash)
            .bind(&c.received_at)
            .bind(&c.lang)
            .execute(&mut *tx)
            .await
            .map_err(Self::error)?;

        let event_ids: Vec<Uuid> = batch.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(INSERT_EVENTS)
            .bind(&event_ids)
            .bind(&c.id)
            .bind(ReportStatus::Received.as_ref())
            .bind(&c.received_at)
            .execute(&mut *tx)
            .await
            .map_err(Self::error)?;

        let messages: Vec<_> = batch.iter().flat_map(|w| &w.outbox).collect();
        if !messages.is_empty() {
            let payloads: Vec<String> = messages.iter().map(|m| m.payload.to_string()).collect();
            let claims: Vec<_> = messages.iter().map(|m| m.claim_columns()).collect();
            sqlx::query(INSERT_OUTBOX)
                .bind(messages.iter().map(|m| m.id).collect::<Vec<_>>())
                .bind(
                    messages
                        .iter()
                        .map(|m| m.channel.as_ref())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    messages
                        .iter()
                        .map(|m| m.template.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(messages.iter().map(|m| m.lang.as_str()).collect::<Vec<_>>())
                .bind(
                    messages
                        .iter()
                        .map(|m| m.recipient.as_slice())
                        .collect::<Vec<_>>(),
                )
                .bind(&payloads)
                .bind(
                    messages
                        .iter()
                        .map(|m| m.source_kind.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(messages.iter().map(|m| m.source_id).collect::<Vec<_>>())
                .bind(
                    messages
                        .iter()
                        .map(|m| to_millis(m.not_before))
                        .collect::<Vec<_>>(),
                )
                .bind(claims.iter().map(|c| c.state).collect::<Vec<_>>())
                .bind(claims.iter().map(|c| c.attempts).collect::<Vec<_>>())
                .bind(claims.iter().map(|c| c.next_attempt_at).collect::<Vec<_>>())
                .bind(claims.iter().map(|c| c.lease_owner).collect::<Vec<_>>())
                .bind(claims.iter().map(|c| c.lease_until).collect::<Vec<_>>())
                .execute(&mut *tx)
                .await
                .map_err(Self::error)?;
        }

        tx.commit().await.map_err(Self::error)
    }

    async fn find_report(&self, receipt: &Receipt) -> StoreResult<Option<StoredReport>> {
        let rows = sqlx::query_as::<_, ReportRow>(sql::FIND_REPORT)
            .bind(receipt.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(Self::error)?;
        report_from_rows(rows)
    }

    async fn contact_hashes(&self, receipt: &Receipt) -> StoreResult<ContactHashes> {
        sqlx::query_as::<_, ContactHashRow>(sql::CONTACT_HASHES)
            .bind(receipt.as_str())
            .fetch_one(&self.pool)
            .await
            .map(ContactHashes::from)
            .map_err(Self::error)
    }

    async fn find_idempotent(&self, key: &str) -> StoreResult<Option<IdempotentReport>> {
        sqlx::query_as::<_, IdempotentRow>(sql::FIND_IDEMPOTENT)
            .bind(key)
            .fetch_optional(&self.pool)
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

crate::store::reports::impl_status_change!(PgStore, sqlx::Postgres, pool);
