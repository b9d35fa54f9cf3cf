"""Query-side commands: ``results``, ``detectors``, ``db``. None of them imports torch."""

from __future__ import annotations

import argparse
import sys

from fakescan.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    detectors = subparsers.add_parser("detectors", help="list detector families and named detectors")
    detectors_sub = detectors.add_subparsers(dest="detectors_command", required=True)
    listing = detectors_sub.add_parser("list", help="families and named detectors with versions")
    listing.set_defaults(handler=list_detectors)

    database = subparsers.add_parser("db", help="results database schema")
    database_sub = database.add_subparsers(dest="db_command", required=True)
    upgrade = database_sub.add_parser("upgrade", help="migrate the schema to this fakescan's head")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=db_upgrade)
    current = database_sub.add_parser("current", help="print the schema revision")
    current.set_defaults(handler=db_current)


def list_detectors(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan import catalog

    out = sys.stdout
    out.write("FAMILIES\n")
    for info in sorted(catalog.families().values(), key=lambda i: i.name):
        out.write(f"  {info.name:<24} {info.summary}\n")
    out.write("DETECTORS\n")
    for name, ref in sorted(catalog.named_detectors(settings.home).items()):
        out.write(f"  {name:<24} family={ref.family} version={ref.version}\n")
    return 0


def db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db import migrate

    migrate.upgrade(settings, args.revision)
    print(f"database at {migrate.head_revision(settings) if args.revision == 'head' else args.revision}")
    return 0


def db_current(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db import engine, migrate

    print(migrate.current_revision(engine.make_engine(settings)) or "empty")
    return 0
