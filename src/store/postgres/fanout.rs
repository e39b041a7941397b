//! Fan-out on PostgreSQL: replicas claim different jobs (`FOR UPDATE SKIP LOCKED`, held for one
//! batch); ids and JSON are built with PostgreSQL's functions.

use super::PgStore;
use crate::store::fanout::impl_fanout_store;

mod fanout_sql {
    use crate::store::fanout::sql::{outbox_columns, reporters, subscriptions_in_range};

    /// A time-ordered id per row: 48-bit milliseconds (`$6`), version 7, then the random bits of
    /// a fresh `gen_random_uuid()` (variant included), so a batch appends to the outbox's primary
    /// key rather than scattering over it.
    macro_rules! new_id {
        () => {
            "encode(overlay(uuid_send(gen_random_uuid()) PLACING \
             (substring(int8send($6) FROM 3) || decode('70', 'hex')) FROM 1 FOR 7), 'hex')::uuid"
        };
    }

    pub const CLAIM: &str = "SELECT update_id, incident_id, provider, subscriptions_done, \
         subscription_cursor, report_cursor FROM fanouts WHERE state <> 'done' \
         ORDER BY created_at, update_id LIMIT 1 FOR UPDATE SKIP LOCKED";

    pub const EXPAND_SUBSCRIPTIONS: &str = concat!(
        outbox_columns!(),
        "SELECT ",
        new_id!(),
        ", s.channel, 'incident_update', s.lang, s.contact_enc, \
         json_build_object('incident_id', $7::text, 'update_id', $8::text, \
         'subscription_id', s.id)::text, 'incident_update', $5, 'pending', 0, $6, $6, $6",
        subscriptions_in_range!()
    );

    pub const EXPAND_REPORTS: &str = concat!(
        outbox_columns!(),
        "SELECT ",
        new_id!(),
        ", c.channel, 'incident_update', c.lang, c.recipient, \
         json_build_object('incident_id', $7::text, 'update_id', $8::text, \
         'subscription_id', NULL, 'report_id', c.report_id)::text, \
         'incident_update', $5, 'pending', 0, $6, $6, $6 FROM ",
        reporters!()
    );
}

impl_fanout_store!(PgStore, read: pool, write: pool, sql: fanout_sql);
