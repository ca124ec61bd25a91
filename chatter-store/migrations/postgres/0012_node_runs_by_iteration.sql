-- SQLite's migration 0012 rebuilds `workflow_node_runs` keyed by (execution, iteration, node,
-- attempt), so the runs of one step commit share a b-tree leaf. Postgres keeps its key: a
-- heap table appends rows wherever they fit, and its index pages are not what a commit waits
-- on (the round trip is). The number is taken so that both stores keep the same list of
-- migrations.
SELECT 1;
