//! Subscriptions on SQLite: the single writer serialises requests, so no contact lock is needed.

use super::SqliteStore;
use crate::store::subscriptions::impl_subscription_store;

impl_subscription_store!(SqliteStore, sqlx::Sqlite, read: reader, write: writer, lock: None);
