//! What every transport answers: delivered, or failed in a way that is worth retrying or not;
//! and the writer thread behind the file spools.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

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

/// Most writes a spool thread takes in one go.
const SPOOL_GROUP_MAX: usize = 512;

/// Queued writes waiting for a spool thread.
const SPOOL_QUEUE: usize = 1024;

type SpoolJob<W> = (W, oneshot::Sender<Result<(), String>>);

/// A spool written by a thread of its own. Senders queue their writes and wait; the thread
/// takes whatever is queued and writes it as one group, so a burst of messages costs one hand-
/// over between threads and one round of file calls per group instead of one per message.
/// A failed group is a transient failure of each of its messages.
pub struct SpoolThread<W> {
    what: &'static str,
    queue: mpsc::Sender<SpoolJob<W>>,
}

impl<W: Send + 'static> SpoolThread<W> {
    /// Start the thread; `write` writes one group, whole or failing. The thread ends when the
    /// last handle is dropped.
    pub fn start(
        what: &'static str,
        mut write: impl FnMut(&[W]) -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Self> {
        let (queue, mut jobs) = mpsc::channel::<SpoolJob<W>>(SPOOL_QUEUE);
        std::thread::Builder::new()
            .name(format!("{what}-spool"))
            .spawn(move || {
                let mut group = Vec::with_capacity(SPOOL_GROUP_MAX);
                while jobs.blocking_recv_many(&mut group, SPOOL_GROUP_MAX) > 0 {
                    let (writes, replies): (Vec<W>, Vec<_>) = group.drain(..).unzip();
                    // A panic in a write fails its group, not the spool.
                    let result =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write(&writes)))
                            .unwrap_or_else(|panic| {
                                Err(std::io::Error::other(crate::telemetry::panic_text(&*panic)))
                            })
                            .map_err(|e| e.to_string());
                    for reply in replies {
                        drop(reply.send(result.clone()));
                    }
                }
            })?;
        Ok(Self { what, queue })
    }

    /// Queue `write` and wait until its group is written.
    pub async fn write(&self, write: W) -> Result<Delivered, SendError> {
        let failed = |why: &str| SendError::transient(format!("{} spool: {why}", self.what));
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((write, reply))
            .await
            .map_err(|_| failed("its writer has stopped"))?;
        answer
            .await
            .map_err(|_| failed("its writer has stopped"))?
            .map_err(|e| failed(&e))?;
        Ok(Delivered::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queued_writes_are_written_in_groups_and_a_failed_group_is_transient() {
        let groups = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = std::sync::Arc::clone(&groups);
        let spool = SpoolThread::start("test", move |group: &[u32]| {
            seen.lock().unwrap().push(group.to_vec());
            if group.contains(&1013) {
                return Err(std::io::Error::other("disk full"));
            }
            assert!(!group.contains(&1014), "a bug in a write");
            Ok(())
        })
        .unwrap();
        let writes: Vec<_> = (0..200).map(|n| spool.write(n)).collect();
        let answers = futures::future::join_all(writes).await;
        assert!(answers.iter().all(Result::is_ok));
        let mut written: Vec<u32> = groups.lock().unwrap().concat();
        written.sort_unstable();
        assert_eq!(written, (0..200).collect::<Vec<_>>(), "each once");
        for (n, why) in [
            (1013, "test spool: disk full"),
            (1014, "test spool: a bug in a write"),
        ] {
            assert_eq!(
                spool.write(n).await,
                Err(SendError::transient(why)),
                "the group of {n}"
            );
        }
        // The spool lives on after a failed group.
        assert_eq!(spool.write(1015).await, Ok(Delivered::default()));
    }
}
