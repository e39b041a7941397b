//! Incidents and reports as the pages show them: text already in the page's language, times
//! in Korean time.

use chrono::{DateTime, FixedOffset, Offset as _, Utc};

use super::i18n::Lang;
use crate::store::IncidentRecord;

/// Korea Standard Time, in which the pages show and read times.
pub fn kst() -> FixedOffset {
    FixedOffset::east_opt(9 * 3600).unwrap_or_else(|| Utc.fix())
}

/// `2022-10-15 15:30 KST`.
pub fn show_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&kst())
        .format("%Y-%m-%d %H:%M KST")
        .to_string()
}

/// The value of a `datetime-local` input, in Korean time.
pub fn input_time(at: DateTime<Utc>) -> String {
    at.with_timezone(&kst())
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

/// One incident on the home and status pages and in the report form's header.
pub struct IncidentCard {
    pub id: String,
    pub title: String,
    pub provider: String,
    pub services: Vec<String>,
    pub severity: &'static str,
    pub status: &'static str,
    pub started: String,
    pub resolved: Option<String>,
    /// The latest update's message.
    pub latest: String,
    /// Newest first.
    pub timeline: Vec<TimelineItem>,
}

pub struct TimelineItem {
    pub at: String,
    pub status: &'static str,
    pub message: String,
}

impl IncidentCard {
    pub fn of(record: &IncidentRecord, lang: Lang) -> Self {
        let t = lang.text();
        let incident = &record.incident;
        Self {
            id: incident.id.to_string(),
            title: lang.pick(&incident.title).to_owned(),
            provider: incident.provider.clone().unwrap_or_default(),
            services: incident.services.clone(),
            severity: t.severity(incident.severity),
            status: t.incident_status(incident.status),
            started: show_time(incident.started_at),
            resolved: incident.resolved_at.map(show_time),
            latest: record
                .latest_update()
                .map(|u| lang.pick(&u.message).to_owned())
                .unwrap_or_default(),
            timeline: record
                .updates
                .iter()
                .rev()
                .map(|u| TimelineItem {
                    at: show_time(u.at),
                    status: t.incident_status(u.status),
                    message: lang.pick(&u.message).to_owned(),
                })
                .collect(),
        }
    }
}
