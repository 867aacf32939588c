-- tidings relay schema, version 2: the outbox and the pushed markers no longer link an
-- account to its subscriptions (see relay/src/store/linkage.rs and DESIGN.md's
-- amendments).
--
-- Version 1 kept the clear account, namespace and message hash in each push job next to
-- `account_index` and `device_id`, and keyed the pushed markers by (account_index,
-- device_id, hash): joined with `messages` by hash, a dump told which account a device
-- token belongs to. Now a job keeps only what scheduling needs, plus `sealed`, the message
-- it delivers encrypted by the relay under its at-rest key; a marker is an opaque keyed
-- hash of (account_index, device_id, hash).
--
-- Neither can be computed in SQL (both need the relay key), so the version 1 rows go:
-- pending jobs are dropped (their devices get those messages at their next Retrieve) and
-- old markers are forgotten (a message deleted and stored again before it expires may be
-- pushed once more). The tables are dropped and created anew rather than altered, so the
-- old rows do not linger in the table files as dead tuples. Every node must run this
-- version: stop the old ones before the first new one starts.

DROP TABLE pushed;
CREATE TABLE pushed (
    marker     bytea  PRIMARY KEY CHECK (octet_length(marker) = 32),
    expires_ms bigint NOT NULL
);
CREATE INDEX pushed_expiry ON pushed (expires_ms);

DROP TABLE push_jobs;
CREATE TABLE push_jobs (
    id             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_index  bytea   NOT NULL CHECK (octet_length(account_index) = 32),
    device_id      bytea   NOT NULL CHECK (octet_length(device_id) = 16),
    sealed         bytea   NOT NULL,
    attempts       bigint  NOT NULL DEFAULT 0,
    enqueued_ms    bigint  NOT NULL,
    not_before_ms  bigint  NOT NULL,
    lease_owner    text,
    lease_until_ms bigint,
    due_ms         bigint  GENERATED ALWAYS AS (GREATEST(not_before_ms, lease_until_ms)) STORED
);
CREATE INDEX push_jobs_due ON push_jobs (due_ms, id);
CREATE INDEX push_jobs_device ON push_jobs (account_index, device_id);
