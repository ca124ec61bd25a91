-- SQLite's migration 0010 folds a step's `node_completed` event into its node run row (one
-- page less written to its WAL per commit). Postgres keeps every event as a row: its commits
-- cost no WAL page per table touched the way SQLite's do, and nothing here changes. The
-- number is taken so that both stores keep the same list of migrations.
SELECT 1;
