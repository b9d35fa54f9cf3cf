"""Real Redis, PostgreSQL and S3 (moto server mode) processes on 127.0.0.1 for the test session.

Each service starts on a free port when a test first asks for it and is stopped when the
session ends. Nothing here is mocked: the workers and the CLI talk to them over sockets.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Service:
    url: str
    process: subprocess.Popen
    workdir: Path | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> Service:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: run docker/install.sh")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="fakescan-redis-"))
    # durable, as docker/compose.yaml and the Helm chart run it (tests/chaos_support.py runs one without)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir),
         "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _port_open(port), "redis-server")
    return Service(f"redis://127.0.0.1:{port}/0", process, workdir)


def _postgres_bin(name: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"PostgreSQL {name} not found under /usr/lib/postgresql: run docker/install.sh")
    return candidates[-1]


def _as_postgres_user(command: list[str]) -> list[str]:
    """initdb refuses root; drop to the postgres account when the tests run as root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


_NOT_DURABLE = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def start_postgres(*, durable: bool = False) -> Service:
    """A throwaway server; without ``durable`` it skips fsync and full-page writes (tests), with it
    it runs as a production server does (benchmarks of writes)."""
    workdir = Path(tempfile.mkdtemp(prefix="fakescan-pg-"))
    data, sockets = workdir / "data", workdir / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
        shutil.chown(sockets, "postgres", "postgres")
    subprocess.run(
        _as_postgres_user([_postgres_bin("initdb"), "-D", str(data), "-U", "fakescan", "--auth=trust",
                           "--encoding=UTF8", "--no-sync"]),
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    port = free_port()
    process = subprocess.Popen(
        _as_postgres_user([_postgres_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                           "-k", str(sockets), *([] if durable else _NOT_DURABLE), "-c", "max_connections=200"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: _port_open(port), "postgres")
    url = f"postgresql+psycopg://fakescan@127.0.0.1:{port}/postgres"
    import sqlalchemy

    def accepts_queries() -> bool:
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("select 1"))
            return True
        finally:
            engine.dispose()

    wait_until(accepts_queries, "postgres queries")
    return Service(url, process, workdir)


def start_s3() -> Service:
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if moto is None:
        raise RuntimeError("moto_server not found: install the test extras (docker/install.sh)")
    process = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: _port_open(port), "moto S3 server")
    return Service(f"http://127.0.0.1:{port}", process)


def create_database(admin_url: str, name: str) -> str:
    """A fresh database on the shared server, so each test module starts from an empty schema."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"
