"""Services a fault test can stop and start again on the same port, and real worker subprocesses.

Used by the reconciler tests (tests/integration/test_reconciler.py) and the chaos benchmark
(tests/benchmarks/bench_chaos.py): Redis with or without an append-only file, PostgreSQL on one
data folder, and ``fakescan worker`` processes with the test-only detector families.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests import services
from tests.worker_families import WRAPPER

PROJECT = Path(__file__).resolve().parents[1]
STARTED = re.compile(r"scan (\d+) batch (\d+): started")
REDELIVERED = re.compile(r"scan (\d+) batch (\d+): redelivered")


@dataclass
class RedisServer:
    """``redis-server`` on a fixed port; ``aof`` runs it with appendonly yes / appendfsync everysec."""

    aof: bool = False
    port: int = field(default_factory=services.free_port)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fakescan-redis-")))
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.aof else ["--appendonly", "no"]
        binary = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--dir", str(self.folder), *durability],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        services.wait_until(lambda: services._port_open(self.port), "redis-server")
        return self

    def kill(self) -> None:
        """SIGKILL: whatever was not persisted is gone, as in a crash or an evicted pod."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self, down_seconds: float = 1.0) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class PostgresServer:
    """One PostgreSQL data folder that can be stopped and started again on the same port."""

    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fakescan-pg-")))
    port: int = field(default_factory=services.free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://fakescan@127.0.0.1:{self.port}/postgres"

    def start(self) -> "PostgresServer":
        data, sockets = self.workdir / "data", self.workdir / "sock"
        if not data.exists():
            sockets.mkdir(parents=True)
            if os.geteuid() == 0:
                shutil.chown(self.workdir, "postgres", "postgres")
                shutil.chown(sockets, "postgres", "postgres")
            subprocess.run(services._as_postgres_user([services._postgres_bin("initdb"), "-D", str(data), "-U",
                                                       "fakescan", "--auth=trust", "--encoding=UTF8", "--no-sync"]),
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.process = subprocess.Popen(
            services._as_postgres_user([services._postgres_bin("postgres"), "-D", str(data), "-p", str(self.port),
                                        "-h", "127.0.0.1", "-k", str(sockets), "-c", "fsync=off",
                                        "-c", "max_connections=200"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        services.wait_until(lambda: services._port_open(self.port), "postgres", timeout=60)
        return self

    def stop(self) -> None:
        """A fast shutdown (SIGINT to the postmaster): connections dropped, as a failover looks to clients."""
        if self.process is None or self.process.poll() is not None:
            return
        pid_file = self.workdir / "data" / "postmaster.pid"
        postmaster = int(pid_file.read_text().split()[0]) if pid_file.exists() else self.process.pid
        os.kill(postmaster, signal.SIGINT)  # the postmaster itself: runuser may not pass signals on
        self.process.wait(timeout=60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class WorkerProcess:
    name: str
    env: dict[str, str]
    folder: Path
    options: tuple[str, ...] = ("--pool", "threads", "--concurrency", "1")
    process: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    def start(self) -> "WorkerProcess":
        log = self.folder / f"{self.name}-{len(self.logs)}.log"
        self.logs.append(log)
        with log.open("w") as handle:
            self.process = subprocess.Popen([sys.executable, "-c", WRAPPER, "worker", "--hostname",
                                             f"{self.name}@%h", *self.options],
                                            cwd=PROJECT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group, mid-batch or not."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs if log.exists())

    def starts(self, scan_id: int) -> Counter[int]:
        return Counter(int(batch) for scan, batch in STARTED.findall(self.text()) if int(scan) == scan_id)

    def redeliveries(self, scan_id: int) -> int:
        return sum(1 for scan, _ in REDELIVERED.findall(self.text()) if int(scan) == scan_id)


def fakescan(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WRAPPER, *args], cwd=PROJECT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def fakescan_background(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRAPPER, *args], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(check, what: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"{what} within {timeout:.0f}s")
