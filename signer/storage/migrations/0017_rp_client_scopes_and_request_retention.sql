-- Relying-party credentials as a security team expects them (issue 17 item 10):
-- * scopes: what the client may request ('api:web-signing', 'format:pades', 'profile:qes', ...;
--   '*' everything). Clients registered before keep everything they could do.
-- * a rotation keeps the previous secret's hash valid until previous_secret_until (a grace
--   period, so a deployment rolls without downtime); then only secret_hash works.
-- * the last use of each secret (at most one write a minute per secret).
ALTER TABLE rp_clients
    ADD COLUMN scopes text[] NOT NULL DEFAULT '{*}',
    ADD COLUMN secret_last_used_at timestamptz,
    ADD COLUMN previous_secret_hash bytea,
    ADD COLUMN previous_secret_until timestamptz,
    ADD COLUMN previous_secret_last_used_at timestamptz,
    ADD CONSTRAINT rp_clients_previous_secret
        CHECK ((previous_secret_hash IS NULL) = (previous_secret_until IS NULL));

-- Retention of web signing (issue 17 item 9): finished requests and their PDFs are deleted
-- [audit] finished_requests_keep_hours after they ended (signer.flows.request_retention) and
-- by `qes audit purge`; `qes audit subject` lists a person's requests still kept.
CREATE INDEX signing_requests_ended ON signing_requests (ended_at)
    WHERE status IN ('completed', 'failed', 'cancelled', 'expired');
CREATE INDEX signing_requests_signer ON signing_requests (signer_subject)
    WHERE signer_subject IS NOT NULL;
CREATE INDEX signing_requests_expected ON signing_requests (expected_subject)
    WHERE expected_subject IS NOT NULL;

-- CSC credentials/list never makes an HSM key (issue 17 item 9): it hands out a reserved
-- credential ID, one open reservation per identity; the key and certificate are made when the
-- credential is first read with credentials/info or authorised (signer.signing.csc).
CREATE TABLE csc_reservations (
    id            text PRIMARY KEY,
    token_issuer  text NOT NULL,
    token_subject text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    -- A request making the credential holds it until then; concurrent ones wait for it.
    claimed_until timestamptz,
    UNIQUE (token_issuer, token_subject)
);
CREATE INDEX csc_reservations_expiry ON csc_reservations (expires_at);
