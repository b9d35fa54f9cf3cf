"""Combined verdicts on PostgreSQL: the 0002 migration up and down, JSONB explanations, upserts."""

from __future__ import annotations

import json

import pytest
from alembic import command
from sqlalchemy import func, inspect, select

from fakescan.cli import main
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.migrate import alembic_config, current_revision, head_revision
from fakescan.db.models import Verdict
from fakescan.settings import load_settings
from tests.verdict_support import ARCHIVE, add_scan

pytestmark = pytest.mark.integration


def test_verdicts_on_postgres(postgres_url, monkeypatch, capsys):
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    assert main(["db", "upgrade", "0001"]) == 0
    assert main(["db", "upgrade"]) == 0
    engine = make_engine(load_settings())
    try:
        assert current_revision(engine) == head_revision(load_settings())
        assert "verdicts" in inspect(engine).get_table_names()
        sessions = make_sessionmaker(engine)
        with sessions() as session:
            scan_id, _ = add_scan(session, ARCHIVE)
        for _ in range(2):
            assert main(["verdicts", "compute", "--scan", str(scan_id)]) == 0
        capsys.readouterr()
        assert main(["verdicts", "list", "--scan", str(scan_id), "--explain", "--format", "jsonl"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert sorted(row["verdict"] or "none" for row in rows) == ["fake", "fake", "none", "real"]
        decided = next(row for row in rows if row["explanation"]["rule"] == "provenance")
        assert decided["explanation"]["deciding"][0]["kind"] == "c2pa-ai"
        with sessions() as session:
            assert session.scalar(select(func.count()).select_from(Verdict)) == len(ARCHIVE)
    finally:
        engine.dispose()


def test_0002_downgrades_and_upgrades_again(postgres_url, monkeypatch):
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", postgres_url)
    assert main(["db", "upgrade"]) == 0
    command.downgrade(alembic_config(postgres_url), "0001")
    engine = make_engine(load_settings())
    try:
        assert current_revision(engine) == "0001" and "verdicts" not in inspect(engine).get_table_names()
        assert main(["db", "upgrade"]) == 0
        assert current_revision(engine) == head_revision(load_settings())
    finally:
        engine.dispose()
