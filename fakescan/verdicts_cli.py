"""``fakescan verdicts``: combined verdicts per object (compute, list with explanations, policy). Torch-free."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, TextIO

from fakescan.errors import UsageError
from fakescan.settings import Settings

VERDICT_CHOICES = ("fake", "real", "uncertain", "none")


def register(subparsers: argparse._SubParsersAction) -> None:
    verdicts = subparsers.add_parser("verdicts", help="one combined verdict per object from every detector's result")
    sub = verdicts.add_subparsers(dest="verdicts_command", metavar="COMMAND", required=True)
    compute = sub.add_parser("compute", help="(re)compute combined verdicts from stored results")
    compute.add_argument("--scan", type=int, metavar="SCAN_ID", help="only this scan's objects and detector versions")
    _policy_option(compute)
    compute.set_defaults(handler=compute_command)

    listing = sub.add_parser("list", help="stored combined verdicts, optionally with the evidence that decided")
    listing.add_argument("--scan", type=int, metavar="SCAN_ID", help="only the objects this scan enqueued")
    listing.add_argument("--verdict", choices=VERDICT_CHOICES, help="only objects with this combined verdict")
    listing.add_argument("--explain", action="store_true", help="show the rule and evidence behind each verdict")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N objects")
    listing.add_argument("--format", choices=("table", "jsonl"), help="default: table on a terminal, else jsonl")
    _policy_option(listing)
    listing.set_defaults(handler=list_command)

    policy = sub.add_parser("policy", help="print the effective verdict policy and its version")
    _policy_option(policy)
    policy.set_defaults(handler=policy_command)


def _policy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", metavar="FILE",
                        help="JSON policy file (default: FAKESCAN_VERDICT_POLICY, else built in)")


def _policy(args: argparse.Namespace, settings: Settings) -> Any:
    from pathlib import Path

    from fakescan.verdicts import load_policy

    return load_policy(Path(args.policy) if args.policy else settings.verdict_policy)


def policy_command(args: argparse.Namespace, settings: Settings) -> int:
    policy = _policy(args, settings)
    print(json.dumps({"version": policy.version, **policy.as_json()}, indent=2))
    return 0


def compute_command(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db.database import open_database
    from fakescan.db.verdicts import recompute

    policy = _policy(args, settings)
    with open_database(settings) as database:
        counts = recompute(database.sessions, policy, args.scan)
    total = sum(counts.values())
    parts = ", ".join(f"{verdict or 'none'} {counts[verdict]}" for verdict in ("fake", "real", "uncertain", None)
                      if counts.get(verdict))
    print(f"{total} verdicts under policy {policy.version}" + (f": {parts}" if parts else ""))
    return 0


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.db.database import open_database
    from fakescan.db.verdicts import iter_verdicts

    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit cannot be negative, got {args.limit}")
    policy = _policy(args, settings)
    out_format = args.format or ("table" if sys.stdout.isatty() else "jsonl")
    with open_database(settings) as database, database.sessions() as session:
        rows = iter_verdicts(session, policy.version, args.scan, args.verdict, args.limit)
        (_write_table if out_format == "table" else _write_jsonl)(rows, sys.stdout, args.explain)
        sys.stdout.flush()
    return 0


def _write_jsonl(rows: Iterable[dict[str, Any]], out: TextIO, explain: bool) -> None:
    for row in rows:
        record = {key: value for key, value in row.items() if explain or key != "explanation"}
        record["decided_at"] = row["decided_at"].isoformat() if row["decided_at"] else None
        out.write(json.dumps(record) + "\n")


def _write_table(rows: Iterable[dict[str, Any]], out: TextIO, explain: bool) -> None:
    out.write(f"{'VERDICT':<9} {'SCORE':>6} {'RULE':<11} URI\n")
    for row in rows:
        explanation = row["explanation"] or {}
        score = f"{row['score']:.3f}" if row["score"] is not None else "-"
        out.write(f"{row['verdict'] or '-':<9} {score:>6} {explanation.get('rule', '-'):<11} {row['uri']}\n")
        if explain:
            for line in explain_lines(explanation):
                out.write(f"    {line}\n")


def explain_lines(explanation: dict[str, Any]) -> list[str]:
    """The explanation JSON as short human lines: the deciding rule, then what counted and what did not."""
    lines = [str(explanation.get("summary", ""))]
    for item in explanation.get("contributions") or []:
        finding = f" [{item.get('summary') or item['finding']}]" if item.get("finding") else ""
        lines.append(f"{item['detector']}@{item['version']}: score {item['score']:.3f} x weight {item['weight']:g}"
                     + finding)
    for item in explanation.get("overruled") or []:
        lines.append(f"{item['detector']}@{item['version']}: score {item['score']:.3f}, overruled by provenance")
    for item in explanation.get("skipped") or []:
        lines.append(f"{item['detector']}@{item['version']}: not counted ({item['reason']})")
    return lines
