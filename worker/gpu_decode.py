"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg(..., device="cuda")``), batched.

On a CUDA worker the CPU decode is what bounds a scan (see docs/benchmarks.md), so JPEGs the
device can decode as they are go there a chunk at a time; everything else takes the CPU decoder
(:func:`fakescan.decode.decode_image`) with its checks and conversions, so both paths give the same
pixels up to the decoders' rounding. Chosen for the device, from the header alone:

- baseline or extended-sequential JPEG (SOF0/SOF1; progressive and arithmetic-coded go to the CPU),
- 1 (grey) or 3 (YCbCr) components: CMYK/YCCK needs its colour profile, done on the CPU,
- no EXIF orientation other than "upright" (the CPU path turns the picture),
- within the pixel limit.

A device batch that fails (one corrupt file in it) is retried one image at a time, and an image
the device still refuses is decoded on the CPU, where a bad file becomes its usual reason.
Enabled by ``FAKESCAN_GPU_DECODE`` on a CUDA device; the tests run the same code with ``device="cpu"``.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Sequence

from PIL import Image

from fakescan.decode import DecodeError, decode_image

if TYPE_CHECKING:  # torch is imported where a device decode runs, not by every worker that imports this
    import torch

    from worker.fetch import FetchWindow
    from worker.stream import Decoded

SOF_DEVICE = {0xC0, 0xC1}  # baseline, extended sequential Huffman
SOF_OTHER = {0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class JpegHeader:
    width: int
    height: int
    components: int
    sof: int
    orientation: int


def device_decodable(data: bytes, max_pixels: int) -> bool:
    """Whether the device decodes ``data`` exactly as the CPU path would (see module doc)."""
    header = jpeg_header(data)
    return (header is not None and header.sof in SOF_DEVICE and header.components in (1, 3)
            and header.orientation == 1 and 0 < header.width * header.height <= max_pixels)


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Size, components, frame type and EXIF orientation from the segments before the image data."""
    if not data.startswith(b"\xff\xd8"):
        return None
    position, orientation = 2, 1
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        body = data[position + 4:position + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            orientation = _orientation(body[6:])
        elif marker in SOF_DEVICE or marker in SOF_OTHER:
            if len(body) < 6:
                return None
            height, width = struct.unpack(">HH", body[1:5])
            return JpegHeader(width, height, body[5], marker, orientation)
        elif marker == 0xDA:
            return None
        position += 2 + length
    return None


def _orientation(tiff: bytes) -> int:
    try:
        exif = Image.Exif()
        exif.load(b"Exif\x00\x00" + tiff)
        return int(exif.get(EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: let the CPU path decide what it means
        return 0


def decode_batch(blobs: Sequence[bytes], device: str,
                 max_pixels: int) -> list[torch.Tensor | Image.Image | DecodeError]:
    """Each blob as an RGB uint8 (3, H, W) tensor on ``device`` (decoded there), or a PIL image from
    the CPU path, or the DecodeError saying why it is not an image; in order."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    results: list[Any] = [None] * len(blobs)
    chosen = [index for index, blob in enumerate(blobs) if device_decodable(blob, max_pixels)]
    if chosen:
        inputs = [torch.frombuffer(bytearray(blobs[index]), dtype=torch.uint8) for index in chosen]
        try:
            decoded = decode_jpeg(inputs, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # one bad file fails the whole batch: find it one by one
            decoded = [_one_on_device(tensor, device) for tensor in inputs]
        for index, tensor in zip(chosen, decoded, strict=True):
            results[index] = tensor
    for index, blob in enumerate(blobs):
        if results[index] is None:
            results[index] = _on_cpu(blob, max_pixels)
    return results


def _one_on_device(data: torch.Tensor, device: str) -> torch.Tensor | None:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None  # the CPU path gives the reason


def _on_cpu(blob: bytes, max_pixels: int) -> Image.Image | DecodeError:
    try:
        return decode_image(blob, max_pixels)
    except DecodeError as error:
        return error


def uses_device_decode(enabled: bool, device: str, detectors: Sequence[Any]) -> bool:
    """Decode on the device only on a CUDA worker that asked for it, when every pixel detector of the
    scan takes a device tensor (``prepare_tensor``): the others want PIL images on the host."""
    return (enabled and device.startswith("cuda") and bool(detectors)
            and all(callable(getattr(detector, "prepare_tensor", None)) for detector in detectors))


def device_decoded_chunks(futures: "FetchWindow | Sequence[Any]", detectors: Sequence[Any], device: str,
                          max_pixels: int, chunk: int, keep_bytes: bool,
                          on_decoded: Callable[[], None] | None = None) -> Generator[list["Decoded"], None, None]:
    """:func:`worker.stream.decoded_chunks` for device decoding: a chunk's bytes decoded in one batch
    on ``device``, each detector's input prepared there (``prepare_tensor``), CPU fallbacks with
    ``prepare``. ``futures`` are the fetches (see ``decoded_chunks``); device memory is
    bounded by the chunk. ``on_decoded`` is called once the last chunk is decoded, before it is scored."""
    from dataclasses import replace

    from worker.stream import Decoded, as_window

    window = as_window(futures)
    del futures  # the window forgets each fetch it hands over
    total = len(window)
    for start in range(0, total, chunk):
        fetched = [window.take().result() for _ in range(min(chunk, total - start))]
        readable = [item for item in fetched if item.error is None]
        started = time.perf_counter()
        images = decode_batch([item.data or b"" for item in readable], device, max_pixels)
        decoded: dict[int, Decoded] = {}
        for item, image in zip(readable, images, strict=True):
            if isinstance(image, DecodeError):
                decoded[id(item)] = Decoded(item, error=str(image))
            else:
                decoded[id(item)] = Decoded(item, [_prepared(detector, image) for detector in detectors])
        seconds = (time.perf_counter() - started) / max(1, len(readable))
        out = []
        for item in fetched:
            one = decoded.get(id(item)) or Decoded(item)
            one.seconds = seconds if item.error is None else 0.0
            out.append(one if keep_bytes else replace(one, fetched=replace(one.fetched, data=None)))
        del fetched, readable, images, decoded  # the chunk's bytes and full images, while it is scored
        if on_decoded is not None and start + chunk >= total:
            on_decoded()
        yield out


def _prepared(detector: Any, image: "torch.Tensor | Image.Image") -> Any:
    import torch

    from worker.stream import PrepareFailed

    try:
        return detector.prepare_tensor(image) if isinstance(image, torch.Tensor) else detector.prepare(image)
    except Exception as error:
        return PrepareFailed(error)
