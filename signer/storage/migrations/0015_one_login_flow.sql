-- One browser login (issue 16): the audit UI, the approvers' UI, web signing and the CSC v2
-- OAuth2 flow start and finish their OpenID Connect logins (RFC 6749 §4.1, RFC 7636 S256,
-- OIDC Core §3.1.2.1 nonce) through one table. A flow lives 10 minutes and is single-use (the
-- callback deletes the row it reads), so none is carried over from the three tables it
-- replaces: a login started before the upgrade is simply started again.
CREATE TABLE login_flows (
    id_hash     bytea PRIMARY KEY,
    -- Which surface started it ('audit', 'approvals', 'sign', 'csc'); a flow is only ever
    -- taken by the surface that started it.
    purpose     text NOT NULL,
    -- What the login is for: the signing request or CSC authorization (NULL for the UIs).
    subject_id  uuid,
    state       text NOT NULL,
    nonce       text NOT NULL,
    verifier    text NOT NULL,
    -- Where the browser goes once logged in (the UIs' page it asked for).
    return_to   text,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX login_flows_expiry ON login_flows (expires_at);

DROP TABLE audit_login_flows;
DROP TABLE signing_login_flows;
ALTER TABLE csc_oauth2_requests
    DROP COLUMN flow_hash,
    DROP COLUMN oidc_state,
    DROP COLUMN oidc_nonce,
    DROP COLUMN oidc_verifier;
