//! Incidents on PostgreSQL: one pool for reads and changes.

use super::PgStore;
use crate::store::incidents::impl_incident_store;

impl_incident_store!(PgStore, sqlx::Postgres, read: pool, write: pool);
