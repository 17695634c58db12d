-- Completion webhooks of signing requests (issue 4): where the RP wants to hear that a request
-- ended, and how the delivery went (an operator reads these; so does the RP's GET).
ALTER TABLE signing_requests
    ADD COLUMN webhook_url          text,
    ADD COLUMN webhook_attempts     integer NOT NULL DEFAULT 0,
    ADD COLUMN webhook_result       text,
    ADD COLUMN webhook_attempted_at timestamptz,
    ADD COLUMN webhook_delivered_at timestamptz;
