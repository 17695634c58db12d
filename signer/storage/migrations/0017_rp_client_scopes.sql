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
