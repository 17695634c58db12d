-- PLACEHOLDER so that this branch's migrations stay numbered 1..N without a gap. The
-- transparency-log branch owns this file (migration 0003): at merge, take that branch's version.
SELECT 1;
