//! The audit trail: who did what, when, from where. Never personal data.

use async_trait::async_trait;
use uuid::Uuid;

use super::{StoreResult, Timestamp, from_millis};

#[async_trait]
pub trait AuditStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// Most recent entries first.
    async fn recent_audit(&self, limit: u32) -> StoreResult<Vec<AuditEntry>>;
}

/// One line of the audit trail.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<serde_json::Value>,
    pub client_addr: Option<String>,
}

pub(super) mod sql {
    pub const INSERT_AUDIT: &str = "INSERT INTO audit_log \
         (id, at, actor, action, target, detail, client_addr) VALUES ($1, $2, $3, $4, $5, $6, $7)";

    pub const RECENT_AUDIT: &str = "SELECT id, at, actor, action, target, detail, client_addr \
         FROM audit_log ORDER BY at DESC, id DESC LIMIT $1";
}

/// The insert of one audit entry, bound, for the caller to execute where it writes: on its pool,
/// or in the transaction of the change the entry records.
macro_rules! insert_audit {
    ($entry:expr) => {{
        let entry: &$crate::store::AuditEntry = $entry;
        sqlx::query($crate::store::audit::sql::INSERT_AUDIT)
            .bind(entry.id)
            .bind($crate::store::to_millis(entry.at))
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(entry.target.as_deref())
            .bind(entry.detail.as_ref().map(ToString::to_string))
            .bind(entry.client_addr.as_deref())
    }};
}
pub(super) use insert_audit;

#[derive(sqlx::FromRow)]
pub(super) struct AuditRow {
    id: Uuid,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    detail: Option<String>,
    client_addr: Option<String>,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        Self {
            id: row.id,
            at: from_millis(row.at),
            actor: row.actor,
            action: row.action,
            target: row.target,
            detail: row.detail.and_then(|d| serde_json::from_str(&d).ok()),
            client_addr: row.client_addr,
        }
    }
}
