//! Domain types that parse once: a value of one of these types is known valid, so code past
//! the boundary never re-checks it.

mod email;
mod phone;
mod receipt;

#[cfg(test)]
mod properties;

pub use email::{EmailAddress, InvalidEmail};
pub use phone::{InvalidPhone, PhoneNumber};
pub use receipt::Receipt;

use serde::{Deserialize, Serialize};

/// Who is reporting; drives which compensation rules apply later.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::AsRefStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReporterType {
    Individual,
    PaidUser,
    Merchant,
    Business,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::AsRefStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HarmType {
    ServiceUnavailable,
    PaidServiceLoss,
    BusinessLoss,
    DataLoss,
    PaymentFailure,
    Other,
}

/// Where a report is in its life, as the reporter sees it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::AsRefStr,
    strum::EnumString,
    strum::EnumIter,
    strum::Display,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ReportStatus {
    /// Committed; nobody has looked at it yet.
    Received,
    /// A consultant is working on it.
    InReview,
    /// Waiting for the reporter to answer a question.
    AwaitingReporter,
    /// Handed to the dispute mediation committee.
    Referred,
    /// Consultation finished with a result.
    Resolved,
    /// Closed without further action (duplicate, withdrawn, …).
    Closed,
}

impl ReportStatus {
    /// Why a report in this status cannot be moved to `next`, or `None` when it can. Every
    /// report starts `received` and never returns to it; `closed` is final; a change must
    /// change something. A resolved case may be reopened (a dispute after the result).
    pub fn refuses(self, next: Self) -> Option<&'static str> {
        if next == Self::Received {
            Some("no report returns to received")
        } else if self == Self::Closed {
            Some("the report is closed and takes no more changes")
        } else if self == next {
            Some("the report already has this status")
        } else {
            None
        }
    }
}

/// How a report reached us.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::AsRefStr,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Channel {
    /// The public JSON API.
    Api,
    /// The public HTML form.
    Web,
    /// A partner's bulk import.
    Partner,
}
