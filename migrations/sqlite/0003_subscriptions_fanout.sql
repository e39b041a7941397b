-- Subscriptions with double opt-in, and the durable fan-out of incident updates into the outbox.

-- Wrong confirmation codes tried against a pending subscription; at the configured limit the
-- code stops working and the subscription must be requested again.
ALTER TABLE subscriptions ADD COLUMN confirm_attempts INTEGER NOT NULL DEFAULT 0;

-- One subscription per contact, channel and scope: a repeated request replaces a pending or
-- unsubscribed row instead of adding another, and a confirmed one is left alone.
CREATE UNIQUE INDEX subscriptions_identity ON subscriptions
    (contact_hmac, channel, COALESCE(incident_id, X'00000000000000000000000000000000'),
     COALESCE(provider, ''));

-- Every confirmation message sent, by keyed hash of the contact, so the per-contact daily
-- limit holds across restarts and replicas. Rows older than a day are pruned.
CREATE TABLE confirmation_sends (
    contact_hmac     BLOB NOT NULL,
    sent_at          INTEGER NOT NULL,
    subscription_id  BLOB NOT NULL
) STRICT;
CREATE INDEX confirmation_sends_contact ON confirmation_sends (contact_hmac, sent_at);
CREATE INDEX confirmation_sends_sent ON confirmation_sends (sent_at);

-- One job per incident update to deliver, written in the transaction that posts the update.
-- A worker expands it into outbox rows in batches; each batch commits with the keyset cursor it
-- reached, so an interrupted fan-out resumes where it stopped and never writes a row twice.
CREATE TABLE fanouts (
    update_id            BLOB PRIMARY KEY REFERENCES incident_updates (id),
    incident_id          BLOB NOT NULL REFERENCES incidents (id),
    provider             TEXT NOT NULL,          -- '' when the incident names none
    state                TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done')),
    subscriptions_done   INTEGER NOT NULL DEFAULT 0,
    subscription_cursor  BLOB,                   -- last subscriptions.id expanded
    report_cursor        BLOB,                   -- last reports.id expanded
    enqueued             INTEGER NOT NULL DEFAULT 0,
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,
    finished_at          INTEGER
) STRICT;
CREATE INDEX fanouts_open ON fanouts (created_at) WHERE state <> 'done';
