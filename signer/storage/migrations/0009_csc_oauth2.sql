-- The CSC v2 OAuth2 credential flow (CSC API v2 §8.4.2-8.4.3; RFC 6749 §4.1, RFC 7636): one
-- row per oauth2/authorize request, from the relying party's parameters (the exact hashes)
-- through the person's OIDC login and consent to the single-use authorization code and the
-- credential token it was exchanged for. Any replica serves any step. Browser-held values
-- (login and consent cookies) and the code are stored only as SHA-256; each is cleared by the
-- statement that uses it. The verified login (principal: name, e-mail, identifiers) is kept
-- only while the request is open; an ended row keeps the signer's issuer and subject.
CREATE TABLE csc_oauth2_requests (
    id                 uuid PRIMARY KEY,
    client_id          text NOT NULL REFERENCES rp_clients (client_id),
    redirect_uri       text NOT NULL,
    state              text,
    credential_id      text NOT NULL,
    num_signatures     integer NOT NULL CHECK (num_signatures > 0),
    hash_algorithm_oid text NOT NULL,
    hashes             bytea[] NOT NULL CHECK (cardinality(hashes) = num_signatures),
    code_challenge     text NOT NULL,
    description        text,
    lang               text,
    status             text NOT NULL CHECK (status IN
                           ('login', 'consent', 'approved', 'redeemed', 'denied', 'failed',
                            'expired')),
    created_at         timestamptz NOT NULL,
    expires_at         timestamptz NOT NULL,
    -- The person's OIDC login at the IdP (RFC 6749 §4.1.1, OIDC Core §3.1.2.1).
    flow_hash          bytea UNIQUE,
    oidc_state         text,
    oidc_nonce         text,
    oidc_verifier      text,
    -- The consent page of the logged-in credential owner.
    session_hash       bytea UNIQUE,
    csrf_token         text,
    principal          jsonb,
    signer_issuer      text,
    signer_subject     text,
    -- The authorization code (RFC 6749 §4.1.2) and what became of it.
    code_hash          bytea UNIQUE,
    code_expires_at    timestamptz,
    redeemed_at        timestamptz,
    -- A second redemption of the code (RFC 6749 §4.1.2): the issued token is revoked.
    reused_at          timestamptz,
    -- The core's handle of the credential token issued for the code (never the token).
    token_ref          text,
    ended_at           timestamptz,
    error              text
);
CREATE INDEX csc_oauth2_requests_expiry ON csc_oauth2_requests (expires_at);
CREATE INDEX csc_oauth2_requests_credential ON csc_oauth2_requests (credential_id);
