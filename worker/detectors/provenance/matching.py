"""Lookups into the tables of :mod:`generators`, compiled once."""

from __future__ import annotations

import re

from worker.detectors.provenance.generators import CAMERA_MAKERS, DIGITAL_SOURCE_TYPES, GENERATOR_NAMES

_GENERATORS = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in GENERATOR_NAMES)
_SOURCE_TYPES = {key.lower(): (key, origin) for key, origin in DIGITAL_SOURCE_TYPES.items()}
NAME_SCAN_CHARS = 4096  # generator names sit at the start of tool fields; prompts further on are not claims


def generator_named(text: str) -> str | None:
    """The canonical name of the first known generator the text names, if any."""
    head = text[:NAME_SCAN_CHARS]
    for name, pattern in _GENERATORS:
        if pattern.search(head):
            return name
    return None


def camera_maker(make: str) -> bool:
    return make.strip().lower().startswith(CAMERA_MAKERS)


def source_type(value: str) -> tuple[str, str] | None:
    """(IPTC code, origin) for a digital source type given as a code or a NewsCodes URI."""
    code = value.strip().rstrip("/").rsplit("/", 1)[-1]
    return _SOURCE_TYPES.get(code.lower())
