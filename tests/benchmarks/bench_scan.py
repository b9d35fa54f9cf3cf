"""Benchmark: a scan against the model alone and against the naive loop, on photo-sized JPEGs.

Run (from the repository root, on an otherwise idle machine if you can)::

    nice -n 10 .venv/bin/python -m tests.benchmarks.bench_scan --baseline main

What it does, all in one run:

- writes photo-like JPEGs (``--photos-2mp`` at 1632x1224 and ``--photos-12mp`` at 4000x3000,
  see :mod:`tests.benchmarks.photos`) and builds a SigLIP-base-sized image classifier with random
  weights (transformers config: 12 layers, 768 wide, 224 px, ~93 M parameters);
- **model alone**: random 224x224 tensors, batch 32, fp32, the model's forward only;
- **naive loop**: the ten lines a user writes (open, ``convert("RGB")``, the checkpoint's own
  image processor, one model call and one INSERT + COMMIT into SQLite per image);
- **scan**: ``fakescan scan FOLDER --detector CKPT`` embedded, provenance off, in a child process
  (so its peak RSS is the worker's); images/s is over the time its batches ran, without the model
  load (which the worker logs): the rate a long scan runs at. The end-to-end rate (which also pays
  the interpreter's start, the schema and the listing once) is printed per scan as well;
- the same scan with the bundled compact CNN (``--cnn``, 32x32 input);
- with ``--baseline REV``: the same two scans with the code of git revision ``REV`` (exported
  with ``git archive`` to a temporary folder), so "today's code" is measured in the same run;
- the score change of scaled decoding (DCT scaling / reduce) against a full decode, per detector,
  on the generated photos and on ``--real-photos DIR`` when given (JPEGs of real photos);
- int8 dynamic quantisation (``FAKESCAN_PRECISION=int8``) and, on a CPU with bf16 arithmetic
  (AVX512-BF16 or AMX), bf16: the model alone at that precision (beside the fp32 model alone,
  measured again next to it), a scan against it, against the fp32 naive loop and the fp32 scan,
  and the score change against fp32 of SigLIP-base and the compact CNN (``--no-int8``,
  ``--no-bf16`` skip them);
  ``torch.compile`` of the model alone (``--compile``), decode:inference thread splits
  (``--threads 1:2 2:1``), a scan without the next-batch read-ahead (``--read-ahead``) and scans
  with other settings (``--variant FAKESCAN_INFERENCE_CHUNK=8``) as extra scans;
- with ``--s3-latency MS ...``: 2 MP JPEGs on S3 behind a proxy adding a first-byte latency, scanned
  with the compact CNN embedded and by Celery workers (threads x1 with and without the next-batch
  read-ahead, prefork x1), in alternating rounds (:mod:`tests.benchmarks.s3_scans`; ``--s3-only``
  runs only these);
- memory of every scan: peak RSS (VmHWM), split by what is mapped at the peak (``/proc/self/smaps``):
  the safetensors weights, the CUDA libraries, other libraries and anonymous memory; the peak
  anonymous RSS and the RSS right after ``import torch``. Every row carries the load average.

Prints one table; every ratio is between figures of this run. Not a test: pytest does not collect it.
On a CUDA machine: ``--device cuda --precision bf16 --gpu-decode`` produces the same table there.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PRECISIONS = {"int8": "int8 dynamic", "bf16": "bf16 weights under CPU autocast"}
SIGLIP_BASE = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 224, "patch_size": 16}

# Runs inside the child: a plain `fakescan scan` (any version of the code), timed, with the model
# load taken from the worker's own log line and the peak RSS of the process.
CHILD = r"""
import json, logging, re, sys, threading, time
def status():
    lines = (line.split(":", 1) for line in open("/proc/self/status"))
    return {key: int(value.split()[0]) / 1024 for key, value in lines if value.strip().endswith("kB")}
CUDA = re.compile(r"lib(torch_cuda|c10_cuda|cu|nv)")
def kind(path):
    if not path or path.startswith("["):
        return "anonymous"
    if path.endswith(".safetensors"):
        return "weights"
    name = path.rsplit("/", 1)[-1]
    return "cuda" if "/nvidia/" in path or CUDA.match(name) else "libraries"
def breakdown():  # resident MB per kind of mapping, from /proc/self/smaps
    kinds, current = dict.fromkeys(("weights", "cuda", "libraries", "anonymous"), 0.0), "anonymous"
    for line in open("/proc/self/smaps"):
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            parts = line.split()
            current = kind(parts[5] if len(parts) > 5 else "")
        elif line.startswith("Rss:"):
            kinds[current] += int(line.split()[1]) / 1024
    return kinds
import torch  # the scan imports it anyway; its libraries alone are a large part of a worker's RSS
torch_rss = status()["VmRSS"]
torch_kinds = breakdown()
peak_anon = [0.0]
peak = [0.0, {}]
def sample():
    while True:
        now = status()
        peak_anon[0] = max(peak_anon[0], now["RssAnon"])
        if now["VmRSS"] > peak[0] + 8:  # the mappings behind the peak RSS (within 8 MB)
            peak[0], peak[1] = now["VmRSS"], breakdown()
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
records = []
class Grab(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("loaded detector"):
            records.append(float(record.args[-1]))
logging.getLogger("worker.cache").addHandler(Grab())
logging.getLogger("worker.cache").setLevel(logging.INFO)
import worker.inprocess  # the embedded dispatcher: time the batches it runs (the worker's share of the scan)
batch_seconds = [0.0]
run_batch = worker.inprocess.process_batch
def timed_batch(*args, **kwargs):
    begun = time.perf_counter()
    try:
        return run_batch(*args, **kwargs)
    finally:
        batch_seconds[0] += time.perf_counter() - begun
worker.inprocess.process_batch = timed_batch
from fakescan.cli import main
started = time.perf_counter()
code = main(sys.argv[1:])
seconds = time.perf_counter() - started
# VmHWM, not getrusage: ru_maxrss carries the parent's peak across fork+exec on Linux
figures = {"code": code, "seconds": seconds, "batch_seconds": batch_seconds[0], "load_seconds": sum(records),
           "max_rss_mb": status()["VmHWM"],
           "max_anon_mb": peak_anon[0], "torch_rss_mb": torch_rss, "peak_kinds": peak[1], "torch_kinds": torch_kinds}
print("BENCH " + json.dumps(figures))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos-2mp", type=int, default=32)
    parser.add_argument("--photos-12mp", type=int, default=32)
    parser.add_argument("--photos-dir", type=Path, help="reuse generated photos between runs (created if missing)")
    parser.add_argument("--baseline", metavar="REV", help="also scan with the code of this git revision (e.g. main)")
    parser.add_argument("--cnn", default="cifake", help="the compact CNN detector (name or folder)")
    parser.add_argument("--real-photos", type=Path, help="a folder of real-photo JPEGs for the score-change check")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the model alone")
    parser.add_argument("--threads", type=_split, nargs="*", default=[], metavar="DECODE:INFERENCE",
                        help="also scan SigLIP-base with these decode:inference thread counts, e.g. 1:2 2:1")
    parser.add_argument("--large-pngs", type=int, default=8, metavar="N",
                        help="peak RSS of one batch of N small 7999x7999 PNGs, with and without the pixel budget")
    parser.add_argument("--score-images", type=int, default=48, metavar="N",
                        help="at most N images per set for the score-change checks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu-decode", action="store_true", help="with --device cuda: also scan with nvJPEG decoding")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--read-ahead", action="store_true",
                        help="also scan SigLIP-base without the next-batch read-ahead (FAKESCAN_READ_AHEAD=false)")
    parser.add_argument("--variant", nargs="*", default=[], metavar="NAME=VALUE",
                        help="also scan SigLIP-base with this setting, e.g. FAKESCAN_INFERENCE_CHUNK=8")
    parser.add_argument("--s3-latency", type=float, nargs="*", default=[], metavar="MS",
                        help="also scan --s3-photos 2 MP JPEGs on S3 (moto behind a proxy adding MS ms per request) "
                             "with the compact CNN: embedded and Celery workers, read-ahead on and off")
    parser.add_argument("--s3-photos", type=int, default=192, metavar="N")
    parser.add_argument("--s3-fetch-concurrency", type=int, metavar="N",
                        help="FAKESCAN_FETCH_CONCURRENCY of every S3 scan (default: the setting's default, 8)")
    parser.add_argument("--s3-rounds", type=int, default=3, metavar="N", help="alternating rounds per configuration")
    parser.add_argument("--s3-only", action="store_true", help="only the --s3-latency rows")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 rows (CPU)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows (a CPU with bf16 arithmetic)")
    parser.add_argument("--no-cnn", action="store_true", help="skip the compact CNN scans")
    parser.add_argument("--no-score-change", action="store_true", help="skip the score-change checks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fakescan-bench-scan-") as scratch:
        run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> None:
    import torch

    from tests.benchmarks.photos import write_photos

    if args.s3_only:
        print_rows(s3_section(args, scratch, {"FAKESCAN_DEVICE": args.device, "FAKESCAN_PRECISION": args.precision}))
        return
    photos_dir = args.photos_dir or scratch / "photos"
    started = time.perf_counter()
    paths = write_photos(photos_dir, {"2mp": args.photos_2mp, "12mp": args.photos_12mp})
    print(f"photos: {len(paths)} JPEGs in {photos_dir} ({time.perf_counter() - started:.0f}s to write), "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)
    checkpoint = build_siglip_base(scratch / "siglip-base")
    rows: list[tuple[str, str]] = []
    env = {"FAKESCAN_DEVICE": args.device, "FAKESCAN_PRECISION": args.precision}

    model_alone = model_alone_rate(checkpoint, len(paths), args.device, args.precision)
    rows.append((f"SigLIP-base model alone (random 224x224, batch 32, {args.precision})",
                 f"{model_alone:.2f} img/s ({load()})"))
    naive = naive_loop_rate(checkpoint, paths, scratch / "naive.db", args.device)
    rows.append(("naive 10-line loop", f"{naive:.2f} img/s ({load()})"))
    scan = scan_rate(REPO, photos_dir, str(checkpoint), scratch / "home-siglip", env)
    rows.append(("fakescan scan, SigLIP-base", f"{scan['rate']:.2f} img/s = {scan['rate'] / model_alone:.2f}x model "
                 f"alone, {scan['rate'] / naive:.2f}x naive; {memory(scan)}"))
    if args.gpu_decode:
        gpu = scan_rate(REPO, photos_dir, str(checkpoint), scratch / "home-siglip-gpu",
                        {**env, "FAKESCAN_GPU_DECODE": "true"})
        rows.append(("fakescan scan, SigLIP-base, JPEGs decoded on the GPU", f"{gpu['rate']:.2f} img/s = "
                     f"{gpu['rate'] / model_alone:.2f}x model alone; peak RSS {gpu['max_rss_mb']:.0f} MB"))
    if args.read_ahead:
        alone = scan_rate(REPO, photos_dir, str(checkpoint), scratch / "home-siglip-no-read-ahead",
                          {**env, "FAKESCAN_READ_AHEAD": "false"})
        rows.append(("  SigLIP scan without the next-batch read-ahead", f"{alone['rate']:.2f} img/s: read-ahead "
                     f"{scan['rate'] / alone['rate']:.2f}x; {memory(alone)}"))
    for number, variant in enumerate(args.variant):
        name, _, value = variant.partition("=")
        other = scan_rate(REPO, photos_dir, str(checkpoint), scratch / f"home-variant-{number}", {**env, name: value})
        rows.append((f"  SigLIP scan with {name}={value}", f"{other['rate']:.2f} img/s = "
                     f"{other['rate'] / scan['rate']:.2f}x the default; {memory(other)}"))
    for precision in cpu_precisions(args):
        rows += precision_rows(precision, checkpoint, photos_dir, paths, scratch, env, naive, scan)
    if not args.no_cnn:
        cnn = scan_rate(REPO, photos_dir, args.cnn, scratch / "home-cnn", env)
        rows.append(("fakescan scan, compact CNN", f"{cnn['rate']:.2f} img/s; {memory(cnn)}"))
    if args.baseline and not args.no_cnn:
        old_tree = export_revision(args.baseline, scratch / "baseline")
        old_cnn = scan_rate(old_tree, photos_dir, args.cnn, scratch / "home-cnn-old", env)
        rows.append((f"  {args.baseline}: compact CNN", f"{old_cnn['rate']:.2f} img/s -> now "
                     f"{cnn['rate'] / old_cnn['rate']:.1f}x; {memory(old_cnn)}"))
    if args.baseline:
        old_tree = export_revision(args.baseline, scratch / "baseline")
        old = scan_rate(old_tree, photos_dir, str(checkpoint), scratch / "home-siglip-old", env)
        rows.append((f"  {args.baseline}: SigLIP-base", f"{old['rate']:.2f} img/s = {old['rate'] / model_alone:.2f}x "
                     f"model alone -> now {scan['rate'] / old['rate']:.2f}x; {memory(old)}"))
    if args.threads:
        for decode, inference in args.threads:
            threads = {"FAKESCAN_DECODE_THREADS": str(decode), "FAKESCAN_INFERENCE_THREADS": str(inference)}
            split = scan_rate(REPO, photos_dir, str(checkpoint), scratch / f"home-t{decode}{inference}",
                              {**env, **threads})
            rows.append((f"  SigLIP scan, {decode} decode / {inference} inference threads",
                         f"{split['rate']:.2f} img/s = {split['rate'] / scan['rate']:.2f}x the default split"))
    if args.compile:
        try:
            compiled, compile_seconds = compiled_rate(checkpoint, len(paths))
            rows.append(("SigLIP-base model alone, torch.compile", f"{compiled:.2f} img/s = "
                         f"{compiled / model_alone:.2f}x eager (compiling took {compile_seconds:.0f}s)"))
        except Exception as error:  # inductor needs a C compiler and Triton/OpenMP headers
            rows.append(("SigLIP-base model alone, torch.compile", f"failed: {type(error).__name__}: "
                         f"{str(error).splitlines()[0][:120]}"))
    if args.large_pngs:
        old_tree = export_revision(args.baseline, scratch / "baseline") if args.baseline else None
        rows += pixel_budget_rows(scratch, args.large_pngs, args.cnn, env, old_tree)
    if not args.no_score_change:
        rows += score_changes(checkpoint, args.cnn, paths, args.real_photos, args.score_images, cpu_precisions(args))
    if args.s3_latency:
        rows += s3_section(args, scratch, env)
    print_rows(rows)


def print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def s3_section(args: argparse.Namespace, scratch: Path, env: dict[str, str]) -> list[tuple[str, str]]:
    """The read-ahead on object storage (tests/benchmarks/s3_scans.py)."""
    from tests.benchmarks.photos import write_photos
    from tests.benchmarks.s3_scans import s3_rows

    if not args.s3_latency:
        raise SystemExit("--s3-only needs --s3-latency MS [MS ...]")
    photos = write_photos(scratch / "s3-photos", {"2mp": args.s3_photos})
    if args.s3_fetch_concurrency:
        env = {**env, "FAKESCAN_FETCH_CONCURRENCY": str(args.s3_fetch_concurrency)}
    return s3_rows(photos, args.cnn, args.s3_latency, args.s3_rounds, scratch, env)


def load() -> str:
    """The 1-minute load average now: other work on the machine moves every figure."""
    return f"load {os.getloadavg()[0]:.1f}"


def memory(figures: dict[str, Any]) -> str:
    kinds = figures.get("peak_kinds") or {}
    where = (f" = weights {kinds['weights']:.0f} + CUDA libraries {kinds['cuda']:.0f} + other libraries "
             f"{kinds['libraries']:.0f} + anonymous {kinds['anonymous']:.0f}" if kinds else "")
    return (f"end to end {figures['end_to_end_rate']:.2f} img/s; peak RSS {figures['max_rss_mb']:.0f} MB{where} "
            f"(peak anonymous {figures['max_anon_mb']:.0f} MB; {figures['torch_rss_mb']:.0f} MB after import torch; "
            f"load {figures['load']:.1f})")


def cpu_precisions(args: argparse.Namespace) -> list[str]:
    """The CPU precisions measured beside fp32: int8, and bf16 where the CPU computes it natively."""
    from worker.detectors.device import cpu_runs_bf16

    if args.device != "cpu":
        return []
    return [name for name, wanted in (("int8", not args.no_int8), ("bf16", not args.no_bf16 and cpu_runs_bf16()))
            if wanted]


def precision_rows(precision: str, checkpoint: Path, photos: Path, paths: list[Path], scratch: Path,
                   env: dict[str, str], naive: float, fp32_scan: dict[str, Any]) -> list[tuple[str, str]]:
    """The model alone and a scan at ``precision`` (``FAKESCAN_PRECISION``), against the fp32 naive loop."""
    alone = model_alone_rate(checkpoint, len(paths), "cpu", precision)
    fp32_alone = model_alone_rate(checkpoint, len(paths), "cpu", "fp32")  # again, minutes later: the load moves
    measured_at = load()
    scan = scan_rate(REPO, photos, str(checkpoint), scratch / f"home-siglip-{precision}",
                     {**env, "FAKESCAN_PRECISION": precision})
    rows = [(f"SigLIP-base model alone, {PRECISIONS[precision]}", f"{alone:.2f} img/s = {alone / fp32_alone:.2f}x "
             f"fp32 alone ({fp32_alone:.2f} img/s, measured next to it; {measured_at})")]
    versus = ""
    if precision == "bf16":  # the ten lines with the model cast too: what a user who knows bf16 writes
        import torch

        naive_bf16 = naive_loop_rate(checkpoint, paths, scratch / "naive-bf16.db", "cpu", torch.bfloat16)
        rows.append(("naive 10-line loop, bf16 model and inputs", f"{naive_bf16:.2f} img/s ({load()})"))
        versus = f", {scan['rate'] / naive_bf16:.2f}x the bf16 naive loop"
    rows.append((f"fakescan scan, SigLIP-base, {precision}", f"{scan['rate']:.2f} img/s = {scan['rate'] / alone:.2f}x "
                 f"{precision} model alone, {scan['rate'] / naive:.2f}x the fp32 naive loop{versus}, "
                 f"{scan['rate'] / fp32_scan['rate']:.2f}x the fp32 scan; {memory(scan)}"))
    return rows


def build_siglip_base(folder: Path) -> Path:
    """A SigLIP-base-sized SiglipForImageClassification (random weights) and its processor, saved."""
    import torch
    from transformers import SiglipConfig, SiglipForImageClassification, SiglipImageProcessor

    config = SiglipConfig(vision_config=SIGLIP_BASE,
                          text_config={"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37,
                                       "num_hidden_layers": 1, "num_attention_heads": 2},
                          num_labels=2, id2label={0: "real", 1: "fake"}, label2id={"real": 0, "fake": 1})
    torch.manual_seed(0)
    model = SiglipForImageClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    processor = SiglipImageProcessor(size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3,
                                     image_std=[0.5] * 3, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                     do_resize=True)
    processor.save_pretrained(folder)
    parameters = sum(p.numel() for part in (model.vision_model, model.classifier) for p in part.parameters())
    print(f"SigLIP-base-sized checkpoint: {parameters / 1e6:.1f} M parameters (vision tower + head)", flush=True)
    return folder


def load_model(checkpoint: Path, device: str, precision: str) -> Any:
    from transformers import AutoModelForImageClassification

    from worker.detectors.device import place

    model = AutoModelForImageClassification.from_pretrained(checkpoint, local_files_only=True)
    return place(model, device, precision)


def model_alone_rate(checkpoint: Path, count: int, device: str, precision: str) -> float:
    import torch

    from worker.detectors.device import autocast

    model = load_model(checkpoint, device, precision)
    batch = torch.randn(32, 3, 224, 224, device=device)
    with torch.inference_mode(), autocast(device, precision):
        model(pixel_values=batch[:4])  # warm-up
        started, done = time.perf_counter(), 0
        while done < count:
            model(pixel_values=batch).logits.float().cpu()
            done += len(batch)
    return done / (time.perf_counter() - started)


def compiled_rate(checkpoint: Path, count: int) -> tuple[float, float]:
    import torch

    model = torch.compile(load_model(checkpoint, "cpu", "fp32"))
    batch = torch.randn(32, 3, 224, 224)
    with torch.inference_mode():
        started = time.perf_counter()
        model(pixel_values=batch)
        compile_seconds = time.perf_counter() - started
        started, done = time.perf_counter(), 0
        while done < count:
            model(pixel_values=batch).logits.float()
            done += len(batch)
    return done / (time.perf_counter() - started), compile_seconds


def naive_loop_rate(checkpoint: Path, paths: list[Path], database: Path, device: str, dtype: Any = None) -> float:
    """The ten lines, at fp32 or (``dtype``) with the model and its inputs cast, as a user would."""
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(checkpoint).to(device, dtype).eval()
    processor = AutoImageProcessor.from_pretrained(checkpoint)
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE results (path TEXT, score REAL)")
    started = time.perf_counter()
    for path in paths:  # the ten lines
        image = Image.open(path).convert("RGB")
        inputs = processor(images=image, return_tensors="pt").to(device, dtype)
        with torch.no_grad():
            score = model(**inputs).logits.softmax(-1)[0, 1].item()
        db.execute("INSERT INTO results VALUES (?, ?)", (str(path), score))
        db.commit()
    rate = len(paths) / (time.perf_counter() - started)
    db.close()
    return rate


def scan_rate(tree: Path, photos: Path | str, detector: str | None, home: Path, env: dict[str, str],
              count: int | None = None) -> dict[str, Any]:
    """One embedded ``fakescan scan`` in a child process running the code in ``tree``.

    Provenance is off unless ``env`` turns it on; ``detector=None`` scans with that code's
    default detectors (no ``--detector``). ``photos`` may be an ``s3://`` source; give its ``count``."""
    child_env = {**os.environ, "FAKESCAN_SCAN_PROVENANCE": "false", "FAKESCAN_BATCH_SIZE": "32",
                 "FAKESCAN_LOG_LEVEL": "WARNING", **env, "PYTHONPATH": str(tree), "FAKESCAN_HOME": str(home)}
    child_env.pop("FAKESCAN_DATABASE_URL", None)
    child_env.pop("FAKESCAN_BROKER_URL", None)
    started_load = os.getloadavg()[0]
    chosen = ["--detector", detector] if detector else []
    result = subprocess.run([sys.executable, "-c", CHILD, "scan", str(photos), *chosen],
                            cwd=tree, env=child_env, capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    if result.returncode != 0 or not lines:
        raise SystemExit(f"scan in {tree} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    figures = json.loads(lines[-1][len("BENCH "):])
    figures["load"] = (started_load + os.getloadavg()[0]) / 2  # at its start and its end
    if figures["batch_seconds"] <= figures["load_seconds"]:
        raise SystemExit(f"scan in {tree} ran no batch: does that code know the detector {detector!r}? "
                         "(give a detector folder for an older revision)")
    if count is None:
        count = sum(1 for path in Path(photos).rglob("*") if path.is_file())
    # the worker's throughput: the batches' time without the model load (what a long scan runs at);
    # end to end it also pays the interpreter's start, the schema and the listing once per scan
    figures["rate"] = count / (figures["batch_seconds"] - figures["load_seconds"])
    figures["end_to_end_rate"] = count / (figures["seconds"] - figures["load_seconds"])
    print(f"  scan {detector or 'default'} ({tree.name}): {figures}", flush=True)
    return figures


def pixel_budget_rows(scratch: Path, count: int, cnn: str, env: dict[str, str],
                      old_tree: Path | None) -> list[tuple[str, str]]:
    """Peak RSS of a batch of ``count`` 64 MP PNGs (a few KB each) with the default budget and without one."""
    from PIL import Image

    folder = scratch / "large-pngs"
    folder.mkdir()
    for index in range(count):
        Image.new("RGB", (7999, 7999), (index * 20 % 256, 90, 160)).save(folder / f"{index}.png", compress_level=9)
    size = sum(path.stat().st_size for path in folder.iterdir()) // count
    budget = scan_rate(REPO, folder, cnn, scratch / "home-png-budget", env)
    unbounded = scan_rate(REPO, folder, cnn, scratch / "home-png-unbounded",
                          {**env, "FAKESCAN_PIXEL_BUDGET": str(10**12)})
    rows = [(f"batch of {count} 7999x7999 PNGs ({size // 1024} KB each), compact CNN",
             f"with the pixel budget {memory(budget)}; without {memory(unbounded)}")]
    if old_tree is not None:
        old = scan_rate(old_tree, folder, cnn, scratch / "home-png-old", env)
        rows.append((f"  {old_tree.name} code, same batch", memory(old)))
    return rows


def export_revision(revision: str, folder: Path) -> Path:
    if folder.exists():
        return folder
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def score_changes(checkpoint: Path, cnn: str, paths: list[Path], real_photos: Path | None,
                  limit: int = 48, precisions: list[str] | None = None) -> list[tuple[str, str]]:
    """Largest and mean |score(scaled decode) - score(full decode)| per detector, and verdict flips;
    then |score(precision) - score(fp32)| of each detector, on the images a scan decodes for it."""

    from fakescan import catalog
    from fakescan.decode import decode_image
    from fakescan.settings import load_settings
    from worker.detectors import load_detector
    from worker.stream import decode_side

    settings = load_settings(scan_provenance=False)
    rows = []
    detectors = {"SigLIP-base (random weights)": load_detector(catalog.resolve(str(checkpoint), settings), settings),
                 "compact CNN": load_detector(catalog.resolve(cnn, settings), settings)}
    at_precision = {(name, precision): load_detector(catalog.resolve(reference, settings),
                                                    load_settings(scan_provenance=False, precision=precision))
                    for precision in precisions or [] for name, reference in (
                        ("SigLIP-base (random weights)", str(checkpoint)), ("compact CNN", cnn))}
    sets = {"generated photos": paths[::2][:limit]}
    if real_photos:
        sets["real photos"] = sorted(real_photos.rglob("*.jpg"))[:limit]
    for set_name, files in sets.items():
        blobs = [file.read_bytes() for file in files]
        for name, detector in detectors.items():
            side = decode_side(detector.decode_need())  # what a scan decodes for this detector alone
            full = [p.score for p in detector.predict([decode_image(b, settings.max_image_pixels) for b in blobs])]
            images = [decode_image(b, settings.max_image_pixels, side) for b in blobs]
            scaled = [p.score for p in detector.predict(images)]
            rows.append((f"score change, scaled vs full decode: {name}, {set_name} ({len(files)})",
                         change_summary(detector, full, scaled)))
            for (other_name, precision), other in at_precision.items():
                if other_name == name:
                    rows.append((f"score change, {precision} vs fp32: {name}, {set_name}",
                                 change_summary(detector, scaled, [p.score for p in other.predict(images)])))
    if real_photos and precisions:  # the bundled default reads full-resolution crops: real photos only
        blobs = [file.read_bytes() for file in sets["real photos"]]
        images = [decode_image(blob, settings.max_image_pixels) for blob in blobs]
        default = load_detector(catalog.resolve("default", settings), settings)
        fp32 = [p.score for p in default.predict(images)]
        for precision in precisions:
            other = load_detector(catalog.resolve("default", settings),
                                  load_settings(scan_provenance=False, precision=precision))
            rows.append((f"score change, {precision} vs fp32: bundled default (photo crops), real photos",
                         change_summary(default, fp32, [p.score for p in other.predict(images)])))
    return rows


def change_summary(detector: Any, before: list[float], after: list[float]) -> str:
    import numpy as np

    change = np.abs(np.array(before) - np.array(after))
    flips = sum(detector.verdict(a) != detector.verdict(b) for a, b in zip(before, after, strict=True))
    return f"max {change.max():.4f}, mean {change.mean():.4f}, verdicts changed {flips}"


def _split(value: str) -> tuple[int, int]:
    decode, _, inference = value.partition(":")
    return int(decode), int(inference)


if __name__ == "__main__":
    main()
