"""Detector contract v2 and the device/precision choices, checked on CPU (CUDA calls are only recorded)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from fakescan.catalog import resolve
from fakescan.errors import DetectorError
from fakescan.settings import load_settings
from worker.detectors import FULL_RESOLUTION, NO_PIXELS, InputNeed, load_detector
from worker.detectors.device import autocast, place, to_device
from worker.detectors.hf_classifier import processor_need


def test_every_built_in_family_declares_what_it_reads():
    settings = load_settings()
    assert load_detector(resolve("provenance", settings), settings).decode_need() == NO_PIXELS
    assert load_detector(resolve("cifake", settings), settings).decode_need() == InputNeed("size", 32)
    assert load_detector(resolve("default", settings), settings).decode_need() == FULL_RESOLUTION  # photo crops


def test_the_provenance_detector_takes_its_trust_anchors_from_the_settings_it_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKESCAN_C2PA_TRUST_ANCHORS", raising=False)
    anchors = tmp_path / "anchors.pem"
    anchors.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    plain = load_settings()
    configured = load_settings(c2pa_trust_anchors=anchors)
    ref = resolve("provenance", configured)
    detector = load_detector(ref, configured)
    assert detector.trusts_anchors and detector.version == ref.version != resolve("provenance", plain).version


def test_image_processors_declare_the_size_they_keep():
    from transformers import SiglipImageProcessor, ViTImageProcessor

    assert processor_need(SiglipImageProcessor(size={"height": 224, "width": 224})) == InputNeed("size", 224)
    assert processor_need(ViTImageProcessor(size={"shortest_edge": 256})) == InputNeed("size", 256)
    assert processor_need(SiglipImageProcessor(do_resize=False)) == FULL_RESOLUTION


def test_int8_quantises_the_linear_layers_on_cpu_and_is_refused_on_cuda():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    module(torch.zeros(1, 3, 8, 8))
    placed = place(module, "cpu", "int8")
    assert type(placed[2]).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert isinstance(placed[0], nn.Conv2d)  # dynamic quantisation leaves convolutions in fp32
    assert not placed.training
    with pytest.raises(DetectorError, match="CPU precision"):
        place(nn.Linear(2, 2), "cuda", "int8")


def test_cpu_inputs_stay_where_they_are_and_cuda_inputs_are_pinned_and_copied_without_blocking():
    batch = torch.zeros(2, 3)
    assert to_device(batch, "cpu") is batch

    class Recorder:
        calls: list[tuple[str, object]] = []

        def pin_memory(self) -> "Recorder":
            self.calls.append(("pin_memory", None))
            return self

        def to(self, device: str, non_blocking: bool = False) -> "Recorder":
            self.calls.append(("to", (device, non_blocking)))
            return self

    to_device(Recorder(), "cuda:0")  # type: ignore[arg-type]
    assert Recorder.calls == [("pin_memory", None), ("to", ("cuda:0", True))]


def test_autocast_on_cuda_at_half_precision_over_fp32_weights():
    assert not isinstance(autocast("cuda", "fp32"), torch.autocast)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else _no_warning():
        chosen = autocast("cuda", "bf16")
    assert isinstance(chosen, torch.autocast) and chosen.fast_dtype == torch.bfloat16
    recorded: list[tuple[str, object]] = []

    class Recorder(nn.Module):  # records the placement asked for; nothing moves to a GPU here
        def to(self, *args: object, **kwargs: object) -> "Recorder":
            recorded.append((repr(args), kwargs.get("dtype")))
            return self

    place(Recorder(), "cuda:0", "bf16")
    assert recorded == [("('cuda:0',)", None)]  # no dtype: the weights stay fp32 under autocast


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_casts_the_weights_where_the_cpu_computes_bf16_and_runs_fp32_elsewhere(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, native: bool):
    from worker.detectors import device

    monkeypatch.setattr(device, "cpu_runs_bf16", lambda: native)
    device._say_cpu_runs_fp32.cache_clear()
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 2))
    inputs = torch.rand(2, 3, 8, 8)
    expected = module.eval()(inputs)
    with caplog.at_level("WARNING", logger="worker.detectors.device"):
        placed = place(copy.deepcopy(module), "cpu", "bf16")
        context = autocast("cpu", "bf16")
        autocast("cpu", "bf16")
    dtypes = {tensor.dtype for tensor in [*placed.parameters(), *placed.buffers()] if tensor.is_floating_point()}
    if native:
        assert dtypes == {torch.bfloat16} and not caplog.records
        assert isinstance(context, torch.autocast) and context.device == "cpu" and context.fast_dtype == torch.bfloat16
        with torch.inference_mode(), context:  # fp32 inputs, as every detector prepares them
            found = placed(inputs)
        assert found.dtype == torch.bfloat16 and torch.allclose(found.float(), expected, atol=0.05)
    else:
        assert dtypes == {torch.float32} and not isinstance(context, torch.autocast)
        assert [record.getMessage() for record in caplog.records] == [
            "precision bf16: this CPU has no bf16 arithmetic (AVX512-BF16 or AMX); the CPU runs fp32"]
    assert device.run_precision("cpu", "fp16") == "fp32" and not isinstance(autocast("cpu", "fp16"), torch.autocast)


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def test_a_family_without_a_declared_size_is_decoded_at_full_resolution(tmp_path: Path):
    import tests.worker_families  # noqa: F401
    from tests.worker_support import detector_folder

    settings = load_settings()
    detector = load_detector(resolve(str(detector_folder(tmp_path, "bright")), settings), settings)
    assert detector.decode_need() == FULL_RESOLUTION


def test_int8_quantises_in_place_and_keeps_nothing_of_the_fp32_tensors_it_was_given():
    """The checkpoint's tensors may be a file mapping: nothing of them may stay referenced after
    quantising (not the biases packed with the int8 weights, not a Linear subclass left in fp32)."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 8), nn.ReLU(),
                           nn.modules.linear.NonDynamicallyQuantizableLinear(8, 2))
    given = {tensor.untyped_storage().data_ptr() for tensor in [*module.parameters(), *module.buffers()]}
    inputs = torch.rand(2, 3, 8, 8)
    with warnings.catch_warnings():  # torch.ao's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8)(inputs)
    placed = place(module, "cpu", "int8")
    assert placed is module  # in place: no second fp32 model while quantising
    kept = [placed[0].weight, placed[0].bias, placed[4].weight, placed[4].bias, placed[2].bias()]
    assert not {tensor.untyped_storage().data_ptr() for tensor in kept} & given
    assert torch.equal(placed(inputs), expected)


def test_bf16_arithmetic_is_read_from_torch_or_else_from_the_kernels_cpu_flags(tmp_path, monkeypatch):
    from worker.detectors import device

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\n")
    assert "avx512_bf16" in device.cpu_flags(str(cpuinfo)) and device.cpu_flags(str(tmp_path / "none")) == set()
    for probe, expected in (({"avx512_bf16": True, "amx_bf16": False}, True), ({"amx_bf16": True}, True),
                            ({"avx512_bf16": False, "avx2": True}, False)):
        monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda probe=probe: probe)
        device.cpu_runs_bf16.cache_clear()
        assert device.cpu_runs_bf16() is expected
    monkeypatch.delattr(torch._C._cpu, "_get_cpu_capability")
    for flags, expected in (({"avx2", "amx_bf16"}, True), ({"avx2", "avx512f"}, False)):
        monkeypatch.setattr(device, "cpu_flags", lambda flags=flags: flags)
        device.cpu_runs_bf16.cache_clear()
        assert device.cpu_runs_bf16() is expected
    device.cpu_runs_bf16.cache_clear()

