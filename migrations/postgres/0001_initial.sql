-- Reliefline schema, PostgreSQL.
-- Times are Unix epoch milliseconds (UTC) in BIGINT columns, identical to the SQLite schema, so
-- statements that do not need backend-specific fast paths are written once.
-- Primary keys are UUIDv7 (time-ordered): batch inserts append to the index instead of
-- scattering across it. Random values (receipts, keyed hashes) live in secondary indexes.

CREATE TABLE incidents (
    id            UUID PRIMARY KEY,
    title_ko      TEXT NOT NULL,
    title_en      TEXT,
    provider      TEXT NOT NULL,
    services      TEXT NOT NULL,            -- JSON array of affected service names
    severity      TEXT NOT NULL CHECK (severity IN ('minor', 'major', 'critical')),
    state         TEXT NOT NULL CHECK (state IN ('open', 'resolved', 'dismissed')),
    status        TEXT NOT NULL,            -- latest lifecycle status (investigating, …)
    origin        TEXT NOT NULL CHECK (origin IN ('declared', 'surge')),
    confirmed     BOOLEAN NOT NULL,
    started_at    BIGINT NOT NULL,
    resolved_at   BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX incidents_state_started ON incidents (state, started_at DESC);

CREATE TABLE incident_updates (
    id            UUID PRIMARY KEY,
    incident_id   UUID NOT NULL REFERENCES incidents (id),
    status        TEXT NOT NULL,
    message_ko    TEXT NOT NULL,
    message_en    TEXT,
    actor         TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, created_at);

CREATE TABLE reports (
    id                UUID PRIMARY KEY,
    receipt           TEXT NOT NULL,
    incident_id       UUID REFERENCES incidents (id),
    channel           TEXT NOT NULL,
    provider          TEXT NOT NULL,
    service           TEXT NOT NULL,
    reporter_type     TEXT NOT NULL,
    harm_type         TEXT NOT NULL,
    occurred_at       BIGINT,
    amount_krw        BIGINT,
    title             TEXT,
    description       TEXT NOT NULL,
    -- Personal data: AEAD ciphertexts; contacts are matched by keyed hash (HMAC-SHA256).
    reporter_name_enc BYTEA NOT NULL,
    phone_enc         BYTEA,
    phone_hmac        BYTEA,
    email_enc         BYTEA,
    email_hmac        BYTEA,
    notify_sms        BOOLEAN NOT NULL,
    notify_email      BOOLEAN NOT NULL,
    status            TEXT NOT NULL,
    idempotency_key   TEXT,
    request_hash      BYTEA,
    received_at       BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    CONSTRAINT reports_receipt_key UNIQUE (receipt),
    CONSTRAINT reports_idempotency_key_key UNIQUE (idempotency_key)
);
CREATE INDEX reports_incident ON reports (incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX reports_status_received ON reports (status, received_at);
CREATE INDEX reports_received ON reports (received_at);
CREATE INDEX reports_phone_hmac ON reports (phone_hmac) WHERE phone_hmac IS NOT NULL;
CREATE INDEX reports_email_hmac ON reports (email_hmac) WHERE email_hmac IS NOT NULL;

CREATE TABLE report_events (
    id            UUID PRIMARY KEY,
    report_id     UUID NOT NULL REFERENCES reports (id),
    status        TEXT NOT NULL,
    note          TEXT,
    public        BOOLEAN NOT NULL,
    actor         TEXT,
    at            BIGINT NOT NULL
);
CREATE INDEX report_events_report ON report_events (report_id, at);

CREATE TABLE subscriptions (
    id                      UUID PRIMARY KEY,
    channel                 TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    contact_enc             BYTEA NOT NULL,
    contact_hmac            BYTEA NOT NULL,
    incident_id             UUID REFERENCES incidents (id),
    provider                TEXT,
    lang                    TEXT NOT NULL,
    state                   TEXT NOT NULL CHECK (state IN ('pending', 'confirmed', 'unsubscribed')),
    confirm_token_hmac      BYTEA,
    unsubscribe_token_hmac  BYTEA NOT NULL,
    created_at              BIGINT NOT NULL,
    confirmed_at            BIGINT,
    unsubscribed_at         BIGINT,
    CHECK (incident_id IS NOT NULL OR provider IS NOT NULL)
);
CREATE INDEX subscriptions_provider ON subscriptions (provider, state) WHERE provider IS NOT NULL;
CREATE INDEX subscriptions_incident ON subscriptions (incident_id, state) WHERE incident_id IS NOT NULL;
CREATE INDEX subscriptions_contact ON subscriptions (contact_hmac);
CREATE UNIQUE INDEX subscriptions_confirm_token ON subscriptions (confirm_token_hmac);
CREATE UNIQUE INDEX subscriptions_unsubscribe_token ON subscriptions (unsubscribe_token_hmac);

CREATE TABLE outbox (
    id               UUID PRIMARY KEY,       -- the stable message id sent to gateways
    channel          TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    template         TEXT NOT NULL,
    lang             TEXT NOT NULL,
    recipient_enc    BYTEA NOT NULL,
    payload          TEXT NOT NULL,           -- JSON: what the template renders
    source_kind      TEXT NOT NULL,           -- report, report_status, incident_update, subscription
    source_id        UUID,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_until      BIGINT,
    last_error       TEXT,
    gateway_ref      TEXT,
    delivery_status  TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_source ON outbox (source_id, state);
CREATE INDEX outbox_dead ON outbox (updated_at) WHERE state = 'dead';

CREATE TABLE staff_users (
    id             UUID PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('consultant', 'commander', 'admin')),
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    disabled_at    BIGINT
);

CREATE TABLE audit_log (
    id           UUID PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT,
    detail       TEXT,                     -- JSON, never personal data
    client_addr  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
