-- Signing policy rate limits and the kill switch (issue 7).
--
-- Per-identity rate-limit windows: one row per identity and window span ('minute' | 'day'),
-- reset in place when a new window starts, so the table holds at most two rows per identity.
-- Every replica counts in the same rows (the upsert's row lock serializes them).
CREATE TABLE policy_rate_windows (
    token_issuer   text NOT NULL,
    token_subject  text NOT NULL,
    span           text NOT NULL CHECK (span IN ('minute', 'day')),
    starts_at      timestamptz NOT NULL,
    count          integer NOT NULL CHECK (count >= 0),
    PRIMARY KEY (token_issuer, token_subject, span)
);

-- Count one request of an identity in each of its windows, in one statement (one round trip):
-- returns NULL, or the first span whose limit the request would pass, in which case nothing
-- is counted (the block's savepoint is rolled back), so a refused request consumes nothing.
CREATE FUNCTION policy_rate_take(
    p_issuer text, p_subject text, p_spans text[], p_starts timestamptz[], p_limits integer[]
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    i integer;
    n integer;
    over text;
BEGIN
    BEGIN
        FOR i IN 1 .. coalesce(array_length(p_spans, 1), 0) LOOP
            INSERT INTO policy_rate_windows AS w
                   (token_issuer, token_subject, span, starts_at, count)
            VALUES (p_issuer, p_subject, p_spans[i], p_starts[i], 1)
            ON CONFLICT (token_issuer, token_subject, span) DO UPDATE
               SET count = CASE WHEN w.starts_at = EXCLUDED.starts_at THEN w.count + 1 ELSE 1 END,
                   starts_at = EXCLUDED.starts_at
            RETURNING w.count INTO n;
            IF n > p_limits[i] THEN
                over := p_spans[i];
                RAISE EXCEPTION 'rate limit' USING ERRCODE = 'QR429';
            END IF;
        END LOOP;
    EXCEPTION WHEN SQLSTATE 'QR429' THEN
        RETURN over;
    END;
    RETURN NULL;
END;
$$;

-- Every administrative action (suspend / resume), append-only: the row an auditor recomputes
-- the action's log entry from (ca.logentry kind 0x04).
CREATE TABLE admin_actions (
    id             uuid PRIMARY KEY,
    request_id     text NOT NULL,
    action         text NOT NULL CHECK (action IN ('suspend', 'resume')),
    scope          text NOT NULL CHECK (scope IN ('identity', 'client', 'all')),
    token_issuer   text,
    token_subject  text,
    client_id      text,
    reason         text,
    actor_issuer   text,
    actor_subject  text NOT NULL,
    acted_at       timestamptz NOT NULL,
    CHECK ((scope = 'identity') = (token_issuer IS NOT NULL AND token_subject IS NOT NULL)),
    CHECK ((scope = 'client') = (client_id IS NOT NULL))
);

-- What is suspended now. '' where a column does not apply (so the key has no NULLs).
CREATE TABLE suspensions (
    scope          text NOT NULL CHECK (scope IN ('identity', 'client', 'all')),
    token_issuer   text NOT NULL DEFAULT '',
    token_subject  text NOT NULL DEFAULT '',
    client_id      text NOT NULL DEFAULT '',
    action_id      uuid NOT NULL REFERENCES admin_actions (id),
    PRIMARY KEY (scope, token_issuer, token_subject, client_id)
);

-- Bumped with every change to suspensions: each process polls it (and LISTENs on
-- qes_suspensions) and reloads its in-memory copy when it moves.
CREATE TABLE suspensions_version (
    id       integer PRIMARY KEY CHECK (id = 1),
    version  bigint NOT NULL
);
INSERT INTO suspensions_version (id, version) VALUES (1, 0);

-- Administrative actions are log entries too.
ALTER TABLE log_entries DROP CONSTRAINT log_entries_kind_check;
ALTER TABLE log_entries ADD CONSTRAINT log_entries_kind_check
    CHECK (kind IN ('issuance', 'refusal', 'admin'));
