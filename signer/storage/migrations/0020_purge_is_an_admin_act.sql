-- `qes audit purge` is an admin act too (issue 15 item 5; ETSI EN 319 401 §7.10): one row and
-- its kind-0x04 log entry per purge, scope 'all', written in the purge's transaction, with the
-- cut-off and the counts of what was erased in `detail` (codes and numbers, nothing personal).
-- The allowed (action, scope) pairs, as ca.logentry.ADMIN_ACTIONS lists them:
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_scope;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_scope CHECK ((action, scope) IN (
    ('suspend', 'identity'), ('suspend', 'client'), ('suspend', 'all'),
    ('resume', 'identity'), ('resume', 'client'), ('resume', 'all'),
    ('client-add', 'client'), ('client-rotate', 'client'), ('client-scope', 'client'),
    ('client-revoke', 'client'),
    ('certificate-revoke', 'certificate'), ('ca-replace', 'certificate'),
    ('policy-load', 'policy'),
    ('purge', 'all')
));
