//! The outbox on PostgreSQL: replicas share the work, claiming with `FOR UPDATE SKIP LOCKED`.

use super::PgStore;
use crate::store::outbox::{impl_outbox_store, sql};

impl_outbox_store!(PgStore, read: pool, write: pool, claim: sql::CLAIM_POSTGRES);
