//! What every transport answers: delivered, or failed in a way that is worth retrying or not.

use std::time::Duration;

/// The gateway took the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The gateway's own id for the message, when it gives one.
    pub gateway_ref: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later (a timeout, a 5xx, 429, a dropped connection), not before `retry_after`
    /// when the gateway named a time.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (an invalid address, a 4xx other than 429).
    #[error("{reason}")]
    Permanent { reason: String },
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }
}

/// A spool write: `write` runs in one trip to the blocking pool (each trip is a hand-over
/// between threads, so the steps of one message go together); a failure is worth retrying.
pub async fn spool_with(
    what: &'static str,
    write: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> Result<Delivered, SendError> {
    tokio::task::spawn_blocking(write)
        .await
        .map_err(std::io::Error::other)
        .flatten()
        .map_err(|e| SendError::transient(format!("{what} spool: {e}")))?;
    Ok(Delivered::default())
}
