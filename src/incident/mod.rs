//! Incidents: commanders declare them and post updates, surge detection opens unconfirmed ones,
//! the public reads them (cache-fronted), and incident mode follows them.
//!
//! [`Incidents`] is the service behind the routes in [`api`]; [`ModeHandle`] and
//! [`SurgeDetector`] are the handles other parts share (`AppState::mode`, `AppState::surge`).

pub mod api;
pub mod auth;
pub mod clock;
pub mod mode;
pub mod model;
pub mod reads;
pub mod surge;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use auth::{AdminToken, Commander};
pub use clock::{Clock, ManualClock};
pub use mode::{Mode, ModeHandle, ModeLifetime, ModeOverride, ModeState};
pub use reads::{CacheCounts, CacheName, IncidentDetail, OpenIncidents};
pub use surge::SurgeDetector;

use self::model::{
    DAMAGES_NOTICE_WITHIN, IncidentState, IncidentStatus, Localized, NoticeClock, Origin, Severity,
    StateFilter,
};
use self::reads::ReadCaches;
use crate::config::Config;
use crate::http::ApiError;
use crate::store::{
    AuditEntry, Confirmation, DynStore, Incident, NewIncident, NewIncidentUpdate, StoreResult,
    Timestamp, Transition,
};
use crate::telemetry::{OwnedGauge, names};
use crate::wakeup::Wakeup;

/// Listings show at most this many incidents, most recent first.
pub const LIST_LIMIT: u32 = 200;

/// A damages-notice deadline stays on the gauge this long after it passed, so an alert on an
/// overdue notice keeps firing rather than vanishing with the deadline.
const DAMAGES_GAUGE_AFTER_DUE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Actor of changes surge detection makes.
const SURGE_ACTOR: &str = "system:surge";

/// A validated declaration.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub title: Localized,
    pub provider: String,
    pub services: Vec<String>,
    pub started_at: Timestamp,
    pub severity: Severity,
    pub message: Localized,
}

/// What a commander may complete when confirming a surge.
#[derive(Debug, Clone, Default)]
pub struct SurgeDetails {
    pub title: Option<Localized>,
    pub provider: Option<String>,
    pub services: Option<Vec<String>>,
    pub severity: Option<Severity>,
    pub message: Option<Localized>,
}

/// The outcome of one evaluation of incident mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub mode: ModeState,
    pub rate_per_minute: f64,
    pub surging: bool,
    pub open_incidents: usize,
    /// The unconfirmed surge incident this evaluation opened.
    pub opened_surge: Option<Uuid>,
}

/// State of the automatic mode between evaluations.
#[derive(Debug)]
struct Automatic {
    mode: Mode,
    /// Since when no incident is open and the rate is below the threshold.
    calm_since: Option<Timestamp>,
    /// The current surge is accounted for (an incident was open, or one was opened for it);
    /// cleared once the rate falls below the threshold.
    surge_accounted: bool,
}

pub struct Incidents {
    store: DynStore,
    clock: Clock,
    mode: ModeHandle,
    surge: SurgeDetector,
    admin: AdminToken,
    reads: ReadCaches,
    hold_down: Duration,
    evaluate_interval: Duration,
    automatic: tokio::sync::Mutex<Automatic>,
    deadlines: OwnedGauge,
    /// Every change may have written an update to fan out.
    fanout_due: Wakeup,
}

impl Incidents {
    pub fn new(store: DynStore, clock: Clock, config: &Config, fanout_due: Wakeup) -> Self {
        let c = &config.incident;
        let mode = ModeHandle::new();
        Self {
            reads: ReadCaches::new(&mode, c.read_cache_ttl(), c.read_cache_ttl_incident()),
            surge: SurgeDetector::new(
                clock.clone(),
                c.surge_window(),
                c.surge_threshold_per_minute,
            ),
            admin: AdminToken::from_config(&config.admin),
            hold_down: c.hold_down(),
            evaluate_interval: c.evaluate_interval(),
            automatic: tokio::sync::Mutex::new(Automatic {
                mode: Mode::Normal,
                calm_since: None,
                surge_accounted: false,
            }),
            deadlines: OwnedGauge::new(
                names::INCIDENT_NOTICE_DEADLINE,
                "Seconds until a statutory notice is due (negative: overdue), by incident and \
                 notice (individual, damages)",
            ),
            store,
            clock,
            mode,
            fanout_due,
        }
    }

    pub fn mode(&self) -> &ModeHandle {
        &self.mode
    }

    pub fn surge(&self) -> &SurgeDetector {
        &self.surge
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn admin(&self) -> &AdminToken {
        &self.admin
    }

    // ---- commands ----------------------------------------------------------------------

    /// Open an incident; the service enters incident mode.
    pub async fn declare(
        &self,
        declaration: Declaration,
        by: &Commander,
    ) -> Result<IncidentDetail, ApiError> {
        let now = self.clock.now();
        let id = Uuid::now_v7();
        let incident = NewIncident {
            id,
            title: declaration.title,
            provider: Some(declaration.provider),
            services: declaration.services,
            severity: declaration.severity,
            origin: Origin::Declared,
            confirmed: true,
            started_at: declaration.started_at,
            first_update: NewIncidentUpdate {
                id: Uuid::now_v7(),
                incident_id: id,
                status: IncidentStatus::Investigating,
                message: declaration.message,
                actor: by.actor.clone(),
                at: now,
            },
        };
        let audit = self.audit(
            by,
            "incident.declare",
            id,
            json!({
                "provider": incident.provider,
                "services": incident.services,
                "severity": incident.severity,
                "started_at": incident.started_at,
            }),
        );
        self.store.create_incident(&incident, &audit).await?;
        self.changed().await;
        self.fresh_detail(id).await
    }

    /// Post a lifecycle update; `resolved` closes the incident.
    pub async fn post_update(
        &self,
        id: Uuid,
        status: IncidentStatus,
        message: Localized,
        by: &Commander,
    ) -> Result<IncidentDetail, ApiError> {
        let update = self.new_update(id, status, message, &by.actor);
        let audit = self.audit(by, "incident.update", id, json!({"status": status}));
        let transition = self.store.append_incident_update(&update, &audit).await?;
        self.settle(transition, "updates").await?;
        self.fresh_detail(id).await
    }

    /// Confirm an unconfirmed surge as an incident, completing its details.
    pub async fn confirm(
        &self,
        id: Uuid,
        details: SurgeDetails,
        by: &Commander,
    ) -> Result<IncidentDetail, ApiError> {
        let message = details.message.unwrap_or_else(|| {
            Localized::new(
                "접수 급증을 장애로 확인했습니다. 원인을 조사하고 있습니다.",
                "The surge in reports has been confirmed as an incident and is being \
                 investigated.",
            )
        });
        let confirmation = Confirmation {
            update: self.new_update(id, IncidentStatus::Investigating, message, &by.actor),
            title: details.title,
            provider: details.provider,
            services: details.services,
            severity: details.severity,
        };
        let audit = self.audit(
            by,
            "incident.confirm",
            id,
            json!({
                "provider": confirmation.provider,
                "services": confirmation.services,
                "severity": confirmation.severity,
                "retitled": confirmation.title.is_some(),
            }),
        );
        let transition = self.store.confirm_incident(&confirmation, &audit).await?;
        self.settle(transition, "confirm").await?;
        self.fresh_detail(id).await
    }

    /// Close an unconfirmed surge as not an incident.
    pub async fn dismiss(
        &self,
        id: Uuid,
        message: Option<Localized>,
        by: &Commander,
    ) -> Result<IncidentDetail, ApiError> {
        let message = message.unwrap_or_else(|| {
            Localized::new(
                "확인 결과 장애가 아닌 것으로 판단되어 종료합니다.",
                "Closed: the surge in reports was not an incident.",
            )
        });
        let update = self.new_update(id, IncidentStatus::Dismissed, message, &by.actor);
        let audit = self.audit(by, "incident.dismiss", id, json!({}));
        let transition = self.store.dismiss_incident(&update, &audit).await?;
        self.settle(transition, "dismiss").await?;
        self.fresh_detail(id).await
    }

    /// Force a mode or return to `auto`. Recorded before it takes effect.
    pub async fn set_mode(
        &self,
        forced: ModeOverride,
        by: &Commander,
    ) -> Result<ModeState, ApiError> {
        let before = self.mode.state();
        let entry = AuditEntry {
            id: Uuid::now_v7(),
            at: self.clock.now(),
            actor: by.actor.clone(),
            action: "mode.set".into(),
            target: Some("mode".into()),
            detail: Some(json!({"override": forced, "previous_override": before.forced})),
            client_addr: by.client_addr.clone(),
        };
        self.store.append_audit(&entry).await?;
        let state = self.mode.set_override(forced);
        // Cache lifetimes follow the mode from the next load on.
        self.reads.invalidate();
        Ok(state)
    }

    fn new_update(
        &self,
        incident_id: Uuid,
        status: IncidentStatus,
        message: Localized,
        actor: &str,
    ) -> NewIncidentUpdate {
        NewIncidentUpdate {
            id: Uuid::now_v7(),
            incident_id,
            status,
            message,
            actor: actor.to_owned(),
            at: self.clock.now(),
        }
    }

    fn audit(
        &self,
        by: &Commander,
        action: &str,
        incident: Uuid,
        detail: serde_json::Value,
    ) -> AuditEntry {
        AuditEntry {
            id: Uuid::now_v7(),
            at: self.clock.now(),
            actor: by.actor.clone(),
            action: action.into(),
            target: Some(format!("incident/{incident}")),
            detail: Some(detail),
            client_addr: by.client_addr.clone(),
        }
    }

    /// Turn a refused transition into the answer that says why.
    async fn settle(&self, transition: Transition, command: &str) -> Result<Incident, ApiError> {
        match transition {
            Transition::Applied(incident) => {
                self.changed().await;
                Ok(incident)
            }
            Transition::NotFound => Err(ApiError::NotFound),
            Transition::Refused(current) => Err(refusal(&current, command)),
        }
    }

    /// After a change: drop cached reads and re-evaluate the mode at once.
    async fn changed(&self) {
        self.reads.invalidate();
        self.fanout_due.wake();
        if let Err(e) = self.evaluate().await {
            tracing::warn!(error = %e, "incident mode not re-evaluated after a change");
        }
    }

    /// The incident straight from the store, for a command's answer.
    async fn fresh_detail(&self, id: Uuid) -> Result<IncidentDetail, ApiError> {
        load_detail(&self.store, id)
            .await?
            .map(Arc::unwrap_or_clone)
            .ok_or(ApiError::NotFound)
    }

    // ---- public reads (cached) -------------------------------------------------------------

    /// Open incidents with their updates, most recently started first.
    pub async fn open_incidents(&self) -> Result<Arc<OpenIncidents>, ApiError> {
        let store = &self.store;
        self.reads
            .open(async move {
                let records = store.open_incidents().await?;
                let views: Vec<_> = records
                    .iter()
                    .map(views::IncidentView::with_latest)
                    .collect();
                let json = serde_json::to_vec(&views).map_err(anyhow::Error::from)?;
                Ok(Arc::new(OpenIncidents::new(records, &json)))
            })
            .await
    }

    pub async fn list(&self, filter: StateFilter) -> Result<Arc<Vec<Incident>>, ApiError> {
        let store = &self.store;
        self.reads
            .list(filter, async move {
                Ok(Arc::new(store.list_incidents(filter, LIST_LIMIT).await?))
            })
            .await
    }

    /// The incident with its updates and linked-report count; `NotFound` for an unknown id.
    pub async fn detail(&self, id: Uuid) -> Result<Arc<IncidentDetail>, ApiError> {
        let store = &self.store;
        self.reads
            .detail(id, load_detail(store, id))
            .await?
            .ok_or(ApiError::NotFound)
    }

    /// Hits and misses of one public read cache in this process; each miss is one store load.
    pub fn cache_counts(&self, cache: CacheName) -> CacheCounts {
        self.reads.counts(cache)
    }

    // ---- incident mode ---------------------------------------------------------------------

    /// One step of automatic incident mode, at the clock's current time:
    /// - a surge (rate above the threshold over the window) with no incident open opens an
    ///   unconfirmed surge incident, once per surge;
    /// - the automatic mode is `incident` while any incident is open or the rate is above the
    ///   threshold, and returns to `normal` once neither has been true for `hold_down_secs`;
    /// - the open-incident, surge-rate and notice-deadline gauges are refreshed.
    ///
    /// The background task calls it every `incident.evaluate_interval_ms`; tests call it
    /// directly after moving a [`ManualClock`].
    pub async fn evaluate(&self) -> StoreResult<Evaluation> {
        let mut automatic = self.automatic.lock().await;
        let now = self.clock.now();
        let rate = self.surge.rate_per_minute(now);
        let surging = self.surge.is_surge(rate);
        let mut incidents = self
            .store
            .incidents_with_clocks(now - (DAMAGES_NOTICE_WITHIN + DAMAGES_GAUGE_AFTER_DUE))
            .await?;
        let mut open = incidents
            .iter()
            .filter(|i| i.state == IncidentState::Open)
            .count();

        let mut opened_surge = None;
        if surging && !automatic.surge_accounted {
            if open == 0 {
                let incident = self.open_surge(now, rate).await?;
                opened_surge = Some(incident.id);
                incidents.push(incident);
                open += 1;
                self.reads.invalidate();
            }
            automatic.surge_accounted = true;
        } else if !surging {
            automatic.surge_accounted = false;
        }

        if open > 0 || surging {
            automatic.calm_since = None;
            automatic.mode = Mode::Incident;
        } else {
            let calm_since = *automatic.calm_since.get_or_insert(now);
            let calm_for = (now - calm_since).to_std().unwrap_or_default();
            if calm_for >= self.hold_down {
                automatic.mode = Mode::Normal;
            }
        }
        let mode = self.mode.set_automatic(automatic.mode);

        #[allow(clippy::cast_precision_loss)] // a handful of incidents
        metrics::gauge!(names::INCIDENTS_OPEN).set(open as f64);
        metrics::gauge!(names::SURGE_RATE).set(rate);
        self.publish_deadlines(&incidents, now);

        Ok(Evaluation {
            mode,
            rate_per_minute: rate,
            surging,
            open_incidents: open,
            opened_surge,
        })
    }

    async fn open_surge(&self, now: Timestamp, rate: f64) -> StoreResult<Incident> {
        let id = Uuid::now_v7();
        let threshold = self.surge.threshold_per_minute();
        let window = self.surge.window();
        let started_at = now - window;
        let incident = NewIncident {
            id,
            title: Localized::new(
                "신고 급증 감지 (확인 전)",
                "Surge in reports detected (unconfirmed)",
            ),
            provider: None,
            services: Vec::new(),
            severity: Severity::Major,
            origin: Origin::Surge,
            confirmed: false,
            started_at,
            first_update: NewIncidentUpdate {
                id: Uuid::now_v7(),
                incident_id: id,
                status: IncidentStatus::Unconfirmed,
                message: Localized::new(
                    format!(
                        "피해 신고가 분당 {rate:.0}건 접수되어 기준({threshold}건)을 넘었습니다. \
                         담당자가 장애 여부를 확인하고 있습니다."
                    ),
                    format!(
                        "Harm reports are arriving at {rate:.0} per minute, above the \
                         threshold of {threshold}. A commander is checking whether this is \
                         an incident."
                    ),
                ),
                actor: SURGE_ACTOR.into(),
                at: now,
            },
        };
        let audit = AuditEntry {
            id: Uuid::now_v7(),
            at: now,
            actor: SURGE_ACTOR.into(),
            action: "incident.surge_open".into(),
            target: Some(format!("incident/{id}")),
            detail: Some(json!({
                "rate_per_minute": rate,
                "threshold_per_minute": threshold,
                "window_secs": window.as_secs(),
            })),
            client_addr: None,
        };
        self.store.create_incident(&incident, &audit).await?;
        tracing::warn!(
            incident = %id,
            rate_per_minute = rate,
            threshold_per_minute = threshold,
            "surge detected: unconfirmed incident opened"
        );
        Ok(Incident {
            id,
            title: incident.title,
            provider: None,
            services: incident.services,
            severity: incident.severity,
            state: IncidentState::Open,
            status: IncidentStatus::Unconfirmed,
            origin: Origin::Surge,
            confirmed: false,
            started_at,
            resolved_at: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// One series per running notice clock: individual while open, damages once resolved.
    fn publish_deadlines(&self, incidents: &[Incident], now: Timestamp) {
        let remaining = |due: Timestamp| {
            #[allow(clippy::cast_precision_loss)] // whole seconds, far below 2^52
            let secs = (due - now).num_seconds() as f64;
            secs
        };
        let series = incidents.iter().filter_map(|incident| {
            let clock = NoticeClock::of(incident.state, incident.started_at, incident.resolved_at)?;
            let (notice, due) = match incident.state {
                IncidentState::Open => ("individual", clock.individual_notice_due_at),
                IncidentState::Resolved => ("damages", clock.damages_notice_due_at?),
                IncidentState::Dismissed => return None,
            };
            let labels = [
                ("incident", incident.id.to_string()),
                ("notice", notice.to_owned()),
            ];
            Some((labels, remaining(due)))
        });
        self.deadlines.publish(series);
    }

    /// Evaluate every `incident.evaluate_interval_ms` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.evaluate_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            // Logged once per outage, not once per tick.
            match (self.evaluate().await, failing) {
                (Ok(_), true) => {
                    tracing::info!("incident mode evaluation recovered");
                    failing = false;
                }
                (Err(e), false) => {
                    tracing::warn!(error = %e, "incident mode evaluation failed; retrying");
                    failing = true;
                }
                (Ok(_), false) | (Err(_), true) => {}
            }
        }
    }
}

async fn load_detail(store: &DynStore, id: Uuid) -> StoreResult<Option<Arc<IncidentDetail>>> {
    let Some(record) = store.find_incident(id).await? else {
        return Ok(None);
    };
    let reports_linked = store.count_incident_reports(id).await?;
    Ok(Some(Arc::new(IncidentDetail {
        record,
        reports_linked,
    })))
}

/// Why `command` does not apply to `incident` as it is.
fn refusal(incident: &Incident, command: &str) -> ApiError {
    let (code, message) = match (incident.state, incident.confirmed, command) {
        (IncidentState::Resolved | IncidentState::Dismissed, _, _) => (
            "incident_closed",
            format!(
                "incident {} is {} and takes no more changes",
                incident.id, incident.state
            ),
        ),
        (IncidentState::Open, false, _) => (
            "incident_unconfirmed",
            format!(
                "incident {} is an unconfirmed surge: confirm or dismiss it first",
                incident.id
            ),
        ),
        (IncidentState::Open, true, _) => (
            "incident_confirmed",
            format!(
                "incident {} is already confirmed; only an unconfirmed surge can be {}ed",
                incident.id,
                if command == "dismiss" {
                    "dismiss"
                } else {
                    "confirm"
                }
            ),
        ),
    };
    ApiError::Unprocessable { code, message }
}
