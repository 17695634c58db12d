-- Cloud Signature Consortium API (issue 6): one-shot credentials and their single-use
-- authorizations (SAD, or the v2 OAuth2 credential token). All of it in the database, so any
-- replica serves any step of a credential; secrets are stored only as SHA-256.
--
-- A credential is a token-object key in the HSM (labelled in key_label) plus the 10-minute
-- certificate of its signing record (signing_records, 'issued' when the credential is made).
-- state: 'active' (may be authorized and used), 'signing' (an authorization was consumed, the
-- key is signing), 'destroyed' (the key is gone: end_reason says why: signed, expired-unused,
-- failed).
CREATE TABLE csc_credentials (
    id             text PRIMARY KEY,
    record_id      uuid NOT NULL UNIQUE REFERENCES signing_records (id),
    token_issuer   text NOT NULL,
    token_subject  text NOT NULL,
    key_label      text NOT NULL UNIQUE,
    state          text NOT NULL CHECK (state IN ('active', 'signing', 'destroyed')),
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    ended_at       timestamptz,
    end_reason     text CHECK (end_reason IN ('signed', 'expired-unused', 'failed')),
    CHECK ((state = 'destroyed') = (end_reason IS NOT NULL))
);
CREATE INDEX csc_credentials_owner ON csc_credentials (token_issuer, token_subject, state);
CREATE INDEX csc_credentials_open ON csc_credentials (expires_at) WHERE state <> 'destroyed';

-- Signature activation data bound to one credential, its owner, the hash algorithm (OID), the
-- exact digests and their count, and how the owner authenticated (acr, amr, auth_time).
-- Consumed once, under a row lock, after every binding was checked.
CREATE TABLE csc_authorizations (
    secret_hash    bytea PRIMARY KEY,
    credential_id  text NOT NULL REFERENCES csc_credentials (id) ON DELETE CASCADE,
    token_issuer   text NOT NULL,
    token_subject  text NOT NULL,
    hash_algorithm text NOT NULL,
    digests        bytea[] NOT NULL,
    num_signatures integer NOT NULL,
    acr            text,
    amr            text[] NOT NULL DEFAULT '{}',
    auth_time      timestamptz,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    consumed_at    timestamptz,
    CHECK (num_signatures > 0 AND num_signatures = cardinality(digests))
);
CREATE INDEX csc_authorizations_credential ON csc_authorizations (credential_id);
