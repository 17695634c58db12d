-- Rollover of the issuing CA and the built-in TSA (issue 15 item 2; EN 319 411-1 §6.3.6 key
-- changeover, EN 319 421 §7.7.4 TSU key life cycle). One row per generation of a role's key
-- and certificate, kept forever: the trust bundle lists every one with the period in which it
-- issued, so what an earlier generation signed keeps verifying. `qes ca rollover ROLE` adds a
-- pending generation (issued_from NULL: made, not yet used) while the current one serves;
-- `qes ca switch ROLE` ends the current one (issued_until) and starts the pending one
-- (issued_from) in one transaction. Generation 1 is what `qes init` made: copied here from
-- ca_certificates, under the configured key label, when the first rollover (or a replacing
-- `qes init --force`) adds generation 2.
CREATE TABLE ca_generations (
    -- 'root' only as history: `qes init --force` keeps the root it replaces here too.
    role         text NOT NULL CHECK (role IN ('root', 'issuing', 'tsa')),
    generation   integer NOT NULL CHECK (generation >= 1),
    key_label    text NOT NULL,
    certificate  bytea NOT NULL,
    created_at   timestamptz NOT NULL,
    issued_from  timestamptz,
    issued_until timestamptz CHECK (
        issued_until IS NULL OR (issued_from IS NOT NULL AND issued_until >= issued_from)
    ),
    PRIMARY KEY (role, generation)
);
-- At most one current and one pending generation per role.
CREATE UNIQUE INDEX ca_generations_current ON ca_generations (role)
    WHERE issued_from IS NOT NULL AND issued_until IS NULL;
CREATE UNIQUE INDEX ca_generations_pending ON ca_generations (role) WHERE issued_from IS NULL;
-- Its two acts, ca-rollover and ca-switch, are allowed admin acts from migration 0020 on.
