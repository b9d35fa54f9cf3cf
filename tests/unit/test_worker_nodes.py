"""Worker node names: unique per worker process on a host, and found again by ``worker-ping``."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import worker.celery_app
from fakescan.errors import UsageError
from fakescan.settings import load_settings
from worker import health
from worker.cli import worker_command

HOST = socket.gethostname()


def test_each_worker_process_names_itself_after_its_pid():
    code = "from worker.health import unique_node_name; print(unique_node_name())"
    names = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            timeout=60).stdout.strip() for _ in range(2)}
    assert len(names) == 2 and all(name.startswith("fakescan-") and name.endswith(f"@{HOST}") for name in names)


def test_fakescan_worker_passes_that_name_to_celery_unless_given_one(monkeypatch):
    started = []

    class App:
        def worker_main(self, argv: list[str]) -> None:
            started.append(argv[argv.index("--hostname") + 1])

    monkeypatch.setattr(worker.celery_app, "worker_app", lambda settings: App())
    settings = load_settings(broker_url="redis://127.0.0.1:1/0")
    arguments = dict(concurrency=1, pool="solo", queues=None, log_level=None)
    worker_command(type("Args", (), dict(arguments, hostname=None))(), settings)
    worker_command(type("Args", (), dict(arguments, hostname="gpu0@%h"))(), settings)
    assert started == [health.unique_node_name(), "gpu0@%h"]


def test_worker_ping_finds_the_one_live_worker_of_this_host(tmp_path):
    settings = load_settings(home=tmp_path)
    assert health.default_node(settings) == f"celery@{HOST}"  # none recorded: Celery's default name
    health.register_node(settings, f"fakescan-1@{HOST}")
    (health.heartbeat_dir(settings, f"fakescan-1@{HOST}") / health.NODE_FILE).write_text("999999999")  # gone
    health.register_node(settings, "fakescan-2@other-host")  # another host sharing the home folder
    health.register_node(settings, f"fakescan-3@{HOST}")  # this process: alive
    assert health.default_node(settings) == f"fakescan-3@{HOST}"

    health.register_node(settings, f"fakescan-4@{HOST}")
    with pytest.raises(UsageError, match=f"2 workers run on this host \\(fakescan-3@{HOST}, fakescan-4@{HOST}\\)"):
        health.default_node(settings)
