-- Compact steps (issue 5, item 10). The SQLite schema stores a node run's output and a
-- delta's reply text by reference to the step's `node_completed` event; Postgres keeps them
-- in place (its step cost is the round trip, not the bytes), so nothing changes here. The
-- migration exists so both backends keep the same numbered list.
SELECT 1;
