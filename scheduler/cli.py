"""Scheduler commands: ``scan`` and ``status``. Never imports torch or the detectors."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    pass  # scan / status: issue 2
