-- The root's CRLs, signed offline in the key ceremony and imported (issue 15 item 1; RFC 5280
-- §5, EN 319 411-1 §6.5.1). The service never holds the root key: it serves the newest CRL
-- imported for the current root at /ca/root.crl and embeds it as B-LT validation data. One row
-- per CRL, kept (what was published stays on record); the newest per root is the one with the
-- highest CRL number (§5.2.3: numbers only grow).
CREATE TABLE ca_root_crls (
    issuer_key_id bytea NOT NULL,
    crl_number    numeric NOT NULL CHECK (crl_number >= 0),
    this_update   timestamptz NOT NULL,
    next_update   timestamptz NOT NULL CHECK (next_update > this_update),
    crl           bytea NOT NULL,
    imported_at   timestamptz NOT NULL,
    PRIMARY KEY (issuer_key_id, crl_number)
);
