"""Grad-CAM / attention overlays, computed by ``fakescan explain`` in a child process on demand.

The service itself never imports torch: when a page asks for an object's overlay, the worker-role
command runs in its own process (loading the detector there), writes PNGs into a cache folder
under ``FAKESCAN_HOME``, and exits. A second request for the same object and detector version is
served from the cache.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from fakescan.settings import Settings

TIMEOUT_SECONDS = 300
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OverlayUnavailable(LookupError):
    """The detector has no explanation maps, or computing them failed; ``str()`` says why."""


def cache_folder(settings: Settings, object_id: int, detector: str, version: str) -> Path:
    return settings.home / "overlays" / f"{object_id}-{_SAFE.sub('_', detector)}-{_SAFE.sub('_', version)}"


def cached(folder: Path) -> dict[str, Path]:
    return {path.name.rsplit(".", 2)[-2]: path for path in sorted(folder.glob("*.png"))} if folder.is_dir() else {}


def compute(settings: Settings, uri: str, spec: str, folder: Path) -> dict[str, Path]:
    """Overlay name -> PNG path, computing them first unless cached."""
    found = cached(folder)
    if found:
        return found
    location = unquote(urlparse(uri).path) if uri.startswith("file://") else uri
    command = [sys.executable, "-m", "fakescan.cli", "explain", spec, location, "--out", str(folder)]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise OverlayUnavailable(f"computing the overlay took over {TIMEOUT_SECONDS}s") from None
    if completed.returncode != 0:
        reason = (completed.stderr.strip().splitlines() or ["explain failed"])[-1]
        raise OverlayUnavailable(reason.removeprefix("fakescan: error: "))
    written = json.loads(completed.stdout.strip().splitlines()[-1]).get("overlays", {})
    return {name: Path(path) for name, path in sorted(written.items())}
