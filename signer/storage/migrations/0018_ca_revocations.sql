-- Revocation of the long-lived certificates the CA issued (issue 15 item 3): the issuing CA
-- certificate (an entry on the root's CRL) and the TSA certificate (on the issuing CA's CRL).
-- The 10-minute leaves are never revoked (noRevAvail, RFC 9608). Written by `qes ca revoke`,
-- read by every replica for its CRLs and OCSP answers. A revocation is final (RFC 5280 §3.3:
-- no hold here): rows are never updated or deleted.
CREATE TABLE ca_revocations (
    -- Grows with every revocation: the CRL caches of all replicas key on the largest id.
    id              bigserial PRIMARY KEY,
    -- The scope of the CRL the entry goes on: the subjectKeyIdentifier of the issuer's
    -- certificate (a CA made anew with `qes init --force` starts with an empty CRL).
    issuer_key_id   bytea NOT NULL,
    serial          text NOT NULL CHECK (serial ~ '^[0-9a-f]+$'),  -- lower-case hex
    role            text NOT NULL CHECK (role IN ('issuing', 'tsa')),
    certificate     bytea NOT NULL,
    revoked_at      timestamptz NOT NULL,
    reason          text NOT NULL,  -- RFC 5280 §5.3.1 name: keyCompromise, superseded, ...
    invalidity_date timestamptz CHECK (invalidity_date <= revoked_at),  -- RFC 5280 §5.3.2
    revoked_by      text NOT NULL,
    UNIQUE (issuer_key_id, serial)
);

CREATE FUNCTION ca_revocations_are_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a certificate revocation is final: ca_revocations rows are never changed';
END $$;
CREATE TRIGGER ca_revocations_final BEFORE UPDATE OR DELETE ON ca_revocations
    FOR EACH ROW EXECUTE FUNCTION ca_revocations_are_final();

-- The last CRL number each CA used (RFC 5280 §5.2.3: monotonically increasing for a CRL
-- issuer), shared by the replicas: each CRL takes the larger of the last number + 1 and the
-- time in Unix seconds, so the numbers continue above those used before this table existed.
CREATE TABLE ca_crl_numbers (
    issuer_key_id bytea PRIMARY KEY,
    last_number   numeric(49, 0) NOT NULL CHECK (last_number >= 0)
);
