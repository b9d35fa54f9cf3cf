"""``scan --wait``: a progress bar over a scan, and the loop that waits for it to end."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from kombu.exceptions import OperationalError as BrokerUnavailable
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from fakescan.db import scans
from fakescan.progress import ENDED_STATES, ScanProgress, read_progress

POLL_SECONDS = 1.0
log = logging.getLogger("fakescan.scheduler")
TRANSIENT = (DBAPIError, RedisError, BrokerUnavailable, OSError)

class ProgressBar:
    """A tqdm bar on stderr (silent when stderr is not a terminal) over a scan's enqueued items.

    While the bar is drawn, log records to the console go through ``tqdm.write``: each prints on
    its own line above the bar instead of onto it.
    """

    def __init__(self, scan_id: int) -> None:
        from contextlib import ExitStack

        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.bar = tqdm(total=0, unit="img", desc=f"scan {scan_id}", file=sys.stderr, disable=None,
                        dynamic_ncols=True)
        self._logs_above = ExitStack()
        if not self.bar.disable:
            self._logs_above.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))

    def show(self, completed: int, enqueued: int, **postfix: int) -> None:
        self.bar.total = max(enqueued, completed)
        self.bar.update(completed - self.bar.n)
        self.bar.set_postfix(postfix, refresh=True)

    def close(self) -> None:
        self.bar.close()
        self._logs_above.close()


def settle(sessions: sessionmaker[Session], scan_id: int) -> ScanProgress:
    """The scan's progress now, after finishing it if every item is in.

    This repairs the one race ``finish_if_complete`` can lose: the last batch committing while
    the scheduler marks the listing finished, each transaction not yet seeing the other.
    """
    with sessions() as session:
        scans.finish_if_complete(session, scan_id)
        session.commit()
        return read_progress(session, scan_id)


def wait_for_scan(sessions: sessionmaker[Session], scan_id: int, poll_seconds: float = POLL_SECONDS,
                  timeout: float | None = None, tick: Callable[[], object] | None = None) -> ScanProgress:
    """Poll until the scan has ended (finished, failed or cancelled), drawing a progress bar; after
    ``timeout`` seconds return the progress so far (state still ``running``). ``tick`` runs once
    per poll (the reconciler, which re-enqueues batches the broker lost)."""
    bar = ProgressBar(scan_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    last: ScanProgress | None = None
    try:
        while True:
            try:
                if tick is not None:
                    tick()
                progress = last = settle(sessions, scan_id)
            except TRANSIENT as fault:  # the database or broker restarting: the scan goes on, so do we
                log.warning("cannot follow scan %d right now (%s: %s); retrying", scan_id, type(fault).__name__,
                            str(fault).strip().splitlines()[0] if str(fault).strip() else "")
                if last is not None and deadline is not None and time.monotonic() >= deadline:
                    return last
                time.sleep(poll_seconds)
                continue
            bar.show(progress.done + progress.errors + progress.given_up, progress.enqueued,
                     error=progress.errors, skipped=progress.skipped)
            if progress.state in ENDED_STATES:
                return progress
            if deadline is not None and time.monotonic() >= deadline:
                return progress
            time.sleep(poll_seconds if deadline is None else max(0.0, min(poll_seconds, deadline - time.monotonic())))
    finally:
        bar.close()
