//! Subscriptions on PostgreSQL: replicas write concurrently, so a request locks its contact for
//! the rest of its transaction before counting the confirmations already sent.

use super::PgStore;
use crate::store::subscriptions::impl_subscription_store;

impl_subscription_store!(
    PgStore,
    sqlx::Postgres,
    read: pool,
    write: pool,
    lock: Some("SELECT pg_advisory_xact_lock($1)")
);
