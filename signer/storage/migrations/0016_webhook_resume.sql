-- Webhooks resumed after a crash (issue 14): every replica's resumer claims an ended request
-- whose webhook is still due by setting webhook_claimed_until (a lease) in the statement that
-- finds it (FOR UPDATE SKIP LOCKED), so two replicas never send the same delivery at once.
ALTER TABLE signing_requests ADD COLUMN webhook_claimed_until timestamptz;
ALTER TABLE approval_requests ADD COLUMN webhook_claimed_until timestamptz;
-- Only the few ended, undelivered rows with a webhook are ever scanned.
CREATE INDEX signing_requests_webhook_due ON signing_requests (ended_at)
    WHERE webhook_url IS NOT NULL AND webhook_delivered_at IS NULL AND ended_at IS NOT NULL;
CREATE INDEX approval_requests_webhook_due ON approval_requests (ended_at)
    WHERE webhook_url IS NOT NULL AND webhook_delivered_at IS NULL AND ended_at IS NOT NULL;
