-- Signature formats (issue: CAdES and PAdES B-T). Each record says what its signatures are, and
-- keeps every signature-time-stamp token as evidence (RFC 3161 TimeStampToken, DER), one row
-- per signature in input order, written in the completion statement.
ALTER TABLE signing_records
    ADD COLUMN signature_format text NOT NULL DEFAULT 'raw'
        CHECK (signature_format IN ('raw', 'cades', 'pades'));

CREATE TABLE signature_time_stamps (
    record_id   uuid NOT NULL REFERENCES signing_records (id),
    position    integer NOT NULL CHECK (position >= 0),
    token       bytea NOT NULL,
    PRIMARY KEY (record_id, position)
);
