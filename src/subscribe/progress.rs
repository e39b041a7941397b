//! Delivery progress of incident updates for staff screens, counted at most once per
//! `fanout.progress_cache_ms` per update (single-flight): a count walks every message of the
//! update, about a tenth of a second of the store's time for a million, and a dashboard or a
//! few staff refreshing it must not take that from the dispatcher many times a second.

use std::time::Duration;

use uuid::Uuid;

use crate::http::ApiError;
use crate::store::{DynStore, FanoutProgress};

/// Updates whose counts are kept at once; old entries give way.
const ENTRIES: u64 = 1_000;

pub struct DeliveryCounts {
    /// `None` when counts are not kept (`progress_cache_ms = 0`).
    cache: Option<moka::future::Cache<(Uuid, Uuid), Option<FanoutProgress>>>,
}

impl DeliveryCounts {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            cache: (!lifetime.is_zero()).then(|| {
                moka::future::Cache::builder()
                    .max_capacity(ENTRIES)
                    .time_to_live(lifetime)
                    .build()
            }),
        }
    }

    /// The progress of update `update_id` of incident `incident_id`; `None` for an unknown one.
    pub async fn get(
        &self,
        store: &DynStore,
        incident_id: Uuid,
        update_id: Uuid,
    ) -> Result<Option<FanoutProgress>, ApiError> {
        let count = store.fanout_progress(incident_id, update_id);
        match &self.cache {
            None => Ok(count.await?),
            Some(cache) => cache
                .try_get_with((incident_id, update_id), count)
                .await
                .map_err(|e| crate::incident::reads::load_failed(&e)),
        }
    }
}
