//! Incidents on SQLite: reads on the reader pool, changes through the single writer.

use super::SqliteStore;
use crate::store::incidents::impl_incident_store;

impl_incident_store!(SqliteStore, sqlx::Sqlite, read: reader, write: writer);
