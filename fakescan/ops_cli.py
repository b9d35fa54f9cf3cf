"""Operations commands: ``nightly``, ``exporter``, ``worker-ping``. None of them imports torch.

They run in CronJobs, a metrics Deployment and container probes (see helm/fakescan), so each
starts fast and ends with an exit code a controller can act on.
"""

from __future__ import annotations

import argparse

from fakescan.errors import UsageError
from fakescan.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_nightly(subparsers)

    exporter = subparsers.add_parser(
        "exporter", help="serve Prometheus metrics: queue depth and per-scan progress (scheduler side)")
    exporter.add_argument("--port", type=int, default=9108, help="HTTP port (default 9108)")
    exporter.add_argument("--address", default=None,
                          help="address to listen on (default: FAKESCAN_METRICS_ADDRESS, 127.0.0.1)")
    exporter.set_defaults(handler=exporter_command)

    ping = subparsers.add_parser(
        "worker-ping", help="exit 0 if this host's worker answers a ping or is busy on a batch (a probe)")
    ping.add_argument("--node", help="Celery node name (default: the one worker running on this host)")
    ping.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply (default 5)")
    ping.set_defaults(handler=worker_ping_command)


def _register_nightly(subparsers: argparse._SubParsersAction) -> None:
    nightly = subparsers.add_parser(
        "nightly", help="scan what changed in SOURCE since its last successful scan (a full scan the first time)")
    nightly.add_argument("source", metavar="SOURCE", help="s3://bucket/prefix, file:///folder or a folder")
    nightly.add_argument("--detector", action="append", metavar="NAME",
                         help="detector name, folder or s3:// prefix; repeatable (default: FAKESCAN_DETECTORS)")
    nightly.add_argument("--overlap", default="1h", metavar="AGE",
                         help="also re-list objects this much older than the cut-off, for clock skew (default 1h)")
    nightly.add_argument("--ext", metavar=".jpg,.png", help="extensions to admit (default: common image types)")
    nightly.add_argument("--glob", action="append", metavar="PATTERN", help="fnmatch pattern on the key; repeatable")
    nightly.add_argument("--batch-size", type=int, metavar="N", help="objects per task (default: FAKESCAN_BATCH_SIZE)")
    nightly.add_argument("--wait", action="store_true", help="wait for the workers, showing progress")
    nightly.add_argument("--dry-run", action="store_true", help="print the scan command line and do nothing")
    nightly.set_defaults(handler=nightly_command)


def nightly_command(args: argparse.Namespace, settings: Settings) -> int:
    from scheduler.nightly import nightly_command as run

    return run(args, settings)


def exporter_command(args: argparse.Namespace, settings: Settings) -> int:
    from scheduler.exporter import run_forever

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    return run_forever(settings, args.port, args.address or settings.metrics_address)


def worker_ping_command(args: argparse.Namespace, settings: Settings) -> int:
    from worker.health import default_node, ping

    if args.timeout <= 0:
        raise UsageError(f"--timeout must be positive, got {args.timeout:g}")
    print(ping(settings, args.node or default_node(settings), args.timeout))
    return 0
