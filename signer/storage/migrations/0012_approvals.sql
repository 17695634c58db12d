-- m-of-n human approval of batch signatures (issue 7): a batch request whose policy decision
-- requires approvals is held here until enough members of the approver group approve its exact
-- digests. Every decision is also a log entry (kind 'approval', ca.logentry 0x03).
--
-- Status: pending -> signing (the m-th approval, in the same transaction that records it, so
-- exactly one replica signs) -> completed | failed; pending -> denied (one denial ends it) or
-- expired (noticed when next read). A crash while 'signing' leaves the row visibly 'signing'.
CREATE TABLE approval_requests (
    id                   uuid PRIMARY KEY,
    status               text NOT NULL CHECK (status IN
                             ('pending', 'signing', 'completed', 'failed', 'denied', 'expired')),
    kind                 text NOT NULL CHECK (kind IN ('digests', 'pdf')),
    request_id           text NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    ended_at             timestamptz,
    -- The requester, as verified when the request was made (idp_adapter Principal as JSON).
    token_issuer         text NOT NULL,
    issuer_name          text NOT NULL,
    token_subject        text NOT NULL,
    client_id            text,
    display_name         text NOT NULL,
    principal            jsonb NOT NULL,
    -- What is to be signed, and why.
    format               text NOT NULL,
    profile              text,
    hash_algorithm       text NOT NULL,
    digests              bytea[] NOT NULL,
    labels               text[] NOT NULL,
    reason               text,
    approver_group       text NOT NULL,
    approvals_required   integer NOT NULL CHECK (approvals_required >= 1),
    -- PDF uploads: the prepared document (signer.formats.pdf.PreparedPdf) to embed into.
    pdf                  bytea,
    pdf_reserved_start   integer,
    pdf_reserved_end     integer,
    signed_pdf           bytea,
    -- The outcome: the signing response (as a 201 would have carried it) or the error slug.
    record_serial        text,
    result               jsonb,
    error                text,
    -- Completion webhook: the key is derived from SHA-256 of a secret shown once at creation.
    webhook_url          text,
    webhook_secret_hash  bytea,
    webhook_attempts     integer NOT NULL DEFAULT 0,
    webhook_result       text,
    webhook_attempted_at timestamptz,
    webhook_delivered_at timestamptz,
    CHECK (cardinality(labels) = cardinality(digests) AND cardinality(digests) > 0),
    CHECK ((webhook_url IS NULL) = (webhook_secret_hash IS NULL))
);
CREATE INDEX approval_requests_pending ON approval_requests (created_at) WHERE status = 'pending';

-- One row per decision; a person decides a request at most once.
CREATE TABLE approval_decisions (
    id                uuid PRIMARY KEY,
    approval_request  uuid NOT NULL REFERENCES approval_requests (id),
    decision          text NOT NULL CHECK (decision IN ('approved', 'denied')),
    request_id        text NOT NULL,
    decided_at        timestamptz NOT NULL,
    issuer_name       text NOT NULL,
    token_issuer      text NOT NULL,
    token_subject     text NOT NULL,
    email             text,
    display_name      text NOT NULL,
    log_index         bigint NOT NULL,
    UNIQUE (approval_request, token_issuer, token_subject)
);

-- Every kind of entry there is (the kill switch's 'admin' included): whichever migration
-- redefines this constraint last must list them all.
ALTER TABLE log_entries DROP CONSTRAINT log_entries_kind_check;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_kind_check
    CHECK (kind IN ('issuance', 'refusal', 'approval', 'admin'));

-- The approvers' web UI reuses the audit UI's login sessions: a session belongs to one UI
-- (realm), and keeps the verified principal so group membership is checked per action.
ALTER TABLE audit_ui_sessions
    ADD COLUMN realm     text NOT NULL DEFAULT 'audit',
    ADD COLUMN principal jsonb;
