//! Notification delivery: the outbox dispatcher, message rendering (Korean and English), the
//! e-mail and SMS transports, the staff routes for dead letters and the SMS delivery-report
//! callback.
//!
//! A message is written to the outbox in the same transaction as the event causing it (see
//! [`receipt_confirmation`] for reports); the [`Dispatcher`] delivers it at least once, with the
//! outbox row id as a stable message id receivers can deduplicate by.

pub mod api;
pub mod config;
pub mod dispatcher;
pub mod email;
pub mod euckr;
pub mod handover;
pub mod render;
pub mod sms;
pub mod transport;

use chrono::SecondsFormat;
use uuid::Uuid;

pub use config::NotifyConfig;
pub use dispatcher::{Dispatcher, Round};
pub use handover::Handover;
pub use render::{Lang, Rendered, Renderer};
pub use transport::{Delivered, SendError};

use crate::crypto::Keys;
use crate::domain::{Receipt, ReportStatus};
use crate::store::{MessageChannel, NewMessage, NewReport};

/// The template of the notice a report's status change sends.
pub const REPORT_STATUS_TEMPLATE: &str = "report_status";

/// What the [`REPORT_STATUS_TEMPLATE`] renders: the receipt, the new status and the note.
pub fn report_status_payload(
    receipt: &Receipt,
    status: ReportStatus,
    note: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({ "receipt": receipt.as_str(), "status": status, "note": note })
}

/// The receipt confirmations a report asks for: one per channel the reporter chose and gave a
/// contact for, in `lang`. Written with the report, in its transaction.
pub fn receipt_confirmation(
    keys: &Keys,
    report: &NewReport,
    phone_e164: Option<&str>,
    email: Option<&str>,
    lang: Lang,
) -> Vec<NewMessage> {
    let payload = serde_json::json!({
        "receipt": report.receipt.as_str(),
        "provider": report.provider,
        "service": report.service,
        "received_at": report.received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    let wanted = [
        (MessageChannel::Sms, report.notify_sms, phone_e164),
        (MessageChannel::Email, report.notify_email, email),
    ];
    wanted
        .into_iter()
        .filter_map(|(channel, asked, contact)| {
            let contact = contact.filter(|_| asked)?;
            Some(NewMessage {
                id: Uuid::now_v7(),
                channel,
                template: "receipt_confirmation".to_owned(),
                lang: lang.as_str().to_owned(),
                recipient: keys.seal(contact),
                payload: payload.clone(),
                source_kind: "report".to_owned(),
                source_id: Some(report.id),
                not_before: report.received_at,
                lease: None,
            })
        })
        .collect()
}
