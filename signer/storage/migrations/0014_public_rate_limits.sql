-- Rate limits of the anonymous endpoints (issue 17, item 8: /tsa, the trust bundle, CA
-- certificates and CRLs, the OpenAPI document): one row per window and source (a keyed hash of
-- the client address, signer.translog.source_index) plus the all-sources row (source = ''),
-- so every replica counts against one limit. Rows of closed windows are deleted by the
-- limiter (signer.public_limits).
CREATE TABLE public_rate_windows (
    source          bytea NOT NULL,
    window_start    timestamptz NOT NULL,
    hits            integer NOT NULL CHECK (hits > 0),
    PRIMARY KEY (source, window_start)
);
CREATE INDEX public_rate_windows_start ON public_rate_windows (window_start);
