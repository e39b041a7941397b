-- Subscriptions with double opt-in, and the durable fan-out of incident updates into the outbox.

-- Wrong confirmation codes tried against a pending subscription; at the configured limit the
-- code stops working and the subscription must be requested again.
ALTER TABLE subscriptions ADD COLUMN confirm_attempts INTEGER NOT NULL DEFAULT 0;

-- One subscription per contact, channel and scope: a repeated request replaces a pending or
-- unsubscribed row instead of adding another, and a confirmed one is left alone.
CREATE UNIQUE INDEX subscriptions_identity ON subscriptions
    (contact_hmac, channel, COALESCE(incident_id, '00000000-0000-0000-0000-000000000000'::uuid),
     COALESCE(provider, ''));

-- Every confirmation message sent, by keyed hash of the contact, so the per-contact daily
-- limit holds across restarts and replicas. Rows older than a day are pruned.
CREATE TABLE confirmation_sends (
    contact_hmac     BYTEA NOT NULL,
    sent_at          BIGINT NOT NULL,
    subscription_id  UUID NOT NULL
);
CREATE INDEX confirmation_sends_contact ON confirmation_sends (contact_hmac, sent_at);
CREATE INDEX confirmation_sends_sent ON confirmation_sends (sent_at);

-- One job per incident update to deliver, written in the transaction that posts the update.
-- A worker expands it into outbox rows in batches; each batch commits with the keyset cursor it
-- reached, so an interrupted fan-out resumes where it stopped and never writes a row twice.
CREATE TABLE fanouts (
    update_id            UUID PRIMARY KEY REFERENCES incident_updates (id),
    incident_id          UUID NOT NULL REFERENCES incidents (id),
    provider             TEXT NOT NULL,          -- '' when the incident names none
    state                TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    subscriptions_done   BOOLEAN NOT NULL DEFAULT FALSE,
    subscription_cursor  UUID,                   -- last subscriptions.id expanded
    report_cursor        UUID,                   -- last reports.id expanded
    enqueued             BIGINT NOT NULL DEFAULT 0,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    finished_at          BIGINT
);
CREATE INDEX fanouts_open ON fanouts (created_at) WHERE state <> 'done';
