"""Is this host's worker alive? ``fakescan worker-ping``, for container liveness and readiness probes.

A Celery control ping addressed to this host's node is the real test: it travels through the
broker and is answered by the worker's consumer loop. A solo-pool worker (the GPU setup) runs
its batch on that same loop, so it cannot answer while a batch runs; for that case each pool
process keeps a heartbeat file saying since when it has been busy. A worker busy for less than
the visibility timeout is alive; longer than that, its batch has been handed to another worker
anyway and a restart is the right answer. Torch-free: a probe must start fast.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakescan.errors import FakescanError, UsageError
from fakescan.settings import Settings

EXIT_UNHEALTHY = 1
NODE_FILE = "worker.pid"  # in a node's run folder: the pid of the worker process that uses the name


class WorkerUnhealthy(FakescanError):
    exit_code = EXIT_UNHEALTHY


@dataclass(frozen=True)
class Busy:
    pid: int
    since: float
    task_id: str | None


def unique_node_name() -> str:
    """``fakescan worker``'s default node name: with the pid in it, two workers on one host stay apart
    (Celery's own default, ``celery@HOST``, is the same for both)."""
    return f"fakescan-{os.getpid()}@{socket.gethostname()}"


def register_node(settings: Settings, node: str) -> None:
    """Record that this process is the worker named ``node``, for :func:`default_node`."""
    folder = heartbeat_dir(settings, node)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / NODE_FILE).write_text(str(os.getpid()))


def local_nodes(settings: Settings) -> list[str]:
    """Node names of the workers alive on this host (from their run folders)."""
    found = []
    for marker in (settings.home / "run").glob(f"*@{socket.gethostname()}/{NODE_FILE}"):
        try:
            pid = int(marker.read_text())
        except (OSError, ValueError):
            continue
        if _alive(pid):
            found.append(marker.parent.name)
    return sorted(found)


def default_node(settings: Settings) -> str:
    """The one worker running on this host; ``celery@HOST`` (Celery's default) when none is recorded."""
    nodes = local_nodes(settings)
    if len(nodes) > 1:
        raise UsageError(f"{len(nodes)} workers run on this host ({', '.join(nodes)}): pass --node NAME")
    return nodes[0] if nodes else celery_default_node()


def celery_default_node() -> str:
    """The name Celery gives a worker started without ``--hostname`` (``celery@%h``)."""
    return f"celery@{socket.gethostname()}"


def heartbeat_dir(settings: Settings, node: str) -> Path:
    return settings.home / "run" / node


def install_heartbeat(settings: Settings, node: str | None = None) -> None:
    """Connect the Celery signals that keep a heartbeat file per pool process, under the task's node."""
    from celery import signals

    def folder(task: Any) -> Path:
        return heartbeat_dir(settings, node or getattr(task.request, "hostname", None) or celery_default_node())

    def started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        _write(folder(task), {"pid": os.getpid(), "busy_since": time.time(), "task_id": task_id})

    def finished(task: Any = None, **_: Any) -> None:
        _write(folder(task), {"pid": os.getpid(), "busy_since": None, "task_id": None})

    # worker_app() may run more than once in a process; one heartbeat per task
    signals.task_prerun.connect(started, weak=False, dispatch_uid="fakescan-heartbeat-start")
    signals.task_postrun.connect(finished, weak=False, dispatch_uid="fakescan-heartbeat-end")


def _write(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{os.getpid()}.json"
    scratch = target.with_suffix(".tmp")
    scratch.write_text(json.dumps(state))
    scratch.replace(target)  # a probe never reads half a file


def busy_processes(settings: Settings, node: str) -> list[Busy]:
    """Live pool processes of ``node`` that are in the middle of a batch."""
    found = []
    for path in heartbeat_dir(settings, node).glob("*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if state.get("busy_since") is not None and _alive(int(state["pid"])):
            found.append(Busy(int(state["pid"]), float(state["busy_since"]), state.get("task_id")))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ping(settings: Settings, node: str, timeout: float) -> str:
    """A one-line account of a healthy worker; raises WorkerUnhealthy otherwise."""
    from fakescan.queue import make_celery_app

    app = make_celery_app(settings)
    try:
        replies = app.control.ping(destination=[node], timeout=timeout)
    finally:
        app.close()
    if any(node in reply for reply in replies):
        return f"{node}: pong"
    now = time.time()
    busy = busy_processes(settings, node)
    fresh = [entry for entry in busy if now - entry.since < settings.visibility_timeout]
    if fresh:
        entry = min(fresh, key=lambda item: item.since)
        return f"{node}: busy on task {entry.task_id} for {now - entry.since:.0f}s (pid {entry.pid})"
    if busy:
        oldest = min(busy, key=lambda item: item.since)
        raise WorkerUnhealthy(
            f"{node} has been on task {oldest.task_id} for {now - oldest.since:.0f}s, longer than "
            f"the visibility timeout ({settings.visibility_timeout}s): its batch is being redelivered")
    raise WorkerUnhealthy(f"{node} did not answer a ping within {timeout:g}s and is not busy on a batch")
