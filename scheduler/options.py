"""Turning ``fakescan scan`` arguments into listing filters and detector refs; bad values are UsageErrors."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Iterable, Sequence

from fakescan.catalog import DetectorRef, resolve
from fakescan.errors import UsageError
from fakescan.settings import Settings
from fakescan.storage import IMAGE_EXTENSIONS, ListFilter

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
ANY_EXTENSION = ("*", "any")


def parse_age(text: str) -> timedelta | None:
    """``90m``, ``36h``, ``7d``, ``2w`` as a duration; None when the text is not an age."""
    relative = _RELATIVE.match(text)
    if relative is None:
        return None
    return timedelta(seconds=float(relative.group(1)) * _UNIT_SECONDS[relative.group(2).lower()])


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2024-05-01``, ``2024-05-01T06:00``, ``...+02:00`` (UTC without a zone) or ``36h`` / ``7d`` ago."""
    now = now or datetime.now(timezone.utc)
    age = parse_age(text)
    if age is not None:
        return now - age
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"bad --since {text!r}: use an ISO date or datetime (2024-05-01, 2024-05-01T06:00Z) "
            "or an age like 36h, 7d, 2w"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def parse_extensions(text: str | None) -> tuple[str, ...]:
    """``.jpg,.png`` or ``jpg png``; ``any`` (or ``*``) admits every key."""
    if text is None:
        return IMAGE_EXTENSIONS
    parts = [part.strip().lower() for part in re.split(r"[,\s]+", text) if part.strip()]
    if not parts:
        raise UsageError("--ext needs at least one extension, e.g. --ext .jpg,.png (or --ext any)")
    if any(part in ANY_EXTENSION for part in parts):
        return ()
    return tuple(part if part.startswith(".") else f".{part}" for part in parts)


def build_filter(
    extensions: str | None,
    globs: Sequence[str] | None,
    min_size: int | None,
    max_size: int | None,
    since: str | None,
    now: datetime | None = None,
) -> ListFilter:
    if min_size is not None and min_size < 0 or max_size is not None and max_size < 0:
        raise UsageError("--min-size and --max-size are byte counts and cannot be negative")
    if min_size is not None and max_size is not None and min_size > max_size:
        raise UsageError(f"--min-size {min_size} is larger than --max-size {max_size}: nothing could match")
    return ListFilter(
        extensions=parse_extensions(extensions),
        globs=tuple(globs or ()),
        min_size=min_size or 0,
        max_size=max_size,
        since=parse_since(since, now) if since else None,
    )


def resolve_detectors(specs: Iterable[str], settings: Settings) -> list[DetectorRef]:
    """Each spec resolved once; two different detectors may not share a name and version."""
    refs: dict[tuple[str, str], DetectorRef] = {}
    for spec in specs:
        ref = resolve(spec, settings)
        key = (ref.name, ref.version)
        if key in refs and refs[key].location != ref.location:
            raise UsageError(
                f"two detectors are both {ref.name!r} version {ref.version!r} "
                f"({refs[key].location}, {ref.location}): results are keyed by name and version"
            )
        refs.setdefault(key, ref)
    if not refs:
        raise UsageError("no detector: pass --detector NAME or set FAKESCAN_DETECTORS")
    return list(refs.values())


def filter_as_json(filters: ListFilter) -> dict[str, object]:
    """What the scan row records about how the source was listed."""
    return {
        "extensions": list(filters.extensions),
        "globs": list(filters.globs),
        "min_size": filters.min_size,
        "max_size": filters.max_size,
        "since": filters.since.isoformat() if filters.since else None,
    }

