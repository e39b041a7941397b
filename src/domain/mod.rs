//! Domain types that parse once: a value of one of these types is known valid, so code past
//! the boundary never re-checks it.

mod email;
mod phone;
mod receipt;

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
