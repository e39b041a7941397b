//! Incidents and their public updates. Every change is written together with its audit entry,
//! in one transaction: a command either happened and is on the record, or neither.
//!
//! Both backends run the same statements and the same code around them; only the sqlx types
//! differ, so the implementation is written once as [`impl_incident_store!`] and expanded in
//! `sqlite/incidents.rs` and `postgres/incidents.rs`.

use async_trait::async_trait;
use uuid::Uuid;

use super::{AuditEntry, StoreError, StoreResult, Timestamp, from_millis, parse_stored};
use crate::incident::model::{
    IncidentState, IncidentStatus, Localized, Origin, Severity, StateFilter,
};

#[async_trait]
pub trait IncidentStore {
    /// Write a new incident with its first update.
    async fn create_incident(&self, incident: &NewIncident, audit: &AuditEntry) -> StoreResult<()>;

    /// The incident with all its updates, oldest first.
    async fn find_incident(&self, id: Uuid) -> StoreResult<Option<IncidentRecord>>;

    /// Incidents in `filter`, most recently started first, at most `limit`.
    async fn list_incidents(&self, filter: StateFilter, limit: u32) -> StoreResult<Vec<Incident>>;

    /// Every open incident with all its updates, most recently started first.
    async fn open_incidents(&self) -> StoreResult<Vec<IncidentRecord>>;

    /// Open incidents, and those resolved at or after `resolved_since`: the ones whose notice
    /// clocks still matter.
    async fn incidents_with_clocks(&self, resolved_since: Timestamp) -> StoreResult<Vec<Incident>>;

    /// Post a lifecycle update to an open, confirmed incident; `resolved` closes it.
    async fn append_incident_update(
        &self,
        update: &NewIncidentUpdate,
        audit: &AuditEntry,
    ) -> StoreResult<Transition>;

    /// Confirm an unconfirmed (surge) incident, optionally completing its details.
    async fn confirm_incident(
        &self,
        confirmation: &Confirmation,
        audit: &AuditEntry,
    ) -> StoreResult<Transition>;

    /// Close an unconfirmed (surge) incident as not an incident.
    async fn dismiss_incident(
        &self,
        update: &NewIncidentUpdate,
        audit: &AuditEntry,
    ) -> StoreResult<Transition>;

    /// How many reports name this incident.
    async fn count_incident_reports(&self, id: Uuid) -> StoreResult<u64>;
}

/// An incident to open. The provider may be unknown for a surge.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub id: Uuid,
    pub title: Localized,
    pub provider: Option<String>,
    pub services: Vec<String>,
    pub severity: Severity,
    pub origin: Origin,
    pub confirmed: bool,
    pub started_at: Timestamp,
    /// The first public update; its status is the incident's status.
    pub first_update: NewIncidentUpdate,
}

#[derive(Debug, Clone)]
pub struct NewIncidentUpdate {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub status: IncidentStatus,
    pub message: Localized,
    /// Who posted it (a token id, or `system:surge`); staff-only.
    pub actor: String,
    pub at: Timestamp,
}

/// Confirming a surge: its first confirmed update and any details the commander completes.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub update: NewIncidentUpdate,
    pub title: Option<Localized>,
    pub provider: Option<String>,
    pub services: Option<Vec<String>>,
    pub severity: Option<Severity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub id: Uuid,
    pub title: Localized,
    pub provider: Option<String>,
    pub services: Vec<String>,
    pub severity: Severity,
    pub state: IncidentState,
    pub status: IncidentStatus,
    pub origin: Origin,
    pub confirmed: bool,
    pub started_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentUpdate {
    pub id: Uuid,
    pub incident_id: Uuid,
    pub status: IncidentStatus,
    pub message: Localized,
    pub actor: String,
    pub at: Timestamp,
}

/// An incident with its updates, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    pub incident: Incident,
    pub updates: Vec<IncidentUpdate>,
}

impl IncidentRecord {
    pub fn latest_update(&self) -> Option<&IncidentUpdate> {
        self.updates.last()
    }
}

/// The outcome of a change that only applies in some states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Done; the incident as it is now.
    Applied(Incident),
    NotFound,
    /// Not allowed in the incident's current state, shown here; nothing was written.
    Refused(Incident),
}

/// Statements both backends run as written.
pub(super) mod sql {
    /// The columns of an incident row, in [`super::IncidentRow`]'s order.
    macro_rules! incident_columns {
        () => {
            "id, title_ko, title_en, provider, services, severity, state, status, origin, \
             confirmed, started_at, resolved_at, created_at, updated_at"
        };
    }

    macro_rules! update_columns {
        () => {
            "id, incident_id, status, message_ko, message_en, actor, created_at"
        };
    }

    pub const INSERT_INCIDENT: &str = concat!(
        "INSERT INTO incidents (",
        incident_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8, $9, $10, NULL, $11, $11)"
    );

    pub const INSERT_UPDATE: &str = concat!(
        "INSERT INTO incident_updates (",
        update_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    );

    pub const FIND_INCIDENT: &str = concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents WHERE id = $1"
    );

    pub const UPDATES_OF: &str = concat!(
        "SELECT ",
        update_columns!(),
        " FROM incident_updates WHERE incident_id = $1 ORDER BY created_at, id"
    );

    pub const LIST_ALL: &str = concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents ORDER BY started_at DESC, id DESC LIMIT $1"
    );

    pub const LIST_IN_STATE: &str = concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents WHERE state = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
    );

    pub const UPDATES_OF_OPEN: &str = "SELECT u.id, u.incident_id, u.status, u.message_ko, \
         u.message_en, u.actor, u.created_at FROM incident_updates u \
         JOIN incidents i ON i.id = u.incident_id WHERE i.state = 'open' \
         ORDER BY u.created_at, u.id";

    pub const WITH_CLOCKS: &str = concat!(
        "SELECT ",
        incident_columns!(),
        " FROM incidents WHERE state = 'open' OR (state = 'resolved' AND resolved_at >= $1) \
         ORDER BY started_at DESC, id DESC"
    );

    /// Only an open, confirmed incident takes lifecycle updates.
    pub const APPLY_UPDATE: &str = concat!(
        "UPDATE incidents SET status = $2, state = $3, resolved_at = $4, updated_at = $5 \
         WHERE id = $1 AND state = 'open' AND confirmed RETURNING ",
        incident_columns!()
    );

    /// A new title replaces both languages; other details change only when given.
    pub const CONFIRM: &str = concat!(
        "UPDATE incidents SET confirmed = TRUE, status = $2, \
         title_ko = COALESCE($3, title_ko), \
         title_en = CASE WHEN $3 IS NULL THEN title_en ELSE $4 END, \
         provider = COALESCE($5, provider), services = COALESCE($6, services), \
         severity = COALESCE($7, severity), updated_at = $8 \
         WHERE id = $1 AND state = 'open' AND NOT confirmed RETURNING ",
        incident_columns!()
    );

    pub const DISMISS: &str = concat!(
        "UPDATE incidents SET state = 'dismissed', status = 'dismissed', updated_at = $2 \
         WHERE id = $1 AND state = 'open' AND NOT confirmed RETURNING ",
        incident_columns!()
    );

    pub const COUNT_REPORTS: &str = "SELECT count(*) FROM reports WHERE incident_id = $1";
}

/// The unknown provider of a surge is stored as an empty string (the column is NOT NULL).
pub(super) fn provider_column(provider: Option<&str>) -> &str {
    provider.unwrap_or_default()
}

pub(super) fn services_column(services: &[String]) -> String {
    serde_json::Value::from(services).to_string()
}

#[derive(sqlx::FromRow)]
pub(super) struct IncidentRow {
    id: Uuid,
    title_ko: String,
    title_en: Option<String>,
    provider: String,
    services: String,
    severity: String,
    state: String,
    status: String,
    origin: String,
    confirmed: bool,
    started_at: i64,
    resolved_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

#[derive(sqlx::FromRow)]
pub(super) struct UpdateRow {
    id: Uuid,
    incident_id: Uuid,
    status: String,
    message_ko: String,
    message_en: Option<String>,
    actor: String,
    created_at: i64,
}

impl TryFrom<IncidentRow> for Incident {
    type Error = StoreError;

    fn try_from(row: IncidentRow) -> StoreResult<Self> {
        let services: Vec<String> = serde_json::from_str(&row.services).map_err(|_| {
            StoreError::Other(anyhow::anyhow!("unreadable value in incidents.services"))
        })?;
        Ok(Self {
            id: row.id,
            title: Localized {
                ko: row.title_ko,
                en: row.title_en,
            },
            provider: Some(row.provider).filter(|p| !p.is_empty()),
            services,
            severity: parse_stored(&row.severity, "incidents.severity")?,
            state: parse_stored(&row.state, "incidents.state")?,
            status: parse_stored(&row.status, "incidents.status")?,
            origin: parse_stored(&row.origin, "incidents.origin")?,
            confirmed: row.confirmed,
            started_at: from_millis(row.started_at),
            resolved_at: row.resolved_at.map(from_millis),
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
        })
    }
}

impl TryFrom<UpdateRow> for IncidentUpdate {
    type Error = StoreError;

    fn try_from(row: UpdateRow) -> StoreResult<Self> {
        Ok(Self {
            id: row.id,
            incident_id: row.incident_id,
            status: parse_stored(&row.status, "incident_updates.status")?,
            message: Localized {
                ko: row.message_ko,
                en: row.message_en,
            },
            actor: row.actor,
            at: from_millis(row.created_at),
        })
    }
}

pub(super) fn incidents(rows: Vec<IncidentRow>) -> StoreResult<Vec<Incident>> {
    rows.into_iter().map(Incident::try_from).collect()
}

/// Attach `updates` (any order of incidents, oldest first within one) to their incidents.
pub(super) fn with_updates(
    incidents: Vec<Incident>,
    updates: Vec<UpdateRow>,
) -> StoreResult<Vec<IncidentRecord>> {
    let mut records: Vec<IncidentRecord> = incidents
        .into_iter()
        .map(|incident| IncidentRecord {
            incident,
            updates: Vec::new(),
        })
        .collect();
    for row in updates {
        let update = IncidentUpdate::try_from(row)?;
        if let Some(record) = records
            .iter_mut()
            .find(|r| r.incident.id == update.incident_id)
        {
            record.updates.push(update);
        }
    }
    Ok(records)
}

/// The implementation of [`IncidentStore`] for a store type on database `$db` whose pools are
/// `$read` and `$write` (the same pool on PostgreSQL).
macro_rules! impl_incident_store {
    ($store:ty, $db:ty, read: $read:ident, write: $write:ident) => {
        #[async_trait::async_trait]
        impl $crate::store::IncidentStore for $store {
            async fn create_incident(
                &self,
                incident: &$crate::store::NewIncident,
                audit: &$crate::store::AuditEntry,
            ) -> $crate::store::StoreResult<()> {
                use $crate::store::incidents::{provider_column, services_column, sql};
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                sqlx::query(sql::INSERT_INCIDENT)
                    .bind(incident.id)
                    .bind(incident.title.ko.as_str())
                    .bind(incident.title.en.as_deref())
                    .bind(provider_column(incident.provider.as_deref()))
                    .bind(services_column(&incident.services))
                    .bind(incident.severity.as_ref())
                    .bind(incident.first_update.status.as_ref())
                    .bind(incident.origin.as_ref())
                    .bind(incident.confirmed)
                    .bind($crate::store::to_millis(incident.started_at))
                    .bind($crate::store::to_millis(incident.first_update.at))
                    .execute(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                insert_update(&mut tx, &incident.first_update).await?;
                // An unconfirmed surge is not announced; confirming it is.
                if incident.confirmed {
                    insert_fanout(
                        &mut tx,
                        &incident.first_update,
                        incident.provider.as_deref(),
                    )
                    .await?;
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await.map_err(Self::error)
            }

            async fn find_incident(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<Option<$crate::store::IncidentRecord>> {
                use $crate::store::incidents::{IncidentRow, UpdateRow, sql, with_updates};
                let Some(row) = sqlx::query_as::<_, IncidentRow>(sql::FIND_INCIDENT)
                    .bind(id)
                    .fetch_optional(&self.$read)
                    .await
                    .map_err(Self::error)?
                else {
                    return Ok(None);
                };
                let updates = sqlx::query_as::<_, UpdateRow>(sql::UPDATES_OF)
                    .bind(id)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                let incident = $crate::store::Incident::try_from(row)?;
                Ok(with_updates(vec![incident], updates)?.pop())
            }

            async fn list_incidents(
                &self,
                filter: $crate::incident::model::StateFilter,
                limit: u32,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Incident>> {
                use $crate::store::incidents::{IncidentRow, incidents, sql};
                let rows = match filter.state() {
                    Some(state) => {
                        sqlx::query_as::<_, IncidentRow>(sql::LIST_IN_STATE)
                            .bind(state.as_ref())
                            .bind(i64::from(limit))
                            .fetch_all(&self.$read)
                            .await
                    }
                    None => {
                        sqlx::query_as::<_, IncidentRow>(sql::LIST_ALL)
                            .bind(i64::from(limit))
                            .fetch_all(&self.$read)
                            .await
                    }
                }
                .map_err(Self::error)?;
                incidents(rows)
            }

            async fn open_incidents(
                &self,
            ) -> $crate::store::StoreResult<Vec<$crate::store::IncidentRecord>> {
                use $crate::incident::model::StateFilter;
                use $crate::store::incidents::{UpdateRow, sql, with_updates};
                // Updates first: an incident opened in between then shows without its first
                // update until the next load, rather than an update without its incident.
                let updates = sqlx::query_as::<_, UpdateRow>(sql::UPDATES_OF_OPEN)
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                let open = self.list_incidents(StateFilter::Open, u32::MAX).await?;
                with_updates(open, updates)
            }

            async fn incidents_with_clocks(
                &self,
                resolved_since: $crate::store::Timestamp,
            ) -> $crate::store::StoreResult<Vec<$crate::store::Incident>> {
                use $crate::store::incidents::{IncidentRow, incidents, sql};
                let rows = sqlx::query_as::<_, IncidentRow>(sql::WITH_CLOCKS)
                    .bind($crate::store::to_millis(resolved_since))
                    .fetch_all(&self.$read)
                    .await
                    .map_err(Self::error)?;
                incidents(rows)
            }

            async fn append_incident_update(
                &self,
                update: &$crate::store::NewIncidentUpdate,
                audit: &$crate::store::AuditEntry,
            ) -> $crate::store::StoreResult<$crate::store::Transition> {
                use $crate::incident::model::{IncidentState, IncidentStatus};
                use $crate::store::incidents::{IncidentRow, sql};
                let resolving = update.status == IncidentStatus::Resolved;
                let state = if resolving {
                    IncidentState::Resolved
                } else {
                    IncidentState::Open
                };
                let at = $crate::store::to_millis(update.at);
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let changed = sqlx::query_as::<_, IncidentRow>(sql::APPLY_UPDATE)
                    .bind(update.incident_id)
                    .bind(update.status.as_ref())
                    .bind(state.as_ref())
                    .bind(resolving.then_some(at))
                    .bind(at)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                finish(tx, update.incident_id, changed, update, audit, true).await
            }

            async fn confirm_incident(
                &self,
                confirmation: &$crate::store::Confirmation,
                audit: &$crate::store::AuditEntry,
            ) -> $crate::store::StoreResult<$crate::store::Transition> {
                use $crate::store::incidents::{IncidentRow, services_column, sql};
                let update = &confirmation.update;
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let changed = sqlx::query_as::<_, IncidentRow>(sql::CONFIRM)
                    .bind(update.incident_id)
                    .bind(update.status.as_ref())
                    .bind(confirmation.title.as_ref().map(|t| t.ko.as_str()))
                    .bind(confirmation.title.as_ref().and_then(|t| t.en.as_deref()))
                    .bind(confirmation.provider.as_deref())
                    .bind(confirmation.services.as_deref().map(services_column))
                    .bind(confirmation.severity.as_ref().map(AsRef::<str>::as_ref))
                    .bind($crate::store::to_millis(update.at))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                finish(tx, update.incident_id, changed, update, audit, true).await
            }

            async fn dismiss_incident(
                &self,
                update: &$crate::store::NewIncidentUpdate,
                audit: &$crate::store::AuditEntry,
            ) -> $crate::store::StoreResult<$crate::store::Transition> {
                use $crate::store::incidents::{IncidentRow, sql};
                let mut tx = self.$write.begin().await.map_err(Self::error)?;
                let changed = sqlx::query_as::<_, IncidentRow>(sql::DISMISS)
                    .bind(update.incident_id)
                    .bind($crate::store::to_millis(update.at))
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(Self::error)?;
                finish(tx, update.incident_id, changed, update, audit, false).await
            }

            async fn count_incident_reports(
                &self,
                id: uuid::Uuid,
            ) -> $crate::store::StoreResult<u64> {
                use $crate::store::incidents::sql;
                let count: i64 = sqlx::query_scalar(sql::COUNT_REPORTS)
                    .bind(id)
                    .fetch_one(&self.$read)
                    .await
                    .map_err(Self::error)?;
                Ok(u64::try_from(count).unwrap_or_default())
            }
        }

        /// After a conditional UPDATE: on success write the update, its fan-out job when
        /// `fan_out`, and the audit entry, and commit; otherwise roll back and say why.
        async fn finish(
            mut tx: sqlx::Transaction<'_, $db>,
            id: uuid::Uuid,
            changed: Option<$crate::store::incidents::IncidentRow>,
            update: &$crate::store::NewIncidentUpdate,
            audit: &$crate::store::AuditEntry,
            fan_out: bool,
        ) -> $crate::store::StoreResult<$crate::store::Transition> {
            use $crate::store::incidents::{IncidentRow, sql};
            use $crate::store::{Incident, Transition};
            if let Some(row) = changed {
                let incident = Incident::try_from(row)?;
                insert_update(&mut tx, update).await?;
                if fan_out {
                    insert_fanout(&mut tx, update, incident.provider.as_deref()).await?;
                }
                insert_audit(&mut tx, audit).await?;
                tx.commit().await.map_err(<$store>::error)?;
                return Ok(Transition::Applied(incident));
            }
            let current = sqlx::query_as::<_, IncidentRow>(sql::FIND_INCIDENT)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(<$store>::error)?;
            drop(tx);
            Ok(match current {
                Some(row) => Transition::Refused(Incident::try_from(row)?),
                None => Transition::NotFound,
            })
        }

        async fn insert_update(
            tx: &mut sqlx::Transaction<'_, $db>,
            update: &$crate::store::NewIncidentUpdate,
        ) -> $crate::store::StoreResult<()> {
            use $crate::store::incidents::sql;
            sqlx::query(sql::INSERT_UPDATE)
                .bind(update.id)
                .bind(update.incident_id)
                .bind(update.status.as_ref())
                .bind(update.message.ko.as_str())
                .bind(update.message.en.as_deref())
                .bind(update.actor.as_str())
                .bind($crate::store::to_millis(update.at))
                .execute(&mut **tx)
                .await
                .map_err(<$store>::error)?;
            Ok(())
        }

        /// The job that delivers `update` to subscribers and reporters (`store/fanout.rs`).
        async fn insert_fanout(
            tx: &mut sqlx::Transaction<'_, $db>,
            update: &$crate::store::NewIncidentUpdate,
            provider: Option<&str>,
        ) -> $crate::store::StoreResult<()> {
            sqlx::query($crate::store::fanout::sql::INSERT_FANOUT)
                .bind(update.id)
                .bind(update.incident_id)
                .bind(provider.unwrap_or_default())
                .bind($crate::store::to_millis(update.at))
                .execute(&mut **tx)
                .await
                .map_err(<$store>::error)?;
            Ok(())
        }

        async fn insert_audit(
            tx: &mut sqlx::Transaction<'_, $db>,
            entry: &$crate::store::AuditEntry,
        ) -> $crate::store::StoreResult<()> {
            $crate::store::audit::insert_audit!(entry)
                .execute(&mut **tx)
                .await
                .map_err(<$store>::error)?;
            Ok(())
        }
    };
}

pub(super) use impl_incident_store;
