//! Statements that read the same on SQLite and PostgreSQL (both accept `$n` placeholders).

pub const PING: &str = "SELECT 1";

pub const FIND_REPORT: &str = "SELECT id, receipt, status, incident_id, phone_hmac, email_hmac, \
     received_at FROM reports WHERE receipt = $1";

pub const REPORT_PUBLIC_HISTORY: &str = "SELECT status, at, note FROM report_events \
     WHERE report_id = $1 AND public ORDER BY at, id";

pub const FIND_IDEMPOTENT: &str = "SELECT receipt, request_hash, incident_id, received_at \
     FROM reports WHERE idempotency_key = $1";

pub const INSERT_AUDIT: &str = "INSERT INTO audit_log \
     (id, at, actor, action, target, detail, client_addr) VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub const RECENT_AUDIT: &str = "SELECT id, at, actor, action, target, detail, client_addr \
     FROM audit_log ORDER BY at DESC, id DESC LIMIT $1";

/// Columns of a report row, in the order both batch inserts bind them.
pub const REPORT_COLUMNS: &str = "id, receipt, incident_id, channel, provider, service, \
     reporter_type, harm_type, occurred_at, amount_krw, title, description, reporter_name_enc, \
     phone_enc, phone_hmac, email_enc, email_hmac, notify_sms, notify_email, status, \
     idempotency_key, request_hash, received_at, updated_at";

pub const EVENT_COLUMNS: &str = "id, report_id, status, note, public, actor, at";

pub const OUTBOX_COLUMNS: &str = "id, channel, template, lang, recipient_enc, payload, \
     source_kind, source_id, state, attempts, next_attempt_at, created_at, updated_at";
