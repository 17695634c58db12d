-- Key-ceremony steps are admin entries (issue 15 items 1 and 5; EN 319 411-1 §6.5.1, EN 319
-- 401 §7.10): action 'ca-ceremony', scope 'ceremony', target_sha256 the SHA-256 of the step's
-- transcript line (ca.ceremony), each step logged once however often its transcript is
-- imported.
-- The allowed (action, scope) pairs, as ca.logentry.ADMIN_ACTIONS lists them, become rows of
-- a table that admin_actions references: a new admin act is one INSERT, not a CHECK rewritten
-- in full (as 0019 and 0020 did).
CREATE TABLE admin_action_scopes (
    action text NOT NULL,
    scope text NOT NULL,
    PRIMARY KEY (action, scope)
);
INSERT INTO admin_action_scopes (action, scope) VALUES
    ('suspend', 'identity'),
    ('suspend', 'client'),
    ('suspend', 'all'),
    ('resume', 'identity'),
    ('resume', 'client'),
    ('resume', 'all'),
    ('client-add', 'client'),
    ('client-rotate', 'client'),
    ('client-scope', 'client'),
    ('client-revoke', 'client'),
    ('certificate-revoke', 'certificate'),
    ('ca-replace', 'certificate'),
    ('ca-rollover', 'certificate'),
    ('ca-switch', 'certificate'),
    ('policy-load', 'policy'),
    ('purge', 'all'),
    ('ca-ceremony', 'ceremony');
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_scope;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_scope
    FOREIGN KEY (action, scope) REFERENCES admin_action_scopes (action, scope);
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_ceremony CHECK (
    scope <> 'ceremony' OR (target_sha256 IS NOT NULL AND certificate_serial IS NULL)
);
CREATE UNIQUE INDEX admin_actions_ceremony_once ON admin_actions (target_sha256)
    WHERE action = 'ca-ceremony';
