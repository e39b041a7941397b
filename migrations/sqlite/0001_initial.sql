-- Reliefline schema, SQLite (STRICT tables).
-- Times are Unix epoch milliseconds (UTC) in INTEGER columns, identical to the PostgreSQL schema, so
-- statements that do not need backend-specific fast paths are written once.
-- Primary keys are UUIDv7 (time-ordered): batch inserts append to the index instead of
-- scattering across it. Random values (receipts, keyed hashes) live in secondary indexes.

CREATE TABLE incidents (
    id            BLOB PRIMARY KEY,
    title_ko      TEXT NOT NULL,
    title_en      TEXT,
    provider      TEXT NOT NULL,
    services      TEXT NOT NULL,            -- JSON array of affected service names
    severity      TEXT NOT NULL CHECK (severity IN ('minor', 'major', 'critical')),
    state         TEXT NOT NULL CHECK (state IN ('open', 'resolved', 'dismissed')),
    status        TEXT NOT NULL,            -- latest lifecycle status (investigating, …)
    origin        TEXT NOT NULL CHECK (origin IN ('declared', 'surge')),
    confirmed     INTEGER NOT NULL,
    started_at    INTEGER NOT NULL,
    resolved_at   INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX incidents_state_started ON incidents (state, started_at);

CREATE TABLE incident_updates (
    id            BLOB PRIMARY KEY,
    incident_id   BLOB NOT NULL REFERENCES incidents (id),
    status        TEXT NOT NULL,
    message_ko    TEXT NOT NULL,
    message_en    TEXT,
    actor         TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, created_at);

CREATE TABLE reports (
    id                BLOB PRIMARY KEY,
    receipt           TEXT NOT NULL,
    incident_id       BLOB REFERENCES incidents (id),
    channel           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    service           TEXT NOT NULL,
    reporter_type     TEXT NOT NULL,
    harm_type         TEXT NOT NULL,
    occurred_at       INTEGER,
    amount_krw        INTEGER,
    title             TEXT,
    description       TEXT NOT NULL,
    -- Personal data: AEAD ciphertexts; contacts are matched by keyed hash (HMAC-SHA256).
    reporter_name_enc BLOB NOT NULL,
    phone_enc         BLOB,
    phone_hmac        BLOB,
    email_enc         BLOB,
    email_hmac        BLOB,
    notify_sms        INTEGER NOT NULL,
    notify_email      INTEGER NOT NULL,
    status            TEXT NOT NULL,
    idempotency_key   TEXT,
    request_hash      BLOB,
    received_at       INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    CONSTRAINT reports_receipt_key UNIQUE (receipt),
    CONSTRAINT reports_idempotency_key_key UNIQUE (idempotency_key)
) STRICT;
CREATE INDEX reports_incident ON reports (incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX reports_status_received ON reports (status, received_at);
CREATE INDEX reports_received ON reports (received_at);
CREATE INDEX reports_phone_hmac ON reports (phone_hmac) WHERE phone_hmac IS NOT NULL;
CREATE INDEX reports_email_hmac ON reports (email_hmac) WHERE email_hmac IS NOT NULL;

CREATE TABLE report_events (
    id            BLOB PRIMARY KEY,
    report_id     BLOB NOT NULL REFERENCES reports (id),
    status        TEXT NOT NULL,
    note          TEXT,
    public        INTEGER NOT NULL,
    actor         TEXT,
    at            INTEGER NOT NULL
) STRICT;
CREATE INDEX report_events_report ON report_events (report_id, at);

CREATE TABLE subscriptions (
    id                      BLOB PRIMARY KEY,
    channel                 TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    contact_enc             BLOB NOT NULL,
    contact_hmac            BLOB NOT NULL,
    incident_id             BLOB REFERENCES incidents (id),
    provider                TEXT,
    lang                    TEXT NOT NULL,
    state                   TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'unsubscribed')),
    confirm_token_hmac      BLOB,
    unsubscribe_token_hmac  BLOB NOT NULL,
    created_at              INTEGER NOT NULL,
    confirmed_at            INTEGER,
    unsubscribed_at         INTEGER,
    CHECK (incident_id IS NOT NULL OR provider IS NOT NULL)
) STRICT;
CREATE INDEX subscriptions_provider ON subscriptions (provider, state) WHERE provider IS NOT NULL;
CREATE INDEX subscriptions_incident ON subscriptions (incident_id, state) WHERE incident_id IS NOT NULL;
CREATE INDEX subscriptions_contact ON subscriptions (contact_hmac);
CREATE UNIQUE INDEX subscriptions_confirm_token ON subscriptions (confirm_token_hmac);
CREATE UNIQUE INDEX subscriptions_unsubscribe_token ON subscriptions (unsubscribe_token_hmac);

CREATE TABLE outbox (
    id               BLOB PRIMARY KEY,       -- the stable message id sent to gateways
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    template         TEXT NOT NULL,
    lang             TEXT NOT NULL,
    recipient_enc    BLOB NOT NULL,
    payload          TEXT NOT NULL,           -- JSON: what the template renders
    source_kind      TEXT NOT NULL,           -- report, report_status, incident_update, subscription
    source_id        BLOB,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_until      INTEGER,
    last_error       TEXT,
    gateway_ref      TEXT,
    delivery_status  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    sent_at          INTEGER
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_source ON outbox (source_id, state);
CREATE INDEX outbox_dead ON outbox (updated_at) WHERE state = 'dead';

CREATE TABLE staff_users (
    id             BLOB PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('consultant', 'commander', 'admin')),
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    disabled_at    INTEGER
) STRICT;

CREATE TABLE audit_log (
    id           BLOB PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT,
    detail       TEXT,                     -- JSON, never personal data
    client_addr  TEXT
) STRICT;
CREATE INDEX audit_log_at ON audit_log (at);
