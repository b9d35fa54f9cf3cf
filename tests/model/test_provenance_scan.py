"""An embedded scan over a mixed folder: provenance runs first, its evidence is stored with each
result, and the combined verdict of every object follows the policy."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import select

from fakescan.cli import main
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Result, Scan, StoredObject, Verdict
from fakescan.settings import load_settings
from fakescan.verdicts import DEFAULT_PROVENANCE_WEIGHTS, VerdictPolicy
from tests import provenance_support as files
from tests.tiny_models import build_tiny_siglip_checkpoint

pytestmark = pytest.mark.model


@pytest.fixture
def archive(tmp_path, monkeypatch):
    signer = files.TestSigner.create()
    anchors = tmp_path / "anchors.pem"
    anchors.write_text(signer.root_pem)
    monkeypatch.setenv("FAKESCAN_C2PA_TRUST_ANCHORS", str(anchors))
    signed_ai = signer.sign(files.jpeg(), "image/jpeg", "trainedAlgorithmicMedia")
    folder = tmp_path / "archive"
    folder.mkdir()
    contents = {
        "a1111.png": files.png_with_text({"parameters": files.A1111_PARAMETERS}),
        "comfy.png": files.png_with_text({"prompt": files.comfy_prompt()}),
        "xmp-ai.jpg": files.jpeg_with_xmp(files.xmp_packet("trainedAlgorithmicMedia")),
        "software.jpg": files.jpeg(files.exif_tags({0x0131: "Midjourney v6"})),
        "c2pa-ai.jpg": signed_ai,
        "c2pa-capture.jpg": signer.sign(files.jpeg(files.camera_exif()), "image/jpeg", "digitalCapture"),
        "tampered.jpg": files.alter_pixels(signed_ai),
        "camera.jpg": files.jpeg(files.camera_exif()),
        "plain.jpg": files.jpeg(),
        "broken-xmp.jpg": files.jpeg_with_xmp(b"<x:xmpmeta><unclosed"),
        "not-an-image.jpg": b"these bytes are not a picture at all",
    }
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return folder


def stored(sessions):
    with sessions() as session:
        scan = session.scalars(select(Scan)).one()
        results = session.execute(select(StoredObject.key, Result).join(Result, Result.object_id == StoredObject.id))
        by_key: dict[str, dict[str, Result]] = {}
        for key, result in results:
            by_key.setdefault(key, {})[result.detector] = result
        verdicts = dict(session.execute(select(StoredObject.key, Verdict).join(Verdict)).all())
    return scan, by_key, verdicts


def expected_weighted(results: dict[str, Result]) -> float | None:
    """The default policy's weighted mean, computed independently from the stored rows."""
    pairs = []
    for name, result in results.items():
        if result.status != "ok" or result.score is None:
            continue
        weight = DEFAULT_PROVENANCE_WEIGHTS.get(result.evidence["finding"], 1.0) if name == "provenance" else 1.0
        if weight:
            pairs.append((result.score, weight))
    return sum(s * w for s, w in pairs) / sum(w for _, w in pairs) if pairs else None


def test_mixed_folder_scan(archive, tmp_path, capsys):
    pixel = build_tiny_siglip_checkpoint(tmp_path / "tiny-pixels")
    assert main(["scan", str(archive), "--detector", str(pixel)]) == 0
    engine = make_engine(load_settings())
    try:
        scan, results, verdicts = stored(make_sessionmaker(engine))
    finally:
        engine.dispose()
    assert [d["name"] for d in scan.detectors] == ["provenance", "tiny-pixels"]
    provenance = {key: rows["provenance"] for key, rows in results.items()}
    findings = {key: row.evidence["finding"] for key, row in provenance.items() if row.status == "ok"}
    assert findings == {"a1111.png": "generator-parameters", "comfy.png": "generator-parameters",
                        "xmp-ai.jpg": "iptc-ai", "software.jpg": "generator-name", "c2pa-ai.jpg": "c2pa-ai",
                        "c2pa-capture.jpg": "c2pa-capture-trusted", "tampered.jpg": "unverified",
                        "camera.jpg": "camera-exif", "plain.jpg": "none"}
    assert provenance["tampered.jpg"].evidence["c2pa"]["hash_binding_valid"] is False
    assert provenance["plain.jpg"].score is None and provenance["plain.jpg"].verdict is None
    assert provenance["broken-xmp.jpg"].status == "error" and "malformed XMP" in provenance["broken-xmp.jpg"].error
    assert results["broken-xmp.jpg"]["tiny-pixels"].status == "ok"  # other detectors still judge it

    decided_by_provenance = {"a1111.png": "fake", "comfy.png": "fake", "xmp-ai.jpg": "fake", "c2pa-ai.jpg": "fake",
                             "c2pa-capture.jpg": "real"}
    policy = VerdictPolicy()
    assert set(verdicts) == set(results)
    for key, verdict in verdicts.items():
        assert verdict.policy_version == policy.version
        if key in decided_by_provenance:
            assert (verdict.verdict, verdict.explanation["rule"]) == (decided_by_provenance[key], "provenance"), key
            continue
        expected = expected_weighted(results[key])
        if expected is None:
            assert verdict.verdict is None and verdict.explanation["rule"] == "no-evidence", key
            continue
        assert verdict.score == pytest.approx(expected), key
        assert verdict.verdict == ("fake" if expected >= policy.high else "real" if expected < policy.low
                                   else "uncertain"), key
    assert verdicts["not-an-image.jpg"].verdict is None

    # the summary counts result rows per detector and one combined verdict per object
    out = capsys.readouterr().out
    per_verdict = Counter(verdict.verdict or "none" for verdict in verdicts.values())
    assert (f"verdicts fake {per_verdict['fake']}  real {per_verdict['real']}  uncertain {per_verdict['uncertain']}  "
            f"none {per_verdict['none']}  (one per object, policy {policy.version})") in out
    tiny = Counter("error" if rows["tiny-pixels"].status != "ok" else rows["tiny-pixels"].verdict or "none"
                   for rows in results.values())
    assert "  tiny-pixels: " + "  ".join(f"{k} {tiny[k]}" for k in ("fake", "real", "uncertain", "none", "error")
                                          if tiny[k]) in out
    assert main(["verdicts", "list", "--explain", "--format", "jsonl", "--verdict", "real"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    capture = next(row for row in rows if row["uri"].endswith("c2pa-capture.jpg"))
    assert capture["explanation"]["deciding"][0]["validation"] == "trusted"
