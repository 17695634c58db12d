-- `qes audit purge` is an admin act too (issue 15 item 5; ETSI EN 319 401 §7.10): one row and
-- its kind-0x04 log entry per purge, scope 'all', written in the purge's transaction, with the
-- cut-off and the counts of what was erased in `detail` (codes and numbers, nothing personal).
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_scope;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_scope CHECK (
    (action IN ('suspend', 'resume') AND scope IN ('identity', 'client', 'all'))
    OR (action IN ('client-add', 'client-rotate', 'client-scope', 'client-revoke')
        AND scope = 'client')
    OR (action IN ('certificate-revoke', 'ca-replace') AND scope = 'certificate')
    OR (action = 'policy-load' AND scope = 'policy')
    OR (action = 'purge' AND scope = 'all')
);
