//! The outbox on SQLite: one dispatcher, claims through the single writer.

use super::SqliteStore;
use crate::store::outbox::{impl_outbox_store, sql};

impl_outbox_store!(SqliteStore, read: reader, write: writer, claim: sql::CLAIM_SQLITE);
