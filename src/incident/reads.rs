//! Public reads, cache-fronted: however many people refresh the status page, each cache entry
//! costs one store load per lifetime. Loads are single-flight (moka's `try_get_with`): callers
//! arriving while a load runs wait for it instead of querying too.
//!
//! Entry lifetimes follow the mode in force when the entry is loaded: longer in incident mode,
//! when reads are heaviest. A command bumps the generation that is part of every key, so the
//! next read loads afresh, even if a load begun before the command is still finishing.

use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use uuid::Uuid;

use super::mode::{Mode, ModeHandle, ModeLifetime};
use super::model::StateFilter;
use crate::http::ApiError;
use crate::http::error::STORE_RETRY_AFTER;
use crate::store::{Incident, IncidentRecord, StoreError, StoreResult};
pub use crate::telemetry::CacheCounts;
use crate::telemetry::CacheTally;

/// Per-incident entries kept at most; unknown ids are cached too, so this bounds the memory a
/// flood of made-up ids can take.
const DETAIL_CAPACITY: u64 = 10_000;

/// The public read caches, named as in the `cache` label of `reliefline_cache_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheName {
    /// Open incidents with their updates: the status page and `GET /api/v1/status`.
    Status,
    /// `GET /api/v1/incidents?state=…`.
    IncidentList,
    /// `GET /api/v1/incidents/{id}`.
    Incident,
}

impl CacheName {
    pub fn label(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::IncidentList => "incident_list",
            Self::Incident => "incident",
        }
    }
}

/// The open incidents, with the body `GET /api/v1/status` serves in each mode, rendered once
/// per load.
#[derive(Debug)]
pub struct OpenIncidents {
    pub records: Vec<IncidentRecord>,
    status_bodies: [Bytes; 2],
}

impl OpenIncidents {
    /// `incidents` is the JSON array of the incidents as the status answer shows them.
    pub fn new(records: Vec<IncidentRecord>, incidents: &[u8]) -> Self {
        let body = |mode: Mode| {
            let mut body = Vec::with_capacity(incidents.len() + 40);
            body.extend_from_slice(br#"{"mode":""#);
            body.extend_from_slice(mode.as_ref().as_bytes());
            body.extend_from_slice(br#"","incidents":"#);
            body.extend_from_slice(incidents);
            body.push(b'}');
            Bytes::from(body)
        };
        Self {
            records,
            status_bodies: [body(Mode::Normal), body(Mode::Incident)],
        }
    }

    /// The body of `GET /api/v1/status` in `mode`, shared, not copied.
    pub fn status_body(&self, mode: Mode) -> Bytes {
        match mode {
            Mode::Normal => self.status_bodies[0].clone(),
            Mode::Incident => self.status_bodies[1].clone(),
        }
    }
}

/// One incident as `GET /api/v1/incidents/{id}` shows it.
#[derive(Debug, Clone)]
pub struct IncidentDetail {
    pub record: IncidentRecord,
    pub reports_linked: u64,
}

pub(super) struct ReadCaches {
    generation: AtomicU64,
    open: Cache<u64, Arc<OpenIncidents>>,
    lists: Cache<(u64, StateFilter), Arc<Vec<Incident>>>,
    details: Cache<(u64, Uuid), Option<Arc<IncidentDetail>>>,
    tallies: [CacheTally; 3],
}

impl ReadCaches {
    pub(super) fn new(mode: &ModeHandle, normal: Duration, incident: Duration) -> Self {
        let lifetime = || ModeLifetime::new(mode, normal, incident);
        Self {
            generation: AtomicU64::new(0),
            // One live key each (the current generation, per filter); older generations expire.
            open: Cache::builder()
                .max_capacity(16)
                .expire_after(lifetime())
                .build(),
            lists: Cache::builder()
                .max_capacity(64)
                .expire_after(lifetime())
                .build(),
            details: Cache::builder()
                .max_capacity(DETAIL_CAPACITY)
                .expire_after(lifetime())
                .build(),
            tallies: [
                CacheName::Status,
                CacheName::IncidentList,
                CacheName::Incident,
            ]
            .map(|name| CacheTally::new(name.label())),
        }
    }

    /// Everything cached so far is stale.
    pub(super) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.open.invalidate_all();
        self.lists.invalidate_all();
        self.details.invalidate_all();
    }

    pub(super) fn counts(&self, cache: CacheName) -> CacheCounts {
        self.tallies[cache as usize].counts()
    }

    pub(super) async fn open<F>(&self, load: F) -> Result<Arc<OpenIncidents>, ApiError>
    where
        F: Future<Output = StoreResult<Arc<OpenIncidents>>>,
    {
        let key = self.generation();
        self.get(CacheName::Status, &self.open, key, load).await
    }

    pub(super) async fn list<F>(
        &self,
        filter: StateFilter,
        load: F,
    ) -> Result<Arc<Vec<Incident>>, ApiError>
    where
        F: Future<Output = StoreResult<Arc<Vec<Incident>>>>,
    {
        let key = (self.generation(), filter);
        self.get(CacheName::IncidentList, &self.lists, key, load)
            .await
    }

    pub(super) async fn detail<F>(
        &self,
        id: Uuid,
        load: F,
    ) -> Result<Option<Arc<IncidentDetail>>, ApiError>
    where
        F: Future<Output = StoreResult<Option<Arc<IncidentDetail>>>>,
    {
        let key = (self.generation(), id);
        self.get(CacheName::Incident, &self.details, key, load)
            .await
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    async fn get<K, V, F>(
        &self,
        name: CacheName,
        cache: &Cache<K, V>,
        key: K,
        load: F,
    ) -> Result<V, ApiError>
    where
        K: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: Future<Output = StoreResult<V>>,
    {
        let loaded = AtomicBool::new(false);
        let result = cache
            .try_get_with(key, async {
                loaded.store(true, Ordering::Relaxed);
                load.await
            })
            .await;
        self.tallies[name as usize].record(loaded.load(Ordering::Relaxed));
        result.map_err(|e| load_failed(&e))
    }
}

/// A failed load is shared by every caller that waited for it; each gets its own answer.
pub(crate) fn load_failed(error: &StoreError) -> ApiError {
    if error.is_unavailable() {
        tracing::warn!(error = %error, "store unavailable for a public read");
        ApiError::StoreUnavailable {
            retry_after: STORE_RETRY_AFTER,
        }
    } else {
        ApiError::Internal(anyhow::anyhow!("loading a public read: {error:#}"))
    }
}
