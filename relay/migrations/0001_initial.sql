-- tidings relay schema, version 1.
--
-- Applied by the relay at start (and by `tidings-relay migrate`) inside one transaction
-- holding an advisory lock; see relay/src/store/postgres/migrations.rs. Never edit a
-- released migration: add the next numbered file instead.
--
-- Byte strings are opaque to the database: accounts and hashes are 32 bytes, device ids
-- 16, `account_index` is a keyed hash and `sealed` is encrypted by the relay. Times are
-- Unix milliseconds from the relay's clock. u32 namespaces and u64 seqs are bigint.

-- The last seq handed out per mailbox. Its row lock serialises the Stores of one mailbox
-- across nodes, so seqs commit in order; it outlives the mailbox's messages so that a
-- seq is never reused.
CREATE TABLE mailbox_counters (
    account   bytea  NOT NULL CHECK (octet_length(account) = 32),
    namespace bigint NOT NULL,
    last_seq  bigint NOT NULL,
    PRIMARY KEY (account, namespace)
);

CREATE TABLE messages (
    account    bytea  NOT NULL CHECK (octet_length(account) = 32),
    namespace  bigint NOT NULL,
    seq        bigint NOT NULL,
    hash       bytea  NOT NULL CHECK (octet_length(hash) = 32),
    data       bytea  NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (account, namespace, seq),
    UNIQUE (account, namespace, hash)
);
CREATE INDEX messages_expiry ON messages (expires_ms);

CREATE TABLE subscriptions (
    account_index bytea    NOT NULL CHECK (octet_length(account_index) = 32),
    device_id     bytea    NOT NULL CHECK (octet_length(device_id) = 16),
    namespaces    bigint[] NOT NULL,
    want_data     boolean  NOT NULL,
    sealed        bytea    NOT NULL,
    expires_ms    bigint   NOT NULL,
    PRIMARY KEY (account_index, device_id)
);
CREATE INDEX subscriptions_expiry ON subscriptions (expires_ms);

-- (device, hash) pairs that got a push job, kept until the message would have expired,
-- so a device is pushed a message at most once, whichever node stores it.
CREATE TABLE pushed (
    account_index bytea  NOT NULL,
    device_id     bytea  NOT NULL,
    hash          bytea  NOT NULL,
    expires_ms    bigint NOT NULL,
    PRIMARY KEY (account_index, device_id, hash)
);
CREATE INDEX pushed_expiry ON pushed (expires_ms);

-- The push outbox. A job is due once `due_ms <= now`: not before `not_before_ms` and not
-- while leased (`lease_until_ms` in the future). Nodes claim with FOR UPDATE SKIP LOCKED.
CREATE TABLE push_jobs (
    id             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account        bytea   NOT NULL CHECK (octet_length(account) = 32),
    account_index  bytea   NOT NULL CHECK (octet_length(account_index) = 32),
    device_id      bytea   NOT NULL CHECK (octet_length(device_id) = 16),
    namespace      bigint  NOT NULL,
    hash           bytea   NOT NULL CHECK (octet_length(hash) = 32),
    seq            bigint  NOT NULL,
    created_ms     bigint  NOT NULL,
    expires_ms     bigint  NOT NULL,
    attempts       bigint  NOT NULL DEFAULT 0,
    enqueued_ms    bigint  NOT NULL,
    not_before_ms  bigint  NOT NULL,
    lease_owner    text,
    lease_until_ms bigint,
    due_ms         bigint  GENERATED ALWAYS AS (GREATEST(not_before_ms, lease_until_ms)) STORED
);
CREATE INDEX push_jobs_due ON push_jobs (due_ms, id);
CREATE INDEX push_jobs_device ON push_jobs (account_index, device_id);

-- One row the readiness probe writes to prove the database takes writes.
CREATE TABLE store_probe (
    id     integer PRIMARY KEY CHECK (id = 1),
    writes bigint  NOT NULL
);
