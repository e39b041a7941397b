-- How many of a fan-out's messages have been sent, kept by the statement that records the
-- outcomes, so the delivery progress counts only the few messages sending, failed or dead
-- instead of walking every one still pending. One row per update, channel and dispatcher
-- (`lease_owner`), each written only by that dispatcher's lane for that channel: replicas
-- and lanes never wait for one another, nor for the fan-out worker, which holds the update's
-- `fanouts` row while it expands a batch. The count is the sum of the rows.
CREATE TABLE fanout_sent (
    update_id  UUID NOT NULL,
    channel    TEXT NOT NULL,
    owner      TEXT NOT NULL,
    sent       BIGINT NOT NULL,
    PRIMARY KEY (update_id, channel, owner)
);

-- Fan-outs already under way start from what they have sent so far.
INSERT INTO fanout_sent (update_id, channel, owner, sent)
SELECT source_id, channel, '', count(*) FROM outbox
WHERE source_kind = 'incident_update' AND state = 'sent'
  AND source_id IN (SELECT update_id FROM fanouts)
GROUP BY source_id, channel;
