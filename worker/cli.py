"""Worker-side commands; torch and the detectors are imported inside the handlers only.

``register`` calls one small ``_register_<command>`` function per command, so a new command is
one more function and one more line there.
"""

from __future__ import annotations

import argparse

from fakescan.errors import UsageError
from fakescan.settings import Settings

POOLS = ("prefork", "solo", "threads")  # mirrors worker.celery_app.POOLS without importing Celery at parse time


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_worker(subparsers)


def _register_worker(subparsers: argparse._SubParsersAction) -> None:
    worker = subparsers.add_parser(
        "worker", help="run a Celery worker that scores batches (needs FAKESCAN_BROKER_URL)",
        description="Consume fakescan.scan_batch tasks: fetch, decode, detect, write results.")
    worker.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="batches run at once (default 1: one model copy, torch uses every core for it)")
    worker.add_argument("--pool", choices=POOLS, default=None,
                        help="prefork (CPU default), solo (CUDA default: one process per GPU) or threads")
    worker.add_argument("--queues", default=None, metavar="Q[,Q]",
                        help="queues to consume (default: FAKESCAN_QUEUE)")
    worker.add_argument("--hostname", default=None, metavar="NAME",
                        help="Celery node name (default fakescan-PID@HOST: unique on the host)")
    worker.set_defaults(handler=worker_command)


def worker_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if not settings.broker_url:
        raise UsageError("no broker configured: set FAKESCAN_BROKER_URL (e.g. redis://host:6379/0); "
                         "without one, 'fakescan scan' runs the pipeline in-process")
    from worker.celery_app import check_pool, default_pool, worker_app
    from worker.health import unique_node_name

    pool = args.pool or default_pool(settings)
    check_pool(pool, settings)
    app = worker_app(settings)
    argv = ["worker", "--pool", pool, "--concurrency", str(args.concurrency),
            "--queues", args.queues or settings.queue,
            "--loglevel", (args.log_level or settings.log_level).upper(),
            "--hostname", args.hostname or unique_node_name()]
    app.worker_main(argv)
    return 0
