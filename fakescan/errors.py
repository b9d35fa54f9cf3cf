"""Errors a user can act on, each with its own exit code; the CLI prints them as one line."""

from __future__ import annotations


class FakescanError(Exception):
    exit_code = 1


class UsageError(FakescanError):
    """Malformed arguments: a bad URL, an unknown detector, an impossible option."""

    exit_code = 2


class SourceError(FakescanError):
    """The object store cannot be read: missing folder, unreachable bucket, denied access."""

    exit_code = 3


class DatabaseError(FakescanError):
    """The results database is unreachable or its schema is out of date."""

    exit_code = 4


class BrokerError(FakescanError):
    """The task broker (Redis) is unreachable."""

    exit_code = 5


class DetectorError(FakescanError):
    """A detector folder is missing, malformed, or refused (e.g. an unsafe pickle)."""

    exit_code = 6


class DataError(FakescanError):
    """A training or evaluation data set is empty, unlabelled or unreadable."""

    exit_code = 7
