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
    parser.add_argument("--epochs", type=int, default=10, help="passes over the training images (default 10)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per optimiser step (default 128)")
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="AdamW weight decay (default 5e-4)")
    parser.add_argument("--label-smoothing", type=float, default=0.05, help="loss label smoothing (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, augmentation, init (default 0)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share held out for validation (0: none)")
    parser.add_argument("--no-augment", dest="augment", action="store_false", help="no random flips and shifts")
    parser.add_argument("--class-weights", action=argparse.BooleanOptionalAction, default=None,
                        help="weight the loss by inverse class frequency (default: the family's choice)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                        help='family option, e.g. --option widths=[64,128,256] --option convs_per_block=2')
    parser.add_argument("--backbone-weights", "--base", dest="backbone_weights",
                        help="safetensors or torchvision .pth (read weights-only), or for siglip2 the base "
                             "checkpoint; local or s3://")
    parser.add_argument("--limit", type=int, help="train on at most this many images, balanced (pilots)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--groups", metavar="CSV:COLUMN",
                        help="photo-crops: calibrate on whole groups held out (e.g. manifest.csv:source_repo)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(handler=run_train)


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
    from worker.lab.config import TrainConfig
    from worker.lab.train import train

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.val_fraction < 1:
        raise UsageError("--val-fraction must be in [0, 1)")
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, seed=args.seed, val_fraction=args.val_fraction, augment=args.augment,
        class_weights=args.class_weights, options=parse_options(args.option),
        backbone_weights=args.backbone_weights, limit=args.limit, device=settings.resolved_device(),
        precision=settings.precision, threads=args.threads, groups=args.groups,
    )
    command = shlex.join(["fakescan", *sys.argv[1:]]) if Path(sys.argv[0]).name == "fakescan" else ""
    manifest = train(args.family, args.data, args.out, config, settings, command=command, name=args.name,
                     progress=args.progress).manifest
    summary = manifest["training"].get("validation_metrics") or {}
    print(json.dumps({"out": str(args.out), "version": manifest["version"],
                      **{k: summary.get(k) for k in ("n", "accuracy", "roc_auc") if summary}}))
    return 0


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="metrics of any detector on labelled images (fake = positive)")
    parser.add_argument("detector", help="detector name, folder or s3:// prefix")
    parser.add_argument("data", help="folder, .zip, .csv or s3:// prefix with real/ and fake/ inside")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    parser.add_argument("--report", type=Path, metavar="DIR", help="write metrics.json, a TSV report and PNG plots")
    parser.add_argument("--perturb", metavar="LIST", help="also measure under e.g. jpeg:75,resize:0.5,blur:1")
    parser.add_argument("--groups", metavar="CSV:COLUMN", action="append", default=[],
                        help="recall, false positives and AUC per group, e.g. manifest.csv:generator (repeatable)")
    parser.add_argument("--limit", type=int, help="evaluate at most this many images, balanced, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit draw (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.lab.data import item_groups, open_labelled
    from worker.lab.evaluate import evaluation, open_detector, score_set
    from worker.lab.perturb import parse_perturbations

    perturbations = parse_perturbations(args.perturb)
    detector = open_detector(args.detector, settings)
    labelled = open_labelled(args.data, settings).limited(args.limit, args.seed)
    keys = [item.key for item in labelled.items]
    groupings = {spec.rpartition(":")[2]: dict(zip(keys, item_groups(spec, labelled.items), strict=True))
                 for spec in args.groups}
    results = score_set(detector, labelled, perturbations, progress=args.progress)
    summary = evaluation(detector, labelled, results, groupings)
    if args.report:
        from worker.lab.report import write_report

        write_report(args.report, summary, results)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    conditions = {"clean": summary, **summary.get("perturbations", {})}
    print(f"{summary['detector']} {summary['version']} on {summary['data']} ({summary['n']} images, "
          f"threshold {summary['threshold']:.4g})")
    if summary["abstained"] or summary["errors"]:
        coverage = "-" if summary["coverage"] is None else f"{summary['coverage']:.1%}"
        print(f"scored {summary['n']}, no evidence either way {summary['abstained']} (coverage {coverage}), "
              f"unreadable {summary['errors']}: metrics are over the scored images")
    print(f"{'condition':<14}{'accuracy':>9}{'precision':>10}{'recall':>8}{'f1':>8}{'roc_auc':>9}{'ap':>8}{'ece':>8}")
    for name, m in conditions.items():
        values = [m[k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "average_precision", "ece")]
        print(f"{name:<14}" + "".join(f"{'-' if v is None else f'{v:.4f}':>{w}}"
                                      for v, w in zip(values, (9, 10, 8, 8, 9, 8, 8), strict=True)))
    for column, groups in summary.get("groups", {}).items():
        width = max(len(name) for name in [column, *groups]) + 2
        print(f"{column:<{width}}{'fake':>6}{'real':>6}{'recall':>8}{'fpr':>8}{'roc_auc':>9}")
        for name, g in groups.items():
            cells = "".join(f"{'-' if g[k] is None else f'{g[k]:.4f}':>{w}}"
                            for k, w in (("recall", 8), ("false_positive_rate", 8), ("roc_auc", 9)))
            print(f"{name:<{width}}{g['n_fake']:>6}{g['n_real']:>6}{cells}")


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("calibrate",
                                   help="choose a detector's threshold and uncertain band on labelled data")
    parser.add_argument("detector", help="detector name or local folder (its fakescan.json is rewritten)")
    parser.add_argument("data", nargs="?", help="folder, .zip, .csv or s3:// prefix with real/ and fake/ inside")
    parser.add_argument("--from-reviews", action="store_true",
                        help="use reviewed objects (confirmed-fake / confirmed-real) as the labelled data")
    parser.add_argument("--scan", type=int, metavar="SCAN_ID", help="with --from-reviews: only this scan's objects")
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-fpr", type=float, help="highest false-positive rate allowed on real images")
    goal.add_argument("--objective", choices=["macro-f1"], help="maximise macro F1 instead")
    parser.add_argument("--uncertain-band", type=float, default=0.0, metavar="W",
                        help="width of the score band around the threshold reported as 'uncertain'")
    parser.add_argument("--out", type=Path, help="write a calibrated copy here instead of rewriting in place")
    parser.add_argument("--limit", type=int, help="use at most this many images, balanced, drawn at random")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit draw (default 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.lab.calibrate import calibrate

    if args.target_fpr is not None and not 0 <= args.target_fpr < 1:
        raise UsageError("--target-fpr must be in [0, 1)")
    if not 0 <= args.uncertain_band < 1:
        raise UsageError("--uncertain-band must be in [0, 1)")
    labelled = _calibration_data(args, settings).limited(args.limit, args.seed)
    manifest = calibrate(args.detector, labelled, settings, args.target_fpr, args.objective, args.uncertain_band,
                         args.out, progress=args.progress)
    achieved = manifest["calibration"]["metrics"]
    print(json.dumps({"version": manifest["version"], **manifest["thresholds"],
                      "false_positive_rate": achieved["false_positive_rate"], "recall": achieved["recall"],
                      "accuracy": achieved["accuracy"]}))
    return 0


def _calibration_data(args: argparse.Namespace, settings: Settings) -> Any:
    from worker.lab.data import open_labelled
    from worker.lab.reviewed import open_reviewed

    if args.from_reviews == bool(args.data):
        raise UsageError("give either DATA or --from-reviews")
    if args.scan is not None and not args.from_reviews:
        raise UsageError("--scan only selects reviews: add --from-reviews")
    return open_reviewed(settings, args.scan) if args.from_reviews else open_labelled(args.data, settings)


def _register_explain(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("explain", help="write a detector's Grad-CAM / attention overlays for an image")
    parser.add_argument("detector", help="detector name, folder or s3:// prefix")
    parser.add_argument("image", help="image file or s3:// URI")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the PNG overlays")
    parser.set_defaults(handler=run_explain)


def run_explain(args: argparse.Namespace, settings: Settings) -> int:
    from worker.lab.explain import explain

    print(json.dumps(explain(args.detector, args.image, args.out, settings)))
    return 0
