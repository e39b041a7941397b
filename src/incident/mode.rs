//! Incident mode: `normal` or `incident`, read by every part that behaves differently during an
//! outage (rate-limit profiles, batcher wait, cache lifetimes, the report form, the banner).
//!
//! The automatic mode follows incidents and surge detection (see [`super::Incidents::evaluate`]);
//! a commander may force either mode until setting it back to `auto`. Readers call
//! [`ModeHandle::current`] on each use, or [`ModeHandle::subscribe`] to react to switches.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::Expiry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::telemetry::names;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::AsRefStr, strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Mode {
    Normal,
    Incident,
}

/// What a commander set through `PUT /api/v1/mode`.
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
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ModeOverride {
    /// Follow incidents and surge detection.
    Auto,
    Normal,
    Incident,
}

/// The service's mode, shared by every part that reads it. Clones share the same mode.
#[derive(Debug, Clone)]
pub struct ModeHandle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    effective: watch::Sender<Mode>,
    settings: Mutex<Settings>,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    forced: ModeOverride,
    automatic: Mode,
}

/// The mode and how it came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModeState {
    /// The mode in force.
    pub mode: Mode,
    /// What a commander set.
    #[serde(rename = "override")]
    pub forced: ModeOverride,
    /// What incidents and surge detection call for.
    pub automatic: Mode,
}

impl Default for ModeHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl ModeHandle {
    /// Starts `normal`, following `auto`.
    pub fn new() -> Self {
        let (effective, _) = watch::channel(Mode::Normal);
        metrics::gauge!(names::INCIDENT_MODE).set(0.0);
        Self {
            inner: Arc::new(Inner {
                effective,
                settings: Mutex::new(Settings {
                    forced: ModeOverride::Auto,
                    automatic: Mode::Normal,
                }),
            }),
        }
    }

    /// The mode in force now.
    pub fn current(&self) -> Mode {
        *self.inner.effective.borrow()
    }

    /// A receiver that sees every switch (`changed().await`) and the current mode (`borrow()`).
    pub fn subscribe(&self) -> watch::Receiver<Mode> {
        self.inner.effective.subscribe()
    }

    pub fn state(&self) -> ModeState {
        let settings = *self.settings();
        ModeState {
            mode: self.current(),
            forced: settings.forced,
            automatic: settings.automatic,
        }
    }

    /// Force a mode, or return to `auto`. Returns the resulting state.
    pub fn set_override(&self, forced: ModeOverride) -> ModeState {
        let mut settings = self.settings();
        settings.forced = forced;
        self.publish(*settings)
    }

    /// What the automatic evaluation calls for; takes effect unless a mode is forced.
    pub fn set_automatic(&self, automatic: Mode) -> ModeState {
        let mut settings = self.settings();
        settings.automatic = automatic;
        self.publish(*settings)
    }

    /// Called with the settings lock held, so concurrent changes publish in order.
    fn publish(&self, settings: Settings) -> ModeState {
        let mode = match settings.forced {
            ModeOverride::Auto => settings.automatic,
            ModeOverride::Normal => Mode::Normal,
            ModeOverride::Incident => Mode::Incident,
        };
        let switched = self.inner.effective.send_if_modified(|current| {
            let switched = *current != mode;
            *current = mode;
            switched
        });
        if switched {
            tracing::info!(mode = %mode, forced = %settings.forced, "incident mode switched");
            metrics::gauge!(names::INCIDENT_MODE).set(match mode {
                Mode::Normal => 0.0,
                Mode::Incident => 1.0,
            });
        }
        ModeState {
            mode,
            forced: settings.forced,
            automatic: settings.automatic,
        }
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cache entry lifetime that follows the mode in force when the entry is made: longer in
/// incident mode, when reads are heaviest.
pub struct ModeLifetime {
    mode: ModeHandle,
    normal: Duration,
    incident: Duration,
}

impl ModeLifetime {
    pub fn new(mode: &ModeHandle, normal: Duration, incident: Duration) -> Self {
        Self {
            mode: mode.clone(),
            normal,
            incident,
        }
    }
}

impl<K, V> Expiry<K, V> for ModeLifetime {
    fn expire_after_create(&self, _key: &K, _value: &V, _created_at: Instant) -> Option<Duration> {
        Some(match self.mode.current() {
            Mode::Normal => self.normal,
            Mode::Incident => self.incident,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_forced_mode_wins_until_auto_returns() {
        let handle = ModeHandle::new();
        let mut switches = handle.subscribe();
        assert_eq!(handle.current(), Mode::Normal);

        handle.set_automatic(Mode::Incident);
        switches.changed().await.unwrap();
        assert_eq!(*switches.borrow_and_update(), Mode::Incident);

        let state = handle.set_override(ModeOverride::Normal);
        assert_eq!(state.mode, Mode::Normal);
        assert_eq!(state.automatic, Mode::Incident);
        assert_eq!(handle.current(), Mode::Normal);

        // Automatic changes are remembered but do not show while forced.
        handle.set_automatic(Mode::Normal);
        handle.set_automatic(Mode::Incident);
        assert_eq!(handle.current(), Mode::Normal);

        handle.set_override(ModeOverride::Auto);
        assert_eq!(handle.current(), Mode::Incident);
        assert_eq!(handle.state().forced, ModeOverride::Auto);
    }

    #[test]
    fn no_switch_no_notification() {
        let handle = ModeHandle::new();
        let switches = handle.subscribe();
        handle.set_automatic(Mode::Normal);
        handle.set_override(ModeOverride::Normal);
        assert!(!switches.has_changed().unwrap());
    }
}
