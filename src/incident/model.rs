//! What an incident is: its vocabulary (severity, state, lifecycle status, origin), bilingual
//! text, and the statutory notice clock that follows from its times.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::Timestamp;

macro_rules! incident_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize,
            strum::AsRefStr, strum::EnumString, strum::Display, strum::VariantNames,
        )]
        #[serde(rename_all = "snake_case")]
        #[strum(serialize_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }
    };
}

incident_enum! {
    Severity { Minor, Major, Critical }
}

incident_enum! {
    /// Where an incident is in its life. Only `open` incidents take updates.
    IncidentState { Open, Resolved, Dismissed }
}

incident_enum! {
    /// The latest lifecycle status, as the public reads it.
    IncidentStatus {
        /// A surge opened automatically; a commander has not confirmed it yet.
        Unconfirmed,
        Investigating,
        Identified,
        Monitoring,
        Resolved,
        /// An unconfirmed surge a commander judged not to be an incident.
        Dismissed,
    }
}

incident_enum! {
    /// Who opened the incident: a commander, or surge detection.
    Origin { Declared, Surge }
}

impl IncidentStatus {
    /// The statuses a commander posts as updates.
    pub const LIFECYCLE: [Self; 4] = [
        Self::Investigating,
        Self::Identified,
        Self::Monitoring,
        Self::Resolved,
    ];

    pub fn is_lifecycle(self) -> bool {
        Self::LIFECYCLE.contains(&self)
    }
}

/// Which incidents a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumString, strum::AsRefStr)]
#[strum(serialize_all = "snake_case")]
pub enum StateFilter {
    Open,
    Resolved,
    Dismissed,
    All,
}

impl StateFilter {
    pub fn state(self) -> Option<IncidentState> {
        match self {
            Self::Open => Some(IncidentState::Open),
            Self::Resolved => Some(IncidentState::Resolved),
            Self::Dismissed => Some(IncidentState::Dismissed),
            Self::All => None,
        }
    }
}

/// Public text in Korean, optionally also in English.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Localized {
    pub ko: String,
    pub en: Option<String>,
}

impl Localized {
    pub fn new(ko: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            ko: ko.into(),
            en: Some(en.into()),
        }
    }
}

/// An outage of this length obliges the provider to notify users individually (fact, cause,
/// response, a contact for consultation).
pub const INDIVIDUAL_NOTICE_AFTER: Duration = Duration::from_secs(2 * 3600);

/// After restoration, the damages criteria must be notified within this time.
pub const DAMAGES_NOTICE_WITHIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The statutory deadlines of one incident. Staff-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NoticeClock {
    /// When the outage reaches two hours.
    pub individual_notice_due_at: Timestamp,
    /// Thirty days after restoration; `None` while the outage lasts.
    pub damages_notice_due_at: Option<Timestamp>,
}

impl NoticeClock {
    /// The clock of an incident; a dismissed surge was no outage and has none.
    pub fn of(
        state: IncidentState,
        started_at: Timestamp,
        resolved_at: Option<Timestamp>,
    ) -> Option<Self> {
        if state == IncidentState::Dismissed {
            return None;
        }
        Some(Self {
            individual_notice_due_at: started_at + INDIVIDUAL_NOTICE_AFTER,
            damages_notice_due_at: resolved_at
                .filter(|_| state == IncidentState::Resolved)
                .map(|at| at + DAMAGES_NOTICE_WITHIN),
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};

    use super::*;

    #[test]
    fn the_notice_clock_follows_the_statute() {
        let started = Utc.with_ymd_and_hms(2022, 10, 15, 6, 30, 0).unwrap();
        let open = NoticeClock::of(IncidentState::Open, started, None).unwrap();
        assert_eq!(
            open.individual_notice_due_at,
            Utc.with_ymd_and_hms(2022, 10, 15, 8, 30, 0).unwrap()
        );
        assert_eq!(open.damages_notice_due_at, None);

        let restored = Utc.with_ymd_and_hms(2022, 10, 20, 13, 33, 0).unwrap();
        let resolved = NoticeClock::of(IncidentState::Resolved, started, Some(restored)).unwrap();
        assert_eq!(
            resolved.damages_notice_due_at,
            Some(Utc.with_ymd_and_hms(2022, 11, 19, 13, 33, 0).unwrap())
        );
        assert_eq!(
            NoticeClock::of(IncidentState::Dismissed, started, None),
            None
        );
    }

    #[test]
    fn only_lifecycle_statuses_are_posted() {
        assert!(IncidentStatus::Resolved.is_lifecycle());
        assert!(!IncidentStatus::Unconfirmed.is_lifecycle());
        assert!(!IncidentStatus::Dismissed.is_lifecycle());
        assert_eq!(
            "monitoring".parse::<IncidentStatus>().unwrap(),
            IncidentStatus::Monitoring
        );
    }
}
