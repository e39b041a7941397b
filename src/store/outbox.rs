//! Notifications waiting to be delivered (the transactional outbox).

use uuid::Uuid;

use super::Timestamp;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::AsRefStr, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum MessageChannel {
    Email,
    Sms,
}

pub(super) mod sql {
    /// Columns of an outbox row, in the order the SQLite batch insert binds them.
    pub const OUTBOX_COLUMNS: &str = "id, channel, template, lang, recipient_enc, payload, \
         source_kind, source_id, state, attempts, next_attempt_at, created_at, updated_at";
}
