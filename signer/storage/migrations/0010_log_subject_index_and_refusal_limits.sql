-- Finishing the issued-certificate log (issue 5).
--
-- subject_key: HMAC-SHA-256 over (token issuer, subject) under a key derived from the
-- log-privacy key (signer.translog.subject_index), distinct from the per-entry commitment key.
-- Deterministic, so a data-subject request finds a person's issuance AND refusal entries
-- through an index instead of recomputing commitments over every entry. It is not part of the
-- entry or its leaf hash, so `qes audit purge` erases it without touching the Merkle tree.
-- NULL: no verified identity (a refusal before authentication), a purged record, or an entry
-- appended before this column existed and not yet backfilled (signer.backfill).
ALTER TABLE log_entries ADD COLUMN subject_key bytea;
CREATE INDEX log_entries_subject ON log_entries (subject_key) WHERE subject_key IS NOT NULL;
-- The audit UI lists refused requests newest first (outcome "refused"), without reading the
-- issuance entries in between.
CREATE INDEX log_entries_refusals ON log_entries (idx) WHERE kind = 'refusal';

-- One row of backfill bookkeeping. Refusal entries below `legacy_refusals_below` were appended
-- before subject_key existed: their identifiers are only per-entry commitments, so a
-- data-subject lookup recomputes those for this fixed, never-growing range (every later entry
-- is found through the index). `emails_before`: records created before this migration may
-- lack their e-mail column; signer.backfill fills it from the certificate's subjectAltName
-- and then sets `emails_done`. A database with nothing to backfill starts out done.
CREATE TABLE log_backfill (
    id                      integer PRIMARY KEY CHECK (id = 1),
    legacy_refusals_below   bigint NOT NULL CHECK (legacy_refusals_below >= 0),
    subject_keys_done       boolean NOT NULL DEFAULT false,
    emails_before           timestamptz NOT NULL DEFAULT now(),
    emails_done             boolean NOT NULL DEFAULT false
);
INSERT INTO log_backfill (id, legacy_refusals_below, subject_keys_done, emails_done)
SELECT 1, size, size = 0,
       NOT EXISTS (SELECT 1 FROM signing_records
                    WHERE email IS NULL AND octet_length(certificate) > 0)
  FROM log_state;

-- Rate limit of refusals logged before authentication (signer.refusals): per window, per
-- source (a keyed hash of the client address) and for all sources together (source = '').
-- `logged` refusals were appended one by one; `suppressed` ones were only counted, and the
-- window's aggregate entry (reason refusals-suppressed) is appended, and the row deleted, in
-- one transaction once the window has closed, so no count is lost. `address` is kept only
-- until then: the aggregate entry commits to it (personal data, never in clear in the log).
CREATE TABLE log_refusal_windows (
    source          bytea NOT NULL,
    window_start    timestamptz NOT NULL,
    address         text,
    logged          integer NOT NULL DEFAULT 0 CHECK (logged >= 0),
    suppressed      integer NOT NULL DEFAULT 0 CHECK (suppressed >= 0),
    PRIMARY KEY (source, window_start)
);
CREATE INDEX log_refusal_windows_start ON log_refusal_windows (window_start);
