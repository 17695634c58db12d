-- The audit web UI (issue 5): OIDC login flows in progress and logged-in sessions, in the
-- database so that any replica serves any step. Browser-held values (the flow and session
-- cookies) are stored only as SHA-256 hashes; a database reader cannot replay them.
CREATE TABLE audit_login_flows (
    id_hash     bytea PRIMARY KEY,
    state       text NOT NULL,
    nonce       text NOT NULL,
    verifier    text NOT NULL,
    return_to   text NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX audit_login_flows_expiry ON audit_login_flows (expires_at);

CREATE TABLE audit_ui_sessions (
    id_hash       bytea PRIMARY KEY,
    csrf_token    text NOT NULL,
    token_issuer  text NOT NULL,
    token_subject text NOT NULL,
    display_name  text NOT NULL,
    created_at    timestamptz NOT NULL,
    last_seen     timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX audit_ui_sessions_expiry ON audit_ui_sessions (expires_at);

-- Search by signed digest: digests @> ARRAY[$1]::bytea[] uses this index.
CREATE INDEX signing_records_digests ON signing_records USING gin (digests);
