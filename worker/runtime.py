"""Everything one worker process needs to run batches: settings, database sessions, the model cache.

The settings are the ones the worker was started with: ``worker_app(settings)`` hands them to
:func:`use_settings` once, and every batch of the process uses them (never the environment again).
The runtime is built on the first batch inside the process that runs it (a prefork child, the solo
worker, or the in-process dispatcher), never in a parent that forks: database connections and
CUDA contexts do not survive a fork.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fakescan.settings import Settings

if TYPE_CHECKING:  # imported when a runtime is built: the Celery app imports this module at start-up
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from fakescan.db.database import Database
    from worker.cache import ProcessCache
    from worker.prefetch import ReadAhead


@dataclass
class WorkerRuntime:
    settings: Settings
    database: Database
    cache: ProcessCache
    pid: int
    _read_ahead: ReadAhead | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings) -> "WorkerRuntime":
        from fakescan.db.database import Database
        from worker.cache import ProcessCache

        # the schema check: SQLite migrates itself; PostgreSQL must be at head
        return cls(settings, Database.connect(settings), ProcessCache(settings), os.getpid())

    @property
    def engine(self) -> Engine:
        return self.database.engine

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.database.sessions

    @property
    def read_ahead(self) -> ReadAhead:
        """The process's one batch fetched ahead (``worker.prefetch``), made on first use."""
        if self._read_ahead is None:
            from worker.prefetch import ReadAhead

            self._read_ahead = ReadAhead(self.settings, self.sessions, self.cache)
        return self._read_ahead

    def close(self) -> None:
        if self._read_ahead is not None:
            self._read_ahead.discard()
        self.cache.close()
        self.database.close()


class NoWorkerSettings(RuntimeError):
    """A batch ran in a process whose worker was not built by ``worker_app(settings)``: a bug."""


_settings: Settings | None = None
_runtime: WorkerRuntime | None = None
_read_ahead_refusal: str | None = "this process started no worker"
_lock = threading.Lock()


def use_settings(settings: Settings) -> None:
    """The settings this process's batches run with (the worker's start-up sets them once)."""
    global _settings
    forget_process_runtime()
    with _lock:
        _settings = settings


def use_read_ahead(refusal: str | None) -> None:
    """Why this Celery worker's batches do not read the next reserved batch ahead; None: they do
    (decided at worker start, ``worker.celery_app``)."""
    global _read_ahead_refusal
    _read_ahead_refusal = refusal


def reads_ahead() -> bool:
    return _read_ahead_refusal is None


def read_ahead_refused() -> str | None:
    return _read_ahead_refusal


def worker_settings() -> Settings:
    if _settings is None:
        raise NoWorkerSettings("no worker settings in this process: build the worker with worker_app(settings)")
    return _settings


def process_runtime() -> WorkerRuntime:
    """This process's runtime, built from the worker's settings on first use (and again after a fork)."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = WorkerRuntime.build(worker_settings())
        return _runtime


def forget_process_runtime() -> None:
    """Drop this process's runtime (tests that change the settings between batches)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
