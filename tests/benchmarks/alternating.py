"""This code against a git revision in one run: child processes alternate between the two trees.

A benchmark script re-runs itself as a child (``--child ...``) with one tree first on
``PYTHONPATH`` and prints its figures as one JSON line; rounds alternate between the trees, so a
change of the machine's load during the run falls on both, and the medians are compared.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from tests.benchmarks.bench_scan import REPO, export_revision

THIS_CODE = "this code"


def trees(baseline: str | None, scratch: Path) -> dict[str, Path]:
    """``this code`` and, with ``baseline``, that revision exported under ``scratch``."""
    found = {THIS_CODE: REPO}
    if baseline:
        found[baseline] = export_revision(baseline, scratch / "baseline")
    return found


def run_alternating(script: str, code: dict[str, Path], rounds: int,
                    child_args: Callable[[], list[str]]) -> dict[str, list[dict[str, Any]]]:
    """``rounds`` child runs per tree, alternating; ``child_args()`` is called once per child (a fresh
    database each, say). Each run's figures get the 1-minute load average seen right after it."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in code}
    for _ in range(rounds):
        for name, tree in code.items():
            command = [sys.executable, str(Path(script).resolve()), *child_args()]
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]) | {"load": load_average()})
    return runs


def medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    return {name: {key: statistics.median(run[key] for run in found) for key in found[0]}
            for name, found in runs.items()}


def load_range(runs: dict[str, list[dict[str, Any]]]) -> str:
    loads = [run["load"] for found in runs.values() for run in found]
    return f"load average (1 min) after each child run: {min(loads):.2f}-{max(loads):.2f}"


def load_average() -> float:
    path = Path("/proc/loadavg")
    return float(path.read_text().split()[0]) if path.exists() else float("nan")
