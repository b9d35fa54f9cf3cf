"""The embedded default: no broker, no database configured; the scan runs in-process on SQLite.

No service is needed (hence the ``model`` mark: it runs the tiny SigLIP checkpoint on CPU).
"""

from __future__ import annotations

import json

import pytest

from fakescan.cli import main
from fakescan.settings import load_settings
from tests.tiny_models import build_tiny_siglip_checkpoint
from tests.worker_support import CORRUPT_KINDS, corrupt_objects, image_bytes

pytestmark = pytest.mark.model
IMAGES = 30


def test_scan_a_folder_without_configuration_then_list_every_result(tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "bad").mkdir(parents=True)
    for index in range(IMAGES):
        (folder / f"{index:03d}.{'jpg' if index % 2 else 'png'}").write_bytes(
            image_bytes(index, "JPEG" if index % 2 else "PNG"))
    for key, data in corrupt_objects().items():
        (folder / key).write_bytes(data)
    checkpoint = build_tiny_siglip_checkpoint(tmp_path / "tiny-siglip")
    home = load_settings().home  # FAKESCAN_HOME, and nothing else FAKESCAN_* is set

    assert main(["scan", str(folder), "--detector", str(checkpoint), "--batch-size", "8"]) == 0
    capsys.readouterr()
    assert (home / "fakescan.db").is_file()

    assert main(["results", "--format", "jsonl", "--detector", checkpoint.name]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_uri = {record["uri"]: record for record in records}
    assert len(by_uri) == len(records) == IMAGES + len(CORRUPT_KINDS)
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        record = by_uri[path.as_uri()]
        key = path.relative_to(folder).as_posix()
        if key in CORRUPT_KINDS:
            assert record["status"] == "error" and record["error"].startswith(CORRUPT_KINDS[key] + ":")
        else:
            assert record["status"] == "ok" and 0.0 <= record["score"] <= 1.0 and record["verdict"]
