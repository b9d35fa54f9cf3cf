"""Combined verdicts over stored results (embedded SQLite): compute, recompute, list with --explain."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import func, select

from fakescan.cli import main
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.migrate import ensure_schema
from fakescan.db.models import Result, Verdict
from fakescan.db.verdicts import record_batch_verdicts
from fakescan.settings import load_settings
from fakescan.verdicts import VerdictPolicy
from tests.verdict_support import ARCHIVE, NO_METADATA, add_scan, result


@pytest.fixture
def sessions():
    settings = load_settings()
    engine = make_engine(settings)
    ensure_schema(settings, engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def run(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def listed(capsys, *argv: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(line) for line in run(capsys, "verdicts", "list", "--format", "jsonl", *argv).splitlines()]
    return {row["uri"].rsplit("/", 1)[-1]: row for row in rows}


def test_compute_then_list_follow_the_policy(sessions, capsys):
    with sessions() as session:
        scan_id, _ = add_scan(session, ARCHIVE)
    out = run(capsys, "verdicts", "compute", "--scan", str(scan_id))
    assert out.startswith(f"4 verdicts under policy {VerdictPolicy().version}")
    rows = listed(capsys, "--explain")
    assert {key: row["verdict"] for key, row in rows.items()} == {
        "signed-ai.jpg": "fake", "photo.jpg": "real", "render.png": "fake", "broken.jpg": None}
    assert rows["signed-ai.jpg"]["explanation"]["rule"] == "provenance"
    assert rows["photo.jpg"]["explanation"]["skipped"][0]["reason"] == "no evidence: no provenance metadata"
    assert rows["broken.jpg"]["explanation"]["rule"] == "no-evidence"
    assert "explanation" not in listed(capsys)["photo.jpg"]
    assert set(listed(capsys, "--verdict", "fake")) == {"signed-ai.jpg", "render.png"}
    assert set(listed(capsys, "--verdict", "none")) == {"broken.jpg"}


def test_explain_table_names_the_deciding_evidence(sessions, capsys):
    with sessions() as session:
        add_scan(session, ARCHIVE)
    run(capsys, "verdicts", "compute")
    out = run(capsys, "verdicts", "list", "--explain", "--format", "table")
    block = out.split("signed-ai.jpg")[1].split("\n")[1]
    assert "verified provenance: c2pa-ai" in block and "[valid]" in block
    assert "default@d1: score 0.100, overruled by provenance" in out.split("signed-ai.jpg")[1]
    assert "default@d1: score 0.930 x weight 1" in out


def test_recompute_upserts_and_a_new_policy_keeps_its_own_rows(sessions, capsys, tmp_path):
    with sessions() as session:
        scan_id, ids = add_scan(session, ARCHIVE)
    run(capsys, "verdicts", "compute", "--scan", str(scan_id))
    run(capsys, "verdicts", "compute", "--scan", str(scan_id))
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Verdict)) == 4
        session.execute(Result.__table__.update().where(Result.object_id == ids["render.png"],
                                                        Result.detector == "default").values(score=0.2))
        session.commit()
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"name": "strict", "high": 0.9}))
    run(capsys, "verdicts", "compute", "--policy", str(strict))
    assert listed(capsys, "--policy", str(strict))["render.png"]["verdict"] == "real"  # recalibrated input
    assert listed(capsys)["render.png"]["verdict"] == "fake"  # the default policy's row is kept as it was
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Verdict)) == 8


def test_worker_hook_uses_the_scans_detector_versions_and_the_configured_policy(sessions, tmp_path, monkeypatch):
    policy = tmp_path / "policy.json"
    policy.write_text('{"name": "site"}')
    monkeypatch.setenv("FAKESCAN_VERDICT_POLICY", str(policy))
    with sessions() as session:
        scan_id, ids = add_scan(session, {"a.png": [result("default", "d1", 0.9), result("default", "d0", 0.1),
                                                    result("provenance", "1.0.0", None, NO_METADATA)]})
        counts = record_batch_verdicts(session, scan_id, [ids["a.png"]], load_settings())
        session.commit()
        row = session.scalars(select(Verdict)).one()
    assert counts == {"fake": 1} and row.score == pytest.approx(0.9) and row.policy_version.startswith("site-")
    assert [item["version"] for item in row.explanation["contributions"]] == ["d1"]


def test_policy_command_and_bad_policy(capsys, tmp_path):
    shown = json.loads(run(capsys, "verdicts", "policy"))
    assert shown["version"] == VerdictPolicy().version and shown["decisive_real"] == ["c2pa-capture-trusted"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"hihg": 1}')
    assert main(["verdicts", "policy", "--policy", str(bad)]) == 2
    assert "unknown verdict policy keys" in capsys.readouterr().err


def test_the_worker_hook_combines_the_rows_it_was_given_as_it_would_the_stored_ones(sessions):
    """A batch's own rows stand in for reading its results back; an object they do not cover for
    every detector of the scan is still read. Same verdicts, scores and explanations either way."""
    from sqlalchemy import delete, event

    objects = {**ARCHIVE, "two-versions.png": [result("provenance", "1.0.0", None, NO_METADATA),
                                               result("default", "d1", 0.7), result("default", "d0", 0.01)]}

    def computed(session, rows=()) -> dict[int, tuple[Any, ...]]:
        session.execute(delete(Verdict))
        record_batch_verdicts(session, scan_id, sorted(ids.values()), load_settings(), rows)
        return {row.object_id: (row.verdict, row.score, row.explanation) for row in session.execute(
            select(Verdict.object_id, Verdict.verdict, Verdict.score, Verdict.explanation))}

    with sessions() as session:
        scan_id, ids = add_scan(session, objects)
        read_back = computed(session)
        rows = [{"object_id": ids[key], **row} for key, results in objects.items() for row in results]
        without_one = [row for row in rows if (row["object_id"], row["detector"]) != (ids["photo.jpg"], "provenance")]
        statements: list[str] = []
        event.listen(session.get_bind(), "before_cursor_execute",
                     lambda _connection, _cursor, statement, *_: statements.append(statement))
        for given, reads_expected in ((rows, 0), (without_one, 1)):
            statements.clear()
            assert computed(session, given) == read_back
            assert sum("FROM results" in statement for statement in statements) == reads_expected
    assert len(read_back) == 5 and read_back[ids["render.png"]][0] == "fake"
    assert read_back[ids["two-versions.png"]][1] == pytest.approx(0.7)  # d0 is not the scan's version
