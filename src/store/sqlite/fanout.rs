//! Fan-out on SQLite: one writer, so a job needs no lock of its own; ids and JSON are built with
//! SQLite's functions.

use super::SqliteStore;
use crate::store::fanout::impl_fanout_store;

mod fanout_sql {
    use crate::store::fanout::sql::{outbox_columns, reporters, subscriptions_in_range};

    /// A time-ordered id per row (48-bit milliseconds `$6`, version 7, variant, random bits), so
    /// a batch appends to the outbox's primary key rather than scattering over it.
    macro_rules! new_id {
        () => {
            "unhex(printf('%012x', $6) || '7' || substr(hex(randomblob(2)), 2, 3) \
             || substr('89ab', 1 + (random() & 3), 1) || substr(hex(randomblob(8)), 2, 15))"
        };
    }

    /// The canonical text of a UUID stored as a 16-byte blob.
    macro_rules! uuid_text {
        ($column:literal) => {
            concat!(
                "lower(substr(hex(",
                $column,
                "), 1, 8) || '-' || substr(hex(",
                $column,
                "), 9, 4) || '-' || substr(hex(",
                $column,
                "), 13, 4) || '-' || substr(hex(",
                $column,
                "), 17, 4) || '-' || substr(hex(",
                $column,
                "), 21, 12))"
            )
        };
    }

    pub const CLAIM: &str = "SELECT update_id, incident_id, provider, subscriptions_done, \
         subscription_cursor, report_cursor FROM fanouts WHERE state <> 'done' \
         ORDER BY created_at, update_id LIMIT 1";

    pub const EXPAND_SUBSCRIPTIONS: &str = concat!(
        outbox_columns!(),
        "SELECT ",
        new_id!(),
        ", s.channel, 'incident_update', s.lang, s.contact_enc, \
         json_object('incident_id', $7, 'update_id', $8, 'subscription_id', ",
        uuid_text!("s.id"),
        "), 'incident_update', $5, 'pending', 0, $6, $6, $6",
        subscriptions_in_range!()
    );

    pub const EXPAND_REPORTS: &str = concat!(
        outbox_columns!(),
        "SELECT ",
        new_id!(),
        ", c.channel, 'incident_update', c.lang, c.recipient, \
         json_object('incident_id', $7, 'update_id', $8, 'subscription_id', NULL, \
         'report_id', ",
        uuid_text!("c.report_id"),
        "), 'incident_update', $5, 'pending', 0, $6, $6, $6 FROM ",
        reporters!()
    );
}

impl_fanout_store!(SqliteStore, read: reader, write: writer, sql: fanout_sql);
