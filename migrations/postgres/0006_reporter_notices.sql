-- A reporter who follows the stop link of an incident notice gets no more notices about that
-- incident on that channel; messages about the report itself still go out.
ALTER TABLE reports ADD COLUMN incident_notices BOOLEAN NOT NULL DEFAULT TRUE;

-- The reports of an incident in id order: the fan-out walks them in keyset ranges.
DROP INDEX reports_incident;
CREATE INDEX reports_incident ON reports (incident_id, id) WHERE incident_id IS NOT NULL;

-- The contacts a fan-out has already taken a report of, per channel: a contact's first report
-- decides (a later report of the same contact is skipped), without looking reports up by
-- contact. Rows go when the fan-out finishes.
CREATE TABLE fanout_contacts (
    update_id     UUID NOT NULL REFERENCES fanouts (update_id),
    channel       TEXT NOT NULL,
    contact_hmac  BYTEA NOT NULL,
    PRIMARY KEY (update_id, channel, contact_hmac)
);
