//! Where incident logic reads the time: the system clock in service, a clock the test moves by
//! hand so surge detection, hold-down and notice deadlines can be driven without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;

use crate::store::{Timestamp, from_millis, to_millis};

#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(ManualClock),
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        match self {
            Self::System => Utc::now(),
            Self::Manual(manual) => manual.now(),
        }
    }
}

/// A clock that only moves when told to, millisecond precision. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(to_millis(start))))
    }

    pub fn now(&self) -> Timestamp {
        from_millis(self.0.load(Ordering::SeqCst))
    }

    pub fn set(&self, at: Timestamp) {
        self.0.store(to_millis(at), Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Self {
        Self::Manual(manual)
    }
}
