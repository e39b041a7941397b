//! The JSON the incident routes answer with. Public views never carry staff fields: those live
//! in [`StaffFields`], attached only for a request showing the admin token.

use serde::Serialize;
use uuid::Uuid;

use super::model::{IncidentState, IncidentStatus, Localized, NoticeClock, Origin, Severity};
use crate::store::{Incident, IncidentRecord, IncidentUpdate, Timestamp};

#[derive(Debug, Serialize)]
pub struct IncidentView<'a> {
    pub id: Uuid,
    pub title: &'a Localized,
    /// `null` while unknown (an unconfirmed surge).
    pub provider: Option<&'a str>,
    pub services: &'a [String],
    pub severity: Severity,
    pub state: IncidentState,
    pub status: IncidentStatus,
    pub origin: Origin,
    pub confirmed: bool,
    pub started_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latest_update: Option<UpdateView<'a>>,
    /// Oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updates: Option<Vec<UpdateView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reports_linked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staff: Option<StaffFields>,
}

#[derive(Debug, Serialize)]
pub struct UpdateView<'a> {
    /// Names the update in its delivery progress (`…/updates/{id}/delivery`).
    pub id: Uuid,
    pub status: IncidentStatus,
    pub message: &'a Localized,
    pub at: Timestamp,
}

/// Seen only by staff.
#[derive(Debug, Serialize)]
pub struct StaffFields {
    /// When the outage reaches two hours and users are owed an individual notice; absent for a
    /// dismissed surge.
    pub individual_notice_due_at: Option<Timestamp>,
    /// Thirty days after restoration: the deadline to notify the damages criteria.
    pub damages_notice_due_at: Option<Timestamp>,
}

impl<'a> IncidentView<'a> {
    /// The bare incident, as in listings.
    pub fn summary(incident: &'a Incident) -> Self {
        Self {
            id: incident.id,
            title: &incident.title,
            provider: incident.provider.as_deref(),
            services: &incident.services,
            severity: incident.severity,
            state: incident.state,
            status: incident.status,
            origin: incident.origin,
            confirmed: incident.confirmed,
            started_at: incident.started_at,
            resolved_at: incident.resolved_at,
            updated_at: incident.updated_at,
            latest_update: None,
            updates: None,
            reports_linked: None,
            staff: None,
        }
    }

    /// As on the status page: with its latest update.
    pub fn with_latest(record: &'a IncidentRecord) -> Self {
        Self {
            latest_update: record.latest_update().map(UpdateView::of),
            ..Self::summary(&record.incident)
        }
    }

    /// Everything the public may see, plus staff fields when `staff`.
    pub fn detail(record: &'a IncidentRecord, reports_linked: u64, staff: bool) -> Self {
        let incident = &record.incident;
        Self {
            latest_update: record.latest_update().map(UpdateView::of),
            updates: Some(record.updates.iter().map(UpdateView::of).collect()),
            reports_linked: Some(reports_linked),
            staff: staff.then(|| StaffFields::of(incident)),
            ..Self::summary(incident)
        }
    }
}

impl<'a> UpdateView<'a> {
    pub fn of(update: &'a IncidentUpdate) -> Self {
        Self {
            id: update.id,
            status: update.status,
            message: &update.message,
            at: update.at,
        }
    }
}

impl StaffFields {
    pub fn of(incident: &Incident) -> Self {
        let clock = NoticeClock::of(incident.state, incident.started_at, incident.resolved_at);
        Self {
            individual_notice_due_at: clock.map(|c| c.individual_notice_due_at),
            damages_notice_due_at: clock.and_then(|c| c.damages_notice_due_at),
        }
    }
}
