"""Everything one worker process needs to run batches: settings, database sessions, the model cache.

Built on the first batch inside the process that runs it (a prefork child, the solo worker, or
the in-process dispatcher), never in a parent that forks: database connections and CUDA
contexts do not survive a fork.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.migrate import ensure_schema
from fakescan.settings import Settings, load_settings
from worker.cache import ProcessCache


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    cache: ProcessCache
    pid: int

    @classmethod
    def build(cls, settings: Settings) -> "WorkerRuntime":
        engine = make_engine(settings)
        ensure_schema(settings, engine)  # SQLite migrates itself; PostgreSQL must be at head
        return cls(settings, engine, make_sessionmaker(engine), ProcessCache(settings), os.getpid())

    def close(self) -> None:
        self.cache.close()
        self.engine.dispose()


_runtime: WorkerRuntime | None = None
_lock = threading.Lock()


def process_runtime() -> WorkerRuntime:
    """This process's runtime, built from the environment on first use (and again after a fork)."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = WorkerRuntime.build(load_settings())
        return _runtime


def forget_process_runtime() -> None:
    """Drop this process's runtime (tests that change the environment between batches)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
