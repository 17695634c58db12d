-- Web apps send a person to sign (issue 4): registered relying parties, their signing
-- requests, the OIDC login of the signer, the consent session and the single-use signature
-- activation (SAD, ETSI TS 119 432). All of it in the database: any replica serves any step.
-- Browser-held values (flow and consent cookies) and RP secrets are stored only as SHA-256.
CREATE TABLE rp_clients (
    client_id     text PRIMARY KEY,
    name          text NOT NULL,
    secret_hash   bytea NOT NULL,
    redirect_uris text[] NOT NULL,
    created_at    timestamptz NOT NULL,
    rotated_at    timestamptz,
    revoked_at    timestamptz
);

CREATE TABLE signing_requests (
    id               uuid PRIMARY KEY,
    client_id        text NOT NULL REFERENCES rp_clients (client_id),
    status           text NOT NULL CHECK (status IN
                         ('pending', 'signing', 'completed', 'failed', 'cancelled', 'expired')),
    format           text NOT NULL,
    profile          text,
    hash_algorithm   text NOT NULL,
    labels           text[] NOT NULL,
    digests          bytea[] NOT NULL,
    redirect_uri     text NOT NULL,
    state            text NOT NULL,
    acr              text,
    -- Every acr value at or above ``acr`` in the configured order (NULL: no requirement).
    acr_accepted     text[],
    expected_subject text,
    expected_email   text,
    created_at       timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    signer_issuer    text,
    signer_subject   text,
    record_serial    text,
    result           jsonb,
    error            text,
    CHECK (cardinality(labels) = cardinality(digests) AND cardinality(digests) > 0)
);
CREATE INDEX signing_requests_client ON signing_requests (client_id, created_at);

-- An OIDC authorization request in progress for one signing request (RFC 6749 §4.1,
-- RFC 7636, OIDC Core §3.1.2.1); taken (deleted) by the callback, so it is single-use.
CREATE TABLE signing_login_flows (
    id_hash     bytea PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES signing_requests (id) ON DELETE CASCADE,
    state       text NOT NULL,
    nonce       text NOT NULL,
    verifier    text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX signing_login_flows_expiry ON signing_login_flows (expires_at);

-- The authenticated signer looking at the consent page of one request.
CREATE TABLE signing_consent_sessions (
    id_hash     bytea PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES signing_requests (id) ON DELETE CASCADE,
    csrf_token  text NOT NULL,
    principal   jsonb NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX signing_consent_sessions_expiry ON signing_consent_sessions (expires_at);

-- Signature activation data: created by the consent, consumed once by the signer in the same
-- statement that checks it against the request and moves the request to 'signing'.
CREATE TABLE signature_activations (
    id             uuid PRIMARY KEY,
    request_id     uuid NOT NULL REFERENCES signing_requests (id) ON DELETE CASCADE,
    token_issuer   text NOT NULL,
    token_subject  text NOT NULL,
    email          text,
    acr            text,
    auth_time      timestamptz,
    hash_algorithm text NOT NULL,
    digests        bytea[] NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    consumed_at    timestamptz
);
CREATE INDEX signature_activations_request ON signature_activations (request_id);

-- PDFs sent by the relying party (format 'pades'): the original, the prepared file whose
-- /ByteRange digest is what the signer consents to, and the signed result.
CREATE TABLE signing_request_pdfs (
    request_id     uuid NOT NULL REFERENCES signing_requests (id) ON DELETE CASCADE,
    position       integer NOT NULL,
    original       bytea NOT NULL,
    prepared       bytea NOT NULL,
    reserved_start integer NOT NULL,
    reserved_end   integer NOT NULL,
    signed         bytea,
    PRIMARY KEY (request_id, position)
);
