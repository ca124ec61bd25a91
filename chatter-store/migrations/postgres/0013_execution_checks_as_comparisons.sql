-- SQLite's migration 0013 rewrites the `IN` list checks of `workflow_executions` as
-- comparisons, because SQLite builds a temporary b-tree of such a list each time the check
-- runs. Postgres evaluates `IN` lists of constants as it reads them. The number is taken so
-- that both stores keep the same list of migrations.
SELECT 1;
