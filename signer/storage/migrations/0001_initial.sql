-- Signing records: one row per issued certificate (one per signing request).
-- status 'issued' is committed before the key signs anything; 'completed' before any signature
-- is released; 'failed' when the request ended without releasing a signature. A row left at
-- 'issued' is visible evidence of a certificate that released nothing (crash in between).
CREATE TABLE signing_records (
    id              uuid PRIMARY KEY,
    serial          text NOT NULL UNIQUE,
    status          text NOT NULL CHECK (status IN ('issued', 'completed', 'failed')),
    request_id      text NOT NULL,
    created_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    token_issuer    text NOT NULL,
    issuer_name     text NOT NULL,
    token_subject   text NOT NULL,
    client_id       text,
    profile         text NOT NULL,
    subject_type    text NOT NULL,
    subject_dn      text NOT NULL,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    certificate     bytea NOT NULL,
    key_evidence    jsonb NOT NULL,
    hash_algorithm  text NOT NULL,
    digests         bytea[] NOT NULL,
    signed_count    integer,
    destruction     jsonb,
    failure         text
);
CREATE INDEX signing_records_created ON signing_records (created_at DESC, id DESC);
CREATE INDEX signing_records_subject ON signing_records (token_subject, created_at DESC);
CREATE INDEX signing_records_client ON signing_records (client_id, created_at DESC);
CREATE INDEX signing_records_open ON signing_records (status) WHERE status <> 'completed';

-- Idempotency-Key records, scoped to the authenticated principal (issuer + subject).
CREATE TABLE idempotency_keys (
    token_issuer    text NOT NULL,
    token_subject   text NOT NULL,
    key             text NOT NULL,
    body_sha256     bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    record_id       uuid REFERENCES signing_records (id),
    response        jsonb,
    PRIMARY KEY (token_issuer, token_subject, key)
);

-- Single-use token identifiers (RFC 7519 jti), kept until the token expires.
CREATE TABLE token_replay (
    issuer      text NOT NULL,
    jti         text NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX token_replay_expiry ON token_replay (expires_at);

-- Certificates of the long-lived CA keys (the keys themselves stay in the HSM), written by
-- `qes init`, read by every replica at start.
CREATE TABLE ca_certificates (
    label       text PRIMARY KEY,
    certificate bytea NOT NULL,
    created_at  timestamptz NOT NULL
);
