"""``fakescan serve``: run the HTTP API and review page with uvicorn. Torch-free."""

from __future__ import annotations

import argparse
import sys

from fakescan.settings import Settings

LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="HTTP API and review page over the results database")
    serve.add_argument("--host", default=None, help="address to bind (default 0.0.0.0 with tokens, else 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    serve.set_defaults(handler=run_serve)


def bind_address(requested: str | None, open_access: bool) -> tuple[str, str | None]:
    """The address to bind and what to say about it: no token configured means loopback only."""
    if not open_access:
        return requested or "0.0.0.0", None
    note = ("fakescan serve: no API token configured (FAKESCAN_API_TOKENS / FAKESCAN_API_TOKENS_FILE): "
            f"binding to {LOOPBACK} only, every local caller may read and review")
    if requested not in (None, LOOPBACK, "localhost"):
        note += f" (ignoring --host {requested})"
    return LOOPBACK, note


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from fakescan.api.app import create_app
    from fakescan.api.auth import load_access
    from fakescan.errors import UsageError

    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    access = load_access(settings)
    host, note = bind_address(args.host, access.open)
    if note:
        print(note, file=sys.stderr, flush=True)
    app = create_app(settings, access)
    uvicorn.run(app, host=host, port=args.port, log_level="info",
                server_header=False, access_log=False)
    return 0
