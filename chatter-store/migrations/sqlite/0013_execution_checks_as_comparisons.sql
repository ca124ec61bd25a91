-- The checks of `workflow_executions.kind` and `.status` are written as comparisons, as 0012
-- did for the node runs' status: SQLite evaluates a CHECK's `IN` list of more than two values
-- by building a temporary b-tree of the list, each time the check runs. That was two b-trees
-- per execution inserted and one per change of its status: 3-4 % of the CPU of a durable run
-- of a ReAct loop, more for a short graph.
--
-- The new checks accept exactly the values the old ones did, so no stored row changes, and
-- the table is not rebuilt (a rebuild would have to run with foreign keys off: node runs,
-- events and checkpoints cascade from its rows). SQLite documents this way for such changes
-- (https://sqlite.org/lang_altertable.html, "Making Other Kinds Of Table Schema Changes"):
-- the table's text is edited in `sqlite_schema`, this connection reloads the schema (RESET),
-- and a schema change moves the schema version on, so other connections reload it too. A
-- database whose text differs (nothing to replace) keeps its checks, which are as correct.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(replace(sql,
    'CHECK (kind IN (''definition'', ''template'', ''adhoc'', ''chat''))',
    'CHECK (kind = ''definition'' OR kind = ''template'' OR kind = ''adhoc'' OR kind = ''chat'')'),
    'CHECK (status IN (''pending'', ''running'', ''waiting'', ''completed'', ''failed'', ''cancelled''))',
    'CHECK (status = ''pending'' OR status = ''running'' OR status = ''waiting''
                             OR status = ''completed'' OR status = ''failed'' OR status = ''cancelled'')')
WHERE type = 'table' AND name = 'workflow_executions';
PRAGMA writable_schema = RESET;
CREATE TABLE chatter_schema_version_bump (x INTEGER);
DROP TABLE chatter_schema_version_bump;
