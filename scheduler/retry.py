"""Retry a database step across transient faults (server restarting, connection dropped)."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

T = TypeVar("T")
log = logging.getLogger("fakescan.scheduler")


def is_transient(error: BaseException) -> bool:
    """A lost or refused connection, not a constraint violation or a bad statement."""
    return isinstance(error, OperationalError) or (
        isinstance(error, DBAPIError) and bool(error.connection_invalidated)
    )


def with_db_retries(
    session: Session,
    step: Callable[[], T],
    *,
    attempts: int = 5,
    first_delay: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``step`` (which must commit its own work) again after a rollback, with doubling delays."""
    delay = first_delay
    for attempt in range(1, attempts):
        try:
            return step()
        except DBAPIError as error:
            session.rollback()
            if not is_transient(error):
                raise
            reason = str(error.orig or error).strip().splitlines()[0]
            log.warning("database fault (attempt %d of %d), retrying in %.1fs: %s", attempt, attempts, delay, reason)
            sleep(delay)
            delay *= 2
    return step()
