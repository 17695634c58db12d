-- Retention and data-subject requests for approvals and administrative actions (issue 5 item
-- 6, over the rows issue 7 added; GDPR Art. 15 and 17).
--
-- `qes audit purge` turns an ended approval request created before the cut-off, its decisions,
-- and an admin action older than the cut-off into tombstones (signer.storage.retention): the
-- personal payload is erased, the non-personal fields that their log entries commit to stay,
-- so `qes audit verify` still checks them. `purged_at` marks the tombstone (a decision is one
-- when its request is).
ALTER TABLE approval_requests ADD COLUMN purged_at timestamptz;
ALTER TABLE admin_actions ADD COLUMN purged_at timestamptz;

-- A tombstone keeps no digests and no labels (as a purged signing record keeps no digests).
ALTER TABLE approval_requests DROP CONSTRAINT approval_requests_check;
ALTER TABLE approval_requests ADD CONSTRAINT approval_requests_digests_labels CHECK (
    cardinality(labels) = cardinality(digests)
    AND (cardinality(digests) > 0 OR purged_at IS NOT NULL)
);
-- A person decides a request at most once: among decisions that still name their approver
-- (the tombstones of one request's decisions all have the subject '').
ALTER TABLE approval_decisions
    DROP CONSTRAINT approval_decisions_approval_request_token_issuer_token_subj_key;
CREATE UNIQUE INDEX approval_decisions_once
    ON approval_decisions (approval_request, token_issuer, token_subject)
    WHERE token_subject <> '';
-- What a tombstone must not hold any more (the database refuses a half-erased one).
ALTER TABLE approval_requests ADD CONSTRAINT approval_requests_tombstone CHECK (
    purged_at IS NULL OR (
        token_subject = '' AND client_id IS NULL AND display_name = '' AND principal = '{}'
        AND cardinality(digests) = 0 AND reason IS NULL AND pdf IS NULL AND signed_pdf IS NULL
        AND result IS NULL AND webhook_url IS NULL
    )
);
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_tombstone CHECK (
    purged_at IS NULL OR (
        actor_subject = '' AND coalesce(token_subject, '') = '' AND coalesce(client_id, '') = ''
        AND coalesce(reason, '') = ''
    )
);

-- A person's rows for a data-subject request, by (subject, issuer): as requester, as approver,
-- as the target of an admin action and as its actor. Index lookups only; a tombstone's erased
-- subject ('') is left out of the partial indexes.
CREATE INDEX approval_requests_requester ON approval_requests (token_subject, token_issuer)
    WHERE purged_at IS NULL;
CREATE INDEX approval_decisions_approver ON approval_decisions (token_subject, token_issuer)
    WHERE token_subject <> '';
CREATE INDEX admin_actions_target ON admin_actions (token_subject, token_issuer)
    WHERE token_subject IS NOT NULL AND token_subject <> '';
CREATE INDEX admin_actions_actor ON admin_actions (actor_subject, actor_issuer)
    WHERE actor_subject <> '';
-- The purge finds old rows by time.
CREATE INDEX approval_requests_created ON approval_requests (created_at) WHERE purged_at IS NULL;
CREATE INDEX admin_actions_acted ON admin_actions (acted_at) WHERE purged_at IS NULL;
