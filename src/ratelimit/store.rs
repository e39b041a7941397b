//! A governor state store with a ceiling on the number of keys.
//!
//! Governor's own `DashMapStateStore` grows with every distinct key it sees, and a flood of
//! distinct keys (spoofed sources, an IPv6 block, random receipts) would grow it without bound
//! between two prunes. This store counts its keys; once it holds `max_keys`, keys it does not
//! already know share one overflow bucket until a prune makes room. Known keys keep their own
//! buckets throughout, so clients that were already talking to us are not affected.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};

use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{NotKeyed, StateStore};

/// Where a key's rate-limiting state lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot<K> {
    Own(K),
    /// Shared by every new key while the store is full.
    Overflow,
}

pub(super) struct BoundedStore<K: Hash + Eq + Clone> {
    map: DashMapStateStore<Slot<K>>,
    max_keys: usize,
    /// The map's length, kept here so the hot path need not lock every shard to count.
    /// Exact after each prune; between prunes concurrent first-time keys can push it a few
    /// entries past `max_keys`, never more than the number of threads inserting at once.
    keys: AtomicUsize,
}

impl<K: Hash + Eq + Clone> BoundedStore<K> {
    pub(super) fn new(max_keys: usize) -> Self {
        Self {
            map: DashMapStateStore::default(),
            max_keys,
            keys: AtomicUsize::new(0),
        }
    }

    fn is_full(&self) -> bool {
        self.keys.load(Ordering::Relaxed) >= self.max_keys
    }
}

impl<K: Hash + Eq + Clone> StateStore for BoundedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let own = Slot::Own(key.clone());
        if let Some(state) = self.map.get(&own) {
            return state.measure_and_replace(&NotKeyed::NonKey, f);
        }
        let slot = if self.is_full() { Slot::Overflow } else { own };
        let state = self
            .map
            .entry(slot)
            .or_insert_with(|| {
                self.keys.fetch_add(1, Ordering::Relaxed);
                Default::default()
            })
            .downgrade();
        state.measure_and_replace(&NotKeyed::NonKey, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for BoundedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
        self.keys.store(self.map.len(), Ordering::Relaxed);
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.keys.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
