-- Every admin act is a log entry (issue 15 item 5; ETSI EN 319 401 §7.10, EN 319 411-1
-- §6.4.5): admin_actions, the row an auditor rebuilds each administrative-action entry from
-- (ca.logentry kind 0x04), now holds RP client changes and CA certificate revocations and
-- replacements and the policy files that took effect beside the suspensions. Version-3 entries add `detail` (a code the service
-- writes, never free text), `certificate_serial` and `target_sha256`; none of them is
-- personal, so a tombstone (`qes audit purge`) keeps them.
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_scope_check;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_scope CHECK (
    (action IN ('suspend', 'resume') AND scope IN ('identity', 'client', 'all'))
    OR (action IN ('client-add', 'client-rotate', 'client-scope', 'client-revoke')
        AND scope = 'client')
    OR (action IN ('certificate-revoke', 'ca-replace') AND scope = 'certificate')
    OR (action = 'policy-load' AND scope = 'policy')
);
ALTER TABLE admin_actions ADD COLUMN detail text CHECK (detail <> '');
ALTER TABLE admin_actions ADD COLUMN certificate_serial text
    CHECK (certificate_serial ~ '^[0-9a-f]+$');  -- lower-case hex, as ca_revocations.serial
ALTER TABLE admin_actions ADD COLUMN target_sha256 bytea CHECK (length(target_sha256) = 32);
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_certificate CHECK (
    (scope = 'certificate') = (certificate_serial IS NOT NULL AND target_sha256 IS NOT NULL)
);
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_policy CHECK (
    scope <> 'policy' OR (target_sha256 IS NOT NULL AND certificate_serial IS NULL)
);
-- A policy file's content is logged once, the first time it takes effect on any replica: not
-- at every start or reload of the same bytes (the replicas race; the index decides).
CREATE UNIQUE INDEX admin_actions_policy_once ON admin_actions (target_sha256)
    WHERE action = 'policy-load';
