-- The PAdES baseline level a PDF comes back at (ETSI EN 319 142-1 §6.3; issue 15 item 4):
-- a web-signing request and a PDF upload held for approval are answered at the level their
-- client asked for, as a direct upload is (signer.signing.longterm). 'b-t' for every row
-- made before, which is what they were answered at.
ALTER TABLE signing_requests ADD COLUMN pades_level text NOT NULL DEFAULT 'b-t'
    CHECK (pades_level IN ('b-t', 'b-lt', 'b-lta'));
ALTER TABLE approval_requests ADD COLUMN pades_level text NOT NULL DEFAULT 'b-t'
    CHECK (pades_level IN ('b-t', 'b-lt', 'b-lta'));
