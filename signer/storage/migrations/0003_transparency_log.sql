-- The issued-certificate transparency log (issue 5): an RFC 9162 Merkle tree over every finished
-- signing record and every refused request, sequenced inside the statement that finishes the
-- record (sequence-then-integrate, as Trillian and Tessera do).
--
-- log_state is one row. `size` is the number of sequenced entries: a writer takes the row lock
-- (UPDATE ... SET size = size + n) in the same statement that inserts its entries, so writers
-- from every process are serialized, and indexes are consecutive with no gap or duplicate.
CREATE TABLE log_state (
    id      integer PRIMARY KEY CHECK (id = 1),
    size    bigint NOT NULL CHECK (size >= 0)
);
INSERT INTO log_state (id, size) VALUES (1, 0);

-- How many entries the integrator has folded into log_nodes. A separate row from log_state, so
-- the integrator (one at a time, under an advisory lock) never holds the writers' row lock.
CREATE TABLE log_tree (
    id          integer PRIMARY KEY CHECK (id = 1),
    integrated  bigint NOT NULL CHECK (integrated >= 0)
);
INSERT INTO log_tree (id, integrated) VALUES (1, 0);

-- One row per leaf. `entry` is the canonical entry (ca.logentry); `leaf_hash` is
-- SHA-256(0x00 || entry) (RFC 9162 §2.1.1), computed by PostgreSQL when the entry is appended.
-- Issuance entries name their signing record; refusals have no record row (record_id NULL).
CREATE TABLE log_entries (
    idx         bigint PRIMARY KEY CHECK (idx >= 0),
    kind        text NOT NULL CHECK (kind IN ('issuance', 'refusal')),
    record_id   uuid REFERENCES signing_records (id),
    entry       bytea NOT NULL,
    leaf_hash   bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX log_entries_record ON log_entries (record_id) WHERE record_id IS NOT NULL;

-- Hashes of perfect subtrees (level 0 = leaves), stored once complete (ca.merkle.NodeId).
CREATE TABLE log_nodes (
    level   smallint NOT NULL CHECK (level >= 0 AND level < 63),
    index   bigint NOT NULL CHECK (index >= 0),
    hash    bytea NOT NULL,
    PRIMARY KEY (level, index)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a C2SP signed note), newest = largest size.
CREATE TABLE log_checkpoints (
    size        bigint PRIMARY KEY CHECK (size >= 0),
    root        bytea NOT NULL,
    note        text NOT NULL,
    created_at  timestamptz NOT NULL
);
