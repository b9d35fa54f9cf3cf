"""The provenance detector: what generators and cameras wrote into the file, never the pixels.

Reads C2PA manifests (validated by the c2pa SDK), IPTC/XMP digital source types and tool names,
generator text chunks (A1111 ``parameters``, ComfyUI ``prompt``/``workflow``, NovelAI, InvokeAI),
JPEG comments and EXIF. A score and verdict exist only where evidence does: a file without
provenance metadata gets score None ("no provenance metadata"), never "real". Hostile metadata
(oversized or malformed chunks, unreadable manifests, absurd EXIF) is this detector's error for
that object; the other detectors of the scan still judge it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from PIL import Image

from fakescan.errors import DetectorError
from worker.detectors import register_family
from worker.detectors.base import Detector, Prediction, Sample
from worker.detectors.provenance.containers import HostileMetadata, RawMetadata, read_metadata
from worker.detectors.provenance.exif import exif_signals
from worker.detectors.provenance.manifest import make_context, manifest_signals, read_store
from worker.detectors.provenance.signals import Signal, judge, parts
from worker.detectors.provenance.texts import text_signals
from worker.detectors.provenance.xmp import xmp_signals
from worker.fetch import IncompleteRead

if TYPE_CHECKING:
    from fakescan.settings import Settings

# between the weak camera evidence (0.3 -> real) and unsigned generator names (0.9 -> fake)
THRESHOLDS = {"threshold": 0.5, "low": 0.35, "high": 0.65}
NO_METADATA = "no provenance metadata"


@register_family("provenance")
class ProvenanceDetector(Detector):
    needs_pixels = False
    # A provenance-only scan reads this much of each object first (a ranged GET): a JPEG's metadata
    # segments all precede its image data. The rest is read only when the head is not enough: a
    # C2PA manifest (its hash binding covers the whole file), a head that ends inside the
    # metadata, or another container (PNG/WebP text chunks may follow the pixel data).
    head_bytes = 256 * 1024

    def __init__(self, name: str, version: str, manifest: dict[str, Any], trust_anchors_pem: str | None = None):
        super().__init__(name, version, {"thresholds": THRESHOLDS, **manifest})
        self.trusts_anchors = bool(trust_anchors_pem)
        self._c2pa = make_context(trust_anchors_pem)

    @classmethod
    def load(cls, folder: Path | None, settings: "Settings", manifest: dict[str, Any]) -> "ProvenanceDetector":
        from fakescan.catalog import family_info, weightless_version

        # the version lives in fakescan.catalog (the scheduler keys results by it without importing
        # us) and covers the trust anchors: a worker configured with other anchors than the
        # scheduler's would label its judgements with a version that did not make them
        version = weightless_version(family_info(cls.family), settings)
        if manifest.get("version") and str(manifest["version"]) != version:
            raise DetectorError(f"the scan asked for provenance {manifest['version']}, this worker's "
                                f"FAKESCAN_C2PA_TRUST_ANCHORS make it {version}: configure the same trust anchors "
                                "on the scheduler and the workers")
        anchors = settings.c2pa_trust_anchors
        pem = Path(anchors).expanduser().read_text() if anchors else None
        return cls(manifest["name"], version, manifest, pem)

    def predict(self, images: Sequence[Image.Image]) -> list[Prediction]:
        raise TypeError("the provenance detector reads file bytes, not pixels: call predict_samples")

    def predict_samples(self, samples: Sequence[Sample]) -> list[Prediction]:
        return [self.inspect_sample(sample) for sample in samples]

    def inspect_sample(self, sample: Sample) -> Prediction:
        """Judge from the head when it holds all the evidence there is, else from the whole object."""
        if not sample.complete:
            head = _complete_jpeg_metadata(sample.data)
            if head is not None:
                return self.inspect(sample.data, head)
            try:
                sample.whole()
            except IncompleteRead as error:
                return Prediction(None, error=str(error))
        return self.inspect(sample.data)

    def inspect(self, data: bytes, meta: RawMetadata | None = None) -> Prediction:
        try:
            meta = meta or read_metadata(data)
            signals, c2pa_record = self._signals(data, meta)
        except HostileMetadata as error:
            return Prediction(None, error=str(error))
        judgement = judge(signals)
        evidence: dict[str, Any] = {
            "format": meta.format,
            "finding": judgement.finding,
            "summary": _summary(judgement.finding, judgement.deciding),
            "signals": [signal.as_json() for signal in signals],
        }
        if c2pa_record is not None:
            evidence["c2pa"] = c2pa_record
        return Prediction(judgement.score, parts(signals), evidence)

    def _signals(self, data: bytes, meta: RawMetadata) -> tuple[list[Signal], dict[str, Any] | None]:
        signals: list[Signal] = []
        record = None
        if meta.has_c2pa:
            store = read_store(data, meta.format, self._c2pa)
            if store is not None:
                found, record = manifest_signals(store)
                signals.extend(found)
        for packet in meta.xmp:
            signals.extend(xmp_signals(packet))
        signals.extend(text_signals(meta.texts))
        if meta.exif is not None:
            signals.extend(exif_signals(meta.exif))
        return signals, record


def _complete_jpeg_metadata(head: bytes) -> RawMetadata | None:
    """A JPEG head's metadata when the head reaches the image data and carries no C2PA manifest."""
    if not head.startswith(b"\xff\xd8"):
        return None
    try:
        meta = read_metadata(head)
    except HostileMetadata:  # the head ends inside the metadata (or it is hostile: the whole object says)
        return None
    return None if meta.has_c2pa else meta


def _summary(finding: str, deciding: tuple[Signal, ...]) -> str:
    if finding == "none":
        return NO_METADATA
    if finding == "unverified":
        return "nothing trustworthy: " + "; ".join(_describe(signal) for signal in deciding)
    if finding == "conflict":
        return "provenance signals disagree: " + "; ".join(_describe(signal) for signal in deciding)
    return _describe(deciding[0])


def _describe(signal: Signal) -> str:
    who = f" ({signal.generator})" if signal.generator else ""
    validation = f" [{signal.validation}]" if signal.validation else ""
    return f"{signal.kind}: {signal.source} {signal.field} = {signal.value[:80]!r}{who}{validation}"
