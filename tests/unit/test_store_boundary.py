"""Two ownership rules, checked on the source (no import, no database):

- the results store ``fakescan/db/`` owns the SQL: no other module builds a statement or runs one
  on a session;
- settings are read once, by an entry point, and passed down: only the entry points call
  ``load_settings``, and only ``fakescan/settings.py`` reads the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fakescan", "scheduler", "worker", "migrations")
STORE = ("fakescan/db/", "migrations/")  # the store, and Alembic's migrations (their own SQL by design)
SQL_BUILDERS = {"select", "insert", "update", "delete", "text", "exists"}
SESSION_CALLS = {"execute", "scalars", "scalar", "query"}

# The commands' start-up, (file, function): each reads the settings once and passes them down.
ENTRY_POINTS = {
    ("fakescan/cli.py", "main"),  # every `fakescan` command
    ("worker/celery_app.py", "__getattr__"),  # the app `celery -A worker.celery_app` loads
    ("migrations/env.py", "<module>"),  # `alembic` run by hand
}
# Environment variables that are no fakescan setting: prometheus_client's own multiprocess folder,
# which the library itself reads from the environment (and pool processes inherit).
ENVIRONMENT_READERS = {"fakescan/settings.py", "worker/metrics.py"}


def modules() -> list[tuple[str, ast.Module]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.append((path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))))
    return found


def _receiver_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def sql_built(tree: ast.Module) -> list[str]:
    """Where a module builds SQL or runs it on a session, as ``line: what``."""
    found: list[tuple[int, str]] = []
    aliases = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names if alias.name.split(".")[0] == "sqlalchemy"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            found += [(node.lineno, f"from {node.module} import {alias.name}") for alias in node.names
                      if alias.name in SQL_BUILDERS]
        elif (isinstance(node, ast.Attribute) and node.attr in SQL_BUILDERS
              and ast.unparse(node.value).split(".")[0] in aliases):
            found.append((node.lineno, ast.unparse(node)))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SESSION_CALLS
              and any(word in _receiver_name(node.func.value).lower() for word in ("session", "connection"))):
            found.append((node.lineno, f"{ast.unparse(node.func)}(...)"))
    return [f"{line}: {what}" for line, what in sorted(found)]


def callers_of(tree: ast.Module, name: str) -> set[str]:
    """The functions (``<module>`` for top-level code) that call ``name``."""
    callers: set[str] = set()

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            if isinstance(child, ast.Call) and name in (getattr(child.func, "id", None),
                                                        getattr(child.func, "attr", None)):
                callers.add(where)
            visit(child, where)

    visit(tree, "<module>")
    return callers


def environment_reads(tree: ast.Module) -> list[int]:
    """``os.environ`` and ``os.getenv`` uses (any of them reads the environment)."""
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and node.attr in ("environ", "getenv") and _receiver_name(node.value) == "os"]


def test_the_checker_sees_sql_in_every_form_and_nothing_else():
    sample = ast.parse(
        "import sqlalchemy as sa\n"
        "from sqlalchemy import func, select\n"
        "from sqlalchemy.dialects.postgresql import insert\n"
        "from sqlalchemy.orm import Session\n"
        "statement = sa.text('SELECT 1')\n"
        "rows = session.execute(statement)\n"
        "ids = self.session.scalars(statement)\n"
        "one = connection.scalar(statement)\n"
        "pipeline.execute()\n"  # a Redis pipeline: no SQL
    )
    assert [entry.split(": ", 1)[0] for entry in sql_built(sample)] == ["2", "3", "5", "6", "7", "8"]


def test_only_the_store_builds_sql():
    outside = {name: sql for name, tree in modules() if not name.startswith(STORE) and (sql := sql_built(tree))}
    assert not outside, ("SQL outside fakescan/db: move it into a function of a fakescan/db module and "
                         f"call that: {outside}")


def test_the_checker_names_the_function_that_reads_settings():
    sample = ast.parse("settings = load_settings()\n"
                       "def main():\n    return fakescan.settings.load_settings()\n"
                       "class Handler:\n    def on_start(self):\n        configure(load_settings())\n")
    assert callers_of(sample, "load_settings") == {"<module>", "main", "on_start"}


def test_only_entry_points_read_the_settings():
    readers = {(name, caller) for name, tree in modules() for caller in callers_of(tree, "load_settings")}
    assert readers - ENTRY_POINTS == set(), (
        f"load_settings() outside an entry point: take the settings as an argument instead {readers - ENTRY_POINTS}")
    assert ENTRY_POINTS <= readers, f"an entry point no longer reads settings: {ENTRY_POINTS - readers}"


def test_only_the_settings_module_reads_the_environment():
    readers = {name: lines for name, tree in modules() if (lines := environment_reads(tree))}
    assert set(readers) <= ENVIRONMENT_READERS, (
        f"environment read outside fakescan/settings.py: make it a setting: "
        f"{ {name: lines for name, lines in readers.items() if name not in ENVIRONMENT_READERS} }")
