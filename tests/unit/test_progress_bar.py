"""The scan's progress bar on a terminal: log records print on their own lines above it, not onto it."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from fakescan.logs import configure_logging
from fakescan.settings import load_settings
from scheduler.progress import ProgressBar


class Terminal(io.StringIO):
    """stderr as tqdm sees a terminal (it draws only on one)."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_log_records_print_on_their_own_line_above_the_bar(monkeypatch, restore_logging):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)  # here, not in a fixture: pytest's capture resets it per phase
    configure_logging(load_settings(), "INFO")  # fakescan's console handler, on this "terminal"
    bar = ProgressBar(7)
    bar.show(3, 10, skipped=0)
    logging.getLogger("worker.pipeline").info("scan 7 batch 2: started, 4 objects")
    bar.show(7, 10, skipped=0)
    bar.close()
    logging.getLogger("scheduler").info("after the bar")

    screen_lines = re.split(r"[\r\n]", terminal.getvalue())  # what a terminal shows after each \r or \n
    record = [line for line in screen_lines if "batch 2: started" in line]
    assert record == ["INFO worker.pipeline: scan 7 batch 2: started, 4 objects"], screen_lines
    assert any(line.startswith("scan 7:") and "7/10" in line for line in screen_lines), "the bar was drawn"
    assert "INFO scheduler: after the bar" in screen_lines, "the console handler is back once the bar closes"
    assert logging.getLogger().handlers[0].stream is terminal
