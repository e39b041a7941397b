-- Each channel's dispatcher lane claims its own due messages, so the due index leads with the
-- channel: a backlog on one channel never makes the other's claims scan past it.
CREATE INDEX outbox_due_channel ON outbox (channel, next_attempt_at) WHERE state IN ('pending', 'sending');
DROP INDEX outbox_due;
