"""results: on PostgreSQL, its two references are checked once per statement instead of once per row

A foreign key checks each inserted row on its own: one query and one ``FOR KEY SHARE`` lock per
row and per key, so a worker's batch of 768 new result rows ran 1,536 of them (``EXPLAIN
ANALYZE``: 5.6 of the statement's 13.8 ms; on a durable server the statement took 21-23 ms with
the keys, 14-17 ms with these triggers). ``results.object_id`` (ON DELETE CASCADE) and
``results.scan_id`` (ON DELETE SET NULL) keep what their foreign keys promised, with PL/pgSQL
triggers that handle every row of a statement at once (statement-level, with transition tables):

- an INSERT locks the distinct objects and scans its rows name ``FOR KEY SHARE``, in one query per
  table (id order), and fails with ``foreign_key_violation`` (SQLSTATE 23503) if one is missing;
  an UPDATE does the same for the scans it names (a re-scan moves every row to the new scan: one
  query, not one per row) and, row by row but only when ``object_id`` really changes, for objects
  (an upsert never changes it: that trigger never fires for it);
- a DELETE of objects deletes their results, a DELETE of scans sets their results' ``scan_id`` to
  NULL, each in one statement after the deleting one; TRUNCATE of either does the same to every
  row; changing the ``id`` of an object or scan that a result names fails, as NO ACTION did.

Concurrency is what the foreign keys gave at READ COMMITTED: the INSERT's lock waits for a
concurrent delete of the same object and then fails, a delete waits for the writers holding the
lock and its cascade (a new statement, a new snapshot) then sees their rows. A transaction at
REPEATABLE READ or SERIALIZABLE cannot: its snapshot may not show a result committed after it
started, which the built-in cascade found with a snapshot no trigger can take. Deleting objects or
scans (or changing their ids) from such a transaction is refused (SQLSTATE 0A000); do it at READ
COMMITTED, the server's default. Inserting and updating results works at every level (a
concurrent delete there is a serialization failure, as with the foreign keys).

SQLite (embedded, one writer at a time) keeps its foreign keys: nothing to do there. The
downgrade drops the triggers and adds the foreign keys back (validating every row).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from typing import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (constraint, column, referenced table, ON DELETE) as 0001 created them
FOREIGN_KEYS = (("results_object_id_fkey", "object_id", "objects", "CASCADE"),
                ("results_scan_id_fkey", "scan_id", "scans", "SET NULL"))

_ONLY_AT_READ_COMMITTED = """
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'cannot % "%" at % isolation: results that reference it may be invisible to this transaction',
            lower(TG_OP), TG_TABLE_NAME, upper(current_setting('transaction_isolation'))
            USING ERRCODE = 'feature_not_supported', HINT = 'run it at READ COMMITTED';
    END IF;"""

_DECLARE = """
DECLARE
    missing bigint;"""


def _lock_or_fail(table: str, column: str, ids: str) -> str:
    """PL/pgSQL: lock the rows of ``table`` whose ids the sorted array expression ``ids`` gives FOR
    KEY SHARE (in id order, as the batch writer does) and raise as the foreign key on ``column`` did
    at the first one missing (under READ COMMITTED, a row deleted by a transaction this one waited
    for is missing). Needs the variable ``missing bigint``."""
    return f"""
    SELECT wanted INTO missing FROM unnest({ids}) AS wanted
    LEFT JOIN LATERAL (SELECT id FROM {table} WHERE id = wanted FOR KEY SHARE) AS found ON true
    WHERE found.id IS NULL LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert or update on table "results" violates foreign key constraint "results_{column}_fkey"'
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key ({column})=(%s) is not present in table "{table}".', missing);
    END IF;"""


FUNCTIONS = {
    # INSERT and UPDATE on results, per statement: lock what the rows reference, fail if missing
    "results_check_references": f"""{_DECLARE}
BEGIN
    IF NOT EXISTS (SELECT FROM written) THEN  -- an upsert that only updated (or only inserted) fires both
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN  -- an UPDATE that changes object_id is checked per row, by results_check_object
        {_lock_or_fail("objects", "object_id", "(SELECT array_agg(DISTINCT object_id) FROM written)")}
    END IF;
    {_lock_or_fail("scans", "scan_id", "(SELECT array_agg(DISTINCT scan_id) FROM written WHERE scan_id IS NOT NULL)")}
    RETURN NULL;
END""",
    # UPDATE of results.object_id to another value, per row
    "results_check_object": f"""{_DECLARE}
BEGIN{_lock_or_fail("objects", "object_id", "ARRAY[NEW.object_id]")}
    RETURN NULL;
END""",
    # DELETE on objects, per statement: ON DELETE CASCADE
    "objects_delete_results": f"""
BEGIN{_ONLY_AT_READ_COMMITTED}
    DELETE FROM results WHERE object_id IN (SELECT id FROM removed);
    RETURN NULL;
END""",
    # DELETE on scans, per statement: ON DELETE SET NULL
    "scans_release_results": f"""
BEGIN{_ONLY_AT_READ_COMMITTED}
    UPDATE results SET scan_id = NULL WHERE scan_id IN (SELECT id FROM removed);
    RETURN NULL;
END""",
    # TRUNCATE of objects or scans: every result loses its object (deleted) or its scan (NULL)
    "results_follow_truncate": """
BEGIN
    IF TG_TABLE_NAME = 'objects' THEN
        DELETE FROM results;
    ELSE
        UPDATE results SET scan_id = NULL WHERE scan_id IS NOT NULL;
    END IF;
    RETURN NULL;
END""",
    # UPDATE of objects.id or scans.id, per row: ON UPDATE NO ACTION
    "results_keep_referenced_ids": f"""
BEGIN{_ONLY_AT_READ_COMMITTED}
    IF TG_TABLE_NAME = 'objects' THEN
        PERFORM FROM results WHERE object_id = OLD.id LIMIT 1;
    ELSE
        PERFORM FROM results WHERE scan_id = OLD.id LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'update on table "%" violates a foreign key of table "results"', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (id)=(%s) is still referenced from table "results".', OLD.id);
    END IF;
    RETURN NULL;
END""",
}

# (name, table, when, what)
TRIGGERS = (
    ("results_inserted", "results", "AFTER INSERT",
     "REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION results_check_references()"),
    ("results_updated", "results", "AFTER UPDATE",
     "REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION results_check_references()"),
    ("results_object_changed", "results", "AFTER UPDATE OF object_id",
     "FOR EACH ROW WHEN (OLD.object_id IS DISTINCT FROM NEW.object_id) EXECUTE FUNCTION results_check_object()"),
    ("objects_deleted", "objects", "AFTER DELETE",
     "REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION objects_delete_results()"),
    ("scans_deleted", "scans", "AFTER DELETE",
     "REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION scans_release_results()"),
    ("objects_truncated", "objects", "AFTER TRUNCATE", "FOR EACH STATEMENT EXECUTE FUNCTION results_follow_truncate()"),
    ("scans_truncated", "scans", "AFTER TRUNCATE", "FOR EACH STATEMENT EXECUTE FUNCTION results_follow_truncate()"),
    ("objects_id_changed", "objects", "AFTER UPDATE OF id",
     "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION results_keep_referenced_ids()"),
    ("scans_id_changed", "scans", "AFTER UPDATE OF id",
     "FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION results_keep_referenced_ids()"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, body in FUNCTIONS.items():
        op.execute(f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $body${body}$body$")
    for name, table, when, what in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {when} ON {table} {what}")
    for name, _column, _table, _action in FOREIGN_KEYS:
        op.drop_constraint(name, "results", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, table, _when, _what in TRIGGERS:
        op.execute(f"DROP TRIGGER {name} ON {table}")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
    for name, column, table, action in FOREIGN_KEYS:
        op.create_foreign_key(name, "results", table, [column], ["id"], ondelete=action)
