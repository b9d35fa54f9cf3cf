"""Which detectors exist, without importing torch.

A detector is a folder (local or ``s3://``) holding ``fakescan.json`` (its manifest: name,
family, version, preprocessing, thresholds, training record) beside its weights. The scheduler
resolves names to :class:`DetectorRef` here so it can skip work already done by the same
detector version; only the worker turns a ref into a loaded model (``worker.detectors``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from fakescan.settings import Settings

MANIFEST = "fakescan.json"
BUNDLED_DIR = Path(__file__).parent / "bundled"


class UnknownDetector(LookupError):
    pass


class DuplicateName(ValueError):
    pass


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    module: str  # imported by the worker only, when a detector of this family is loaded
    summary: str
    weightless: bool = False  # True when the family needs no trained folder (e.g. provenance)
    version: str | None = None  # the code version of a weightless family
    # settings naming files that change a weightless family's judgements (provenance: the C2PA
    # trust anchors); their contents are hashed into the version, so changing them re-scans
    version_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class DetectorRef:
    name: str
    family: str
    version: str
    location: str | None  # folder path or s3:// URI; None for weightless families
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def as_json(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "family": self.family, "location": self.location or ""}


_FAMILIES: dict[str, FamilyInfo] = {}


def register_family_info(info: FamilyInfo) -> FamilyInfo:
    if info.name in _FAMILIES:
        raise DuplicateName(f"detector family {info.name!r} is already registered")
    _FAMILIES[info.name] = info
    return info


def families() -> dict[str, FamilyInfo]:
    return dict(_FAMILIES)


def family_info(name: str) -> FamilyInfo:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise UnknownDetector(f"unknown detector family {name!r}; known: {', '.join(sorted(_FAMILIES))}") from None


for _info in (
    FamilyInfo("hf-classifier", "worker.detectors.hf_classifier",
               "any Hugging Face image-classification checkpoint (AutoModelForImageClassification)"),
    FamilyInfo("siglip2", "worker.detectors.siglip2",
               "SigLIP2 (google/siglip2-base-patch16-224 architecture) fine-tuned with a 2-class head"),
    FamilyInfo("mobilenet-v2", "worker.detectors.mobilenet_v2",
               "MobileNetV2 backbone, pooled dense head, sigmoid, 224x224"),
    FamilyInfo("efficientnet-attention", "worker.detectors.efficientnet_attention",
               "EfficientNet backbone with a spatial-attention branch, 128x128; attention map as explanation"),
    FamilyInfo("photo-crops", "worker.detectors.photo_crops",
               "EfficientNet-Lite statistics of native-resolution crops, linear head; crop scores as explanation"),
    FamilyInfo("compact-cnn", "worker.detectors.compact_cnn",
               "three Conv+BN+MaxPool blocks, global pooling, softmax; Grad-CAM explanations"),
    FamilyInfo("one-class-ensemble", "worker.detectors.ensemble",
               "nine anomaly detectors fitted on real images only, weighted vote"),
    # weightless; bump the version when its signals or scores change (results are keyed by it)
    FamilyInfo("provenance", "worker.detectors.provenance",
               "C2PA manifests, IPTC/XMP source types, generator text chunks and EXIF; reads no pixels",
               weightless=True, version="1.0.0", version_files=("c2pa_trust_anchors",)),
):
    register_family_info(_info)

PROVENANCE = "provenance"


def scan_detector_specs(requested: Sequence[str] | None, settings: "Settings") -> list[str]:
    """The detector specs a scan runs: the requested ones (else the configured), provenance first.

    Provenance reads metadata, not pixels, so it costs little, and its verified claims decide
    combined verdicts; a scan leaves it out only when told to (FAKESCAN_SCAN_PROVENANCE=false).
    """
    specs = list(requested) if requested else list(settings.detectors)
    others = [spec for spec in specs if spec != PROVENANCE]
    if settings.scan_provenance:
        return [PROVENANCE, *others]
    return specs if requested else others  # opting out never drops a detector asked for by name


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def ref_from_folder(folder: Path, name: str | None = None) -> DetectorRef:
    manifest = read_manifest(folder)
    family_info(manifest["family"])
    return DetectorRef(
        name=name or manifest["name"],
        family=manifest["family"],
        version=str(manifest["version"]),
        location=str(folder),
        manifest=manifest,
    )


def ref_from_hf_folder(folder: Path) -> DetectorRef:
    """A bare transformers checkpoint: versioned by the hash of its config and weight files."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in {".json", ".safetensors", ".bin"}:
            digest.update(path.name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return DetectorRef(folder.name, "hf-classifier", f"hf-{digest.hexdigest()[:12]}", str(folder))


def weightless_version(info: FamilyInfo, settings: "Settings | None") -> str:
    """The code version, plus a hash of the files named by ``version_files`` that are configured:
    ``1.0.0`` without trust anchors, ``1.0.0+3f2a9c1e`` with them."""
    from fakescan.errors import UsageError

    digest = hashlib.sha256()
    configured = False
    for setting in info.version_files:
        location = getattr(settings, setting, None) if settings is not None else None
        if not location:
            continue
        path = Path(location).expanduser()
        try:
            digest.update(setting.encode() + b"\0" + path.read_bytes())
        except OSError as error:
            raise UsageError(f"FAKESCAN_{setting.upper()}: cannot read {path}: {error.strerror}") from None
        configured = True
    base = info.version or "1"
    return f"{base}+{digest.hexdigest()[:8]}" if configured else base


def named_detectors(settings: "Settings | None" = None) -> dict[str, DetectorRef]:
    """Bundled detectors, weightless families and folders under ``$FAKESCAN_HOME/detectors``."""
    found: dict[str, DetectorRef] = {}
    for info in _FAMILIES.values():
        if info.weightless:
            found[info.name] = DetectorRef(info.name, info.name, weightless_version(info, settings), None)
    home = settings.home if settings is not None else None
    roots = [BUNDLED_DIR] + ([home / "detectors"] if home else [])
    for root in roots:
        if not root.is_dir():
            continue
        for folder in sorted(p for p in root.iterdir() if (p / MANIFEST).is_file()):
            ref = ref_from_folder(folder, name=folder.name)
            if ref.name in found:
                raise DuplicateName(f"detector {ref.name!r} is defined twice ({found[ref.name].location}, {folder})")
            found[ref.name] = ref
    return found


def resolve(spec: str, settings: "Settings") -> DetectorRef:
    """A registered name, a local detector or checkpoint folder, or an ``s3://`` prefix."""
    named = named_detectors(settings)
    if spec in named:
        return named[spec]
    if spec.startswith("s3://"):
        return ref_from_s3(spec, settings)
    folder = Path(spec).expanduser()
    if (folder / MANIFEST).is_file():
        return ref_from_folder(folder.resolve())
    if (folder / "config.json").is_file():
        return ref_from_hf_folder(folder.resolve())
    raise UnknownDetector(
        f"unknown detector {spec!r}; known: {', '.join(sorted(named)) or 'none'} "
        "(or give a detector folder, a Hugging Face checkpoint folder or an s3:// prefix)"
    )


def ref_from_s3(uri: str, settings: "Settings") -> DetectorRef:
    """A detector or bare checkpoint under an S3 prefix, versioned by its manifest or its ETags."""
    from botocore.exceptions import BotoCoreError, ClientError

    from fakescan.errors import SourceError
    from fakescan.storage import parse_s3_uri, s3_client

    bucket, prefix = parse_s3_uri(uri)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = s3_client(settings)
    etags: dict[str, str] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                etags[item["Key"][len(prefix):]] = item.get("ETag", "").strip('"')
    except (BotoCoreError, ClientError) as error:  # missing bucket, denied, unreachable endpoint
        raise SourceError(f"cannot list detector at {uri}: {error}") from None
    location = uri.rstrip("/")
    if MANIFEST in etags:
        manifest = json.loads(client.get_object(Bucket=bucket, Key=prefix + MANIFEST)["Body"].read())
        family_info(manifest["family"])
        return DetectorRef(manifest["name"], manifest["family"], str(manifest["version"]), location, manifest)
    if "config.json" in etags:
        digest = hashlib.sha256(json.dumps(sorted(etags.items())).encode()).hexdigest()[:12]
        return DetectorRef(location.rsplit("/", 1)[-1], "hf-classifier", f"hf-{digest}", location)
    raise UnknownDetector(f"no detector at {uri}: expected {MANIFEST} or a transformers config.json there")


def local_folder(ref: DetectorRef, settings: "Settings") -> Path | None:
    """The ref's folder on this machine: as is when local, downloaded once per version from S3."""
    if ref.location is None:
        return None
    if not ref.location.startswith("s3://"):
        return Path(ref.location)
    from fakescan.storage import download_prefix

    target = settings.home / "cache" / "detectors" / f"{_safe(ref.name)}-{_safe(ref.version)}"
    if (target / ".complete").is_file():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    download_prefix(ref.location, partial, settings)
    (partial / ".complete").touch()
    try:
        partial.rename(target)
    except OSError:  # another process won the race; its copy is identical
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
