-- SQLite's migration 0011 stores a step's state delta in its node run row (one table fewer
-- written per commit, so fewer pages in its WAL). Postgres keeps each delta as a row of
-- `workflow_checkpoints`: nothing here changes. The number is taken so that both stores keep
-- the same list of migrations.
SELECT 1;
