-- Three more admin acts (issue 15 items 2 and 5; ETSI EN 319 401 §7.10, EN 319 411-1 §6.3.6):
-- `qes audit purge` (scope 'all', written in the purge's transaction, with the cut-off and the
-- counts of what was erased in `detail`: codes and numbers, nothing personal), and `qes ca
-- rollover` / `qes ca switch` of the issuing CA or TSA (scope 'certificate', migration 0021).
-- The allowed (action, scope) pairs, as ca.logentry.ADMIN_ACTIONS lists them:
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_scope;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_scope CHECK ((action, scope) IN (
    ('suspend', 'identity'), ('suspend', 'client'), ('suspend', 'all'),
    ('resume', 'identity'), ('resume', 'client'), ('resume', 'all'),
    ('client-add', 'client'), ('client-rotate', 'client'), ('client-scope', 'client'),
    ('client-revoke', 'client'),
    ('certificate-revoke', 'certificate'), ('ca-replace', 'certificate'),
    ('ca-rollover', 'certificate'), ('ca-switch', 'certificate'),
    ('policy-load', 'policy'),
    ('purge', 'all')
));
