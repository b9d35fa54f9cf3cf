"""Bearer tokens with two roles: ``viewer`` reads, ``reviewer`` reads and records reviews.

Tokens come from ``FAKESCAN_API_TOKENS`` (comma-separated) and/or the file named by
``FAKESCAN_API_TOKENS_FILE`` (one a line, ``#`` comments), each entry ``role:name:secret``. The
secret may be stored as ``sha256:<hex>`` so the file never holds a usable token. Only SHA-256
digests are kept in memory and a presented token is compared with every one of them by
``hmac.compare_digest``, so neither the match nor its position leaks through timing. With no
token configured the service is open, and ``fakescan serve`` binds to 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from fakescan.errors import UsageError
from fakescan.settings import Settings

ROLES = ("viewer", "reviewer")
COOKIE = "fakescan_token"  # the review page keeps the token here, since <img> cannot send a header


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    @property
    def may_review(self) -> bool:
        return self.role == "reviewer"


LOCAL = Principal("local", "reviewer")  # everyone on 127.0.0.1 when no token is configured


@dataclass(frozen=True)
class TokenEntry:
    digest: bytes
    principal: Principal


@dataclass(frozen=True)
class Access:
    entries: tuple[TokenEntry, ...]

    @property
    def open(self) -> bool:
        return not self.entries

    def authenticate(self, token: str | None) -> Principal | None:
        if self.open:
            return LOCAL
        if not token:
            return None
        presented = hashlib.sha256(token.encode()).digest()
        found = None
        for entry in self.entries:  # no early exit: every digest is compared
            if hmac.compare_digest(presented, entry.digest):
                found = entry.principal
        return found


def load_access(settings: Settings) -> Access:
    lines: list[tuple[str, str]] = []
    if settings.api_tokens is not None:
        lines += [("FAKESCAN_API_TOKENS", part) for part in settings.api_tokens.get_secret_value().split(",")]
    if settings.api_tokens_file is not None:
        lines += [(str(settings.api_tokens_file), line) for line in _read(settings.api_tokens_file)]
    entries = [parse_entry(origin, text.strip()) for origin, text in lines
               if text.strip() and not text.strip().startswith("#")]
    return Access(tuple(entries))


def parse_entry(origin: str, text: str) -> TokenEntry:
    """``role:name:secret``; the message never repeats the secret."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not all(part.strip() for part in parts):
        raise UsageError(f"{origin}: a token entry is role:name:secret (role {' or '.join(ROLES)})")
    role, name, secret = (part.strip() for part in parts)
    if role not in ROLES:
        raise UsageError(f"{origin}: unknown token role {role!r}; valid: {', '.join(ROLES)}")
    return TokenEntry(_digest(origin, secret), Principal(name, role))


def hash_token(token: str) -> str:
    """What to store instead of the token: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def _digest(origin: str, secret: str) -> bytes:
    if secret.startswith("sha256:"):
        try:
            digest = bytes.fromhex(secret.removeprefix("sha256:"))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise UsageError(f"{origin}: a sha256: token digest is 64 hex digits")
        return digest
    return hashlib.sha256(secret.encode()).digest()


def _read(path: Path) -> list[str]:
    try:
        return path.expanduser().read_text().splitlines()
    except OSError as error:
        raise UsageError(f"cannot read API tokens file {path}: {error.strerror or error}") from None
