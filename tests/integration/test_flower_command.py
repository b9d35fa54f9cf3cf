"""The Flower command docs/operations.md shows, run as written against a real Redis: it loads the app."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests import services

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[2]


def documented_flower_command() -> list[str]:
    """The ``celery ... flower`` line of the Flower section's code block, split as a shell would."""
    section = (PROJECT / "docs" / "operations.md").read_text().split("## Flower", 1)[1].split("\n## ", 1)[0]
    lines = [line for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
             for line in block.splitlines() if " flower" in line and "pip install" not in line]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


def test_documented_flower_command_loads_fakescan_app(redis_service: Any, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    env.update(FAKESCAN_BROKER_URL=redis_service.url, FAKESCAN_HOME=str(tmp_path / "home"),
               PYTHONPATH=str(PROJECT))
    argv = [re.sub(r"\$\{?(\w+)\}?", lambda name: env[name.group(1)], arg) for arg in documented_flower_command()]
    assert Path(argv[0]).name == "celery"
    port = services.free_port()
    argv = [str(Path(sys.executable).parent / "celery"), *argv[1:]]
    argv = [f"--port={port}" if arg.startswith("--port") else arg for arg in argv]
    log = tmp_path / "flower.log"
    with log.open("w") as handle:
        process = subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as response:
                return response.read() == b"OK"

        services.wait_until(lambda: process.poll() is None and healthy(), "Flower's healthcheck", 90)
        services.wait_until(lambda: "Registered tasks" in log.read_text(), "Flower's start-up log", 30)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    started = log.read_text()
    # with the app loaded Flower lists fakescan's task; with a bare --broker only celery.* ones
    assert "'fakescan.scan_batch'" in started, started
    assert f"127.0.0.1:{port}" in started
