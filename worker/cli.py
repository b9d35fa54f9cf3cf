"""Worker-side commands; torch and the detectors are imported inside the handlers only."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    pass  # worker / train / evaluate / calibrate / fit-ensemble / explain
