"""``fakescan train | evaluate | calibrate | explain``; torch is imported inside the handlers only."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from fakescan.errors import UsageError
from fakescan.settings import Settings


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_calibrate(subparsers)
    _register_explain(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a detector family on labelled images (real/ and fake/)")
    parser.add_argument("family", help="a trainable family, e.g. compact-cnn, mobilenet-v2, efficientnet-attention")
    parser.add_argument("data", help="folder, .zip, .csv (path,label) or s3:// prefix with real/ and fake/ inside")
    parser.add_argument("--out", required=True, type=Path, help="detector folder to write (rewritten every epoch)")
    parser.add_argument("--name", help="detector name in the manifest (default: the folder's name)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--label-smoothing", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share held out for validation (0: none)")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no random flips and shifts")
    parser.add_argument("--class-weights", action="store_true", help="weight the loss by inverse class frequency")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                        help='family option, e.g. --option widths=[64,128,256] --option convs_per_block=2')
    parser.add_argument("--backbone-weights", help="safetensors or torchvision .pth (read weights-only), local or s3://")
    parser.add_argument("--limit", type=int, help="train on at most this many images, balanced (pilots)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.set_defaults(handler=run_train, class_weights=None)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text  # a bare word such as b0
    return options


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    from worker.training.config import TrainConfig
    from worker.training.trainer import train

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.val_fraction < 1:
        raise UsageError("--val-fraction must be in [0, 1)")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, seed=args.seed, val_fraction=args.val_fraction, augment=args.augment,
        class_weights=bool(args.class_weights), options=parse_options(args.option),
        backbone_weights=args.backbone_weights, limit=args.limit, device=settings.resolved_device(),
        precision=settings.precision, threads=args.threads,
    )
    command = shlex.join(["fakescan", *sys.argv[1:]]) if Path(sys.argv[0]).name == "fakescan" else ""
    manifest = train(args.family, args.data, args.out, config, settings, command=command, name=args.name,
                     progress=args.progress)
    summary = manifest["training"].get("validation_metrics") or {}
    print(json.dumps({"out": str(args.out), "version": manifest["version"],
                      **{k: summary.get(k) for k in ("n", "accuracy", "roc_auc") if summary}}))
    return 0


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    pass


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    pass


def _register_explain(subparsers: argparse._SubParsersAction) -> None:
    pass
