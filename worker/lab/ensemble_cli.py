"""``fakescan fit-ensemble``: fit the one-class ensemble on real images and write a detector folder.

numpy, torch and scikit-learn are imported inside the handler, so registering the command costs
nothing for ``fakescan status``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fakescan.settings import Settings

if TYPE_CHECKING:
    from worker.lab.data import LabelledSet


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fit-ensemble", help="fit the nine-member one-class ensemble on real images only",
        description="Fit the one-class ensemble on real images (a folder, a .zip or an s3:// prefix) and write "
                    "a detector folder usable with `fakescan scan --detector DIR`.")
    parser.add_argument("data", metavar="REAL_DATA", help="folder, .zip, .csv or s3:// prefix of real images")
    parser.add_argument("--out", required=True, type=Path, help="detector folder to write")
    parser.add_argument("--class-dir", default=None,
                        help="use only images under a folder of this name (default: a 'real' folder if any)")
    parser.add_argument("--holdout", type=float, default=0.2, help="share of images held out for calibration")
    parser.add_argument("--members", default=None,
                        help="comma-separated members (default: the nine; lite-knn is opt-in)")
    parser.add_argument("--weights", default=None, help="vote weights, e.g. deep-svdd=2,colour-gmm=0.5")
    parser.add_argument("--limit", type=int, default=None, help="use at most N images (a seeded random subset)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --limit draw and the fit (default 0)")
    parser.add_argument("--percentile", type=float, default=95.0,
                        help="threshold = this percentile of held-out real scores (default 95)")
    parser.add_argument("--vote", default="stouffer",
                        help="how member scores combine: stouffer (weighted Stouffer, default) or fisher")
    parser.add_argument("--tune-weights", metavar="LABELLED_DATA", default=None,
                        help="choose the vote weights on this labelled set (real/ and fake/ folders, a .zip, an "
                             "s3:// prefix or a CSV) instead of --weights; images also in REAL_DATA's fit "
                             "sample are left out")
    parser.add_argument("--tune-limit", type=int, default=4000,
                        help="with --tune-weights: at most N labelled images, half real, half fake (default 4000)")
    parser.add_argument("--size", type=int, default=32, help="working size in pixels (multiple of 16, >= 32)")
    parser.add_argument("--name", default="one-class-ensemble", help="detector name in the manifest")
    parser.add_argument("--svdd-backbone", metavar="LOCATION", default=None,
                        help="start Deep SVDD from this SigLIP / SigLIP2 checkpoint (folder or s3:// prefix) "
                             "instead of training its small ResNet from scratch")
    parser.add_argument("--svdd-backbone-blocks", metavar="N", type=int, default=0,
                        help="with --svdd-backbone: also fine-tune the top N encoder blocks (default 0: only the "
                             "projection trains; N > 0 runs the backbone over every image every epoch)")
    parser.add_argument("--lite-backbone", metavar="DETECTOR", default="default",
                        help="with the opt-in member lite-knn: the photo-crops detector whose ImageNet "
                             "EfficientNet-Lite backbone it uses (default: the bundled default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_fit_ensemble)


def run_fit_ensemble(args: argparse.Namespace, settings: Settings) -> int:
    from fakescan.errors import UsageError
    from worker.detectors.ensemble import parse_members
    from worker.detectors.ensemble.calibration import parse_weights
    from worker.lab.data import open_real
    from worker.lab.ensemble.fitting import FitOptions, check_options, fit_ensemble, peak_memory_mb
    from worker.lab.images import load_array

    if args.limit is not None and args.limit <= 0:
        raise UsageError("--limit must be positive")
    if args.tune_weights is not None and args.weights is not None:
        raise UsageError("give --weights or --tune-weights, not both")
    if args.tune_limit <= 0:
        raise UsageError("--tune-limit must be positive")
    members = parse_members(args.members)
    options = FitOptions(members=members, weights=parse_weights(args.weights, members), holdout=args.holdout,
                         percentile=args.percentile, size=args.size, seed=args.seed, vote=args.vote,
                         device=settings.resolved_device(), progress=not args.no_progress, name=args.name,
                         member_config={**svdd_backbone_config(args, members, settings),
                                        **lite_backbone_config(args, members, settings)})
    check_options(options)
    started = time.perf_counter()
    images = open_real(args.data, settings, args.class_dir).limited(args.limit, args.seed)
    array, _, skipped = load_array(images, args.size, options.progress)
    labelled = tuning_set(args, images, settings) if args.tune_weights else None
    tuning = load_array(labelled, args.size, options.progress)[:2] if labelled else None
    detector, report = fit_ensemble(array, options, tuning)
    if labelled is not None:
        detector.manifest["ensemble"]["tuning"].update(data=args.tune_weights, fingerprint=labelled.fingerprint())
    detector.manifest["training"] = {
        "data": args.data, "class_dir": args.class_dir, "fingerprint": images.fingerprint(),
        "n_images": int(len(array)), "n_skipped": len(skipped), "n_fit": report.n_fit,
        "n_scale": report.n_scale, "n_threshold": report.n_threshold, "seed": args.seed,
        "fit_seconds": round(time.perf_counter() - started, 1), "member_seconds": report.member_seconds,
        "peak_memory_mb": peak_memory_mb(), "device": options.device,
    }
    detector.save(args.out)
    print(json.dumps({"folder": str(args.out), "version": detector.version, "weights": detector.weights,
                      "vote_threshold": round(detector.vote_threshold, 4), **detector.manifest["training"]}))
    return 0


def tuning_set(args: argparse.Namespace, fitted: LabelledSet, settings: Settings) -> LabelledSet:
    """The --tune-weights labelled set; never an image the members are fitted on."""
    from worker.lab.data import open_labelled

    labelled = open_labelled(args.tune_weights, settings)
    if same_source(args.tune_weights, args.data):  # keys are relative to the source in both sets
        labelled = labelled.without({item.key for item in fitted.items})
    return labelled.limited(args.tune_limit, args.seed)


def same_source(first: str, second: str) -> bool:
    if first.startswith("s3://") or second.startswith("s3://"):
        return first.rstrip("/") == second.rstrip("/")
    return Path(first).expanduser().resolve() == Path(second).expanduser().resolve()


def svdd_backbone_config(args: argparse.Namespace, members: list[str],
                         settings: Settings) -> dict[str, dict[str, Any]]:
    """The deep-svdd member config of --svdd-backbone, its checkpoint checked before any image is read."""
    from fakescan.errors import UsageError
    from worker.detectors.ensemble.svdd_backbone import backbone_config

    if args.svdd_backbone is None:
        if args.svdd_backbone_blocks:
            raise UsageError("--svdd-backbone-blocks needs --svdd-backbone")
        return {}
    if "deep-svdd" not in members:
        raise UsageError("--svdd-backbone needs the deep-svdd member, which --members leaves out")
    return {"deep-svdd": backbone_config(args.svdd_backbone, args.svdd_backbone_blocks, settings)}


def lite_backbone_config(args: argparse.Namespace, members: list[str],
                         settings: Settings) -> dict[str, dict[str, Any]]:
    """The lite-knn member config: its backbone's detector, checked before any image is read."""
    from worker.detectors.ensemble.lite_knn import backbone_config

    return {"lite-knn": backbone_config(args.lite_backbone, settings)} if "lite-knn" in members else {}
