"""The ``fakescan`` command: a thin dispatcher over the roles' own command modules.

Each module named in ``COMMAND_MODULES`` exposes ``register(subparsers, settings_factory)`` and
imports anything heavy (torch, detectors) inside its handlers, so ``fakescan status`` starts fast
on a machine without a model. Known failures become one line on stderr and an exit code by kind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn, Sequence

from fakescan.errors import FakescanError, UsageError

COMMAND_MODULES = (
    "scheduler.cli",  # scan, status
    "fakescan.query_cli",  # results, detectors, db
    "worker.cli",  # worker
    "worker.lab.ensemble_cli",  # fit-ensemble
    "worker.lab.cli",  # train, evaluate, calibrate, explain
    "fakescan.ops_cli",  # nightly, exporter, worker-ping
    "fakescan.verdicts_cli",  # verdicts compute/list/policy
    "fakescan.api.cli",  # serve
)

EXIT_UNEXPECTED = 70
EXIT_BROKEN_PIPE = 141  # what a shell reports for a process ended by SIGPIPE


class OneLineParser(argparse.ArgumentParser):
    """argparse with fakescan's error style: one line on stderr naming the fix, exit 2 (a UsageError).

    Subcommand parsers are made by ``add_subparsers``, which uses the parent's class, so every
    level of the command tree reports this way.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(UsageError.exit_code, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def fakescan_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fakescan")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="fakescan", description="Find AI-generated images in object storage.")
    parser.add_argument("--version", action="version", version=f"fakescan {fakescan_version()}",
                        help="print fakescan's version and exit")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: FAKESCAN_LOG_LEVEL)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def _translate(error: BaseException) -> FakescanError | None:
    """Known failure kinds from the libraries underneath, as one-line FakescanErrors."""
    from pydantic import ValidationError
    from sqlalchemy.exc import OperationalError as DatabaseUnavailable

    from fakescan.catalog import DuplicateName, UnknownDetector
    from fakescan.db.migrate import SchemaOutOfDate
    from fakescan.errors import BrokerError, DatabaseError, DetectorError

    if isinstance(error, FakescanError):
        return error
    if isinstance(error, (UnknownDetector,)):
        return UsageError(str(error))
    if isinstance(error, DuplicateName):
        return DetectorError(str(error))
    if isinstance(error, ValidationError):
        fields = ", ".join(f"FAKESCAN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        return UsageError(f"invalid setting {fields}")
    if isinstance(error, SchemaOutOfDate):
        return DatabaseError(str(error))
    if isinstance(error, DatabaseUnavailable):
        return DatabaseError(f"cannot use the results database: {_first_line(error.orig or error)}")
    if type(error).__module__.startswith(("kombu", "redis")) and "Connection" in type(error).__name__ + str(error):
        return BrokerError(f"cannot reach the broker: {_first_line(error)}")
    return None


def _first_line(error: object) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from fakescan.logs import configure_logging
    from fakescan.settings import load_settings

    settings = None
    try:
        settings = load_settings()
        configure_logging(settings, args.log_level)
        return int(args.handler(args, settings) or 0)
    except KeyboardInterrupt:
        print("fakescan: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fakescan ... | head`: the reader closed the pipe; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:
        known = _translate(error)
        if known is not None:
            print(f"fakescan: error: {_one_line(known)}", file=sys.stderr)
            return known.exit_code
        if settings is not None and settings.debug:
            raise
        logging.getLogger("fakescan").debug("unexpected error", exc_info=True)
        print(f"fakescan: internal error: {type(error).__name__}: {_one_line(error)} "
              "(set FAKESCAN_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_UNEXPECTED


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
