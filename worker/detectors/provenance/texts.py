"""Text metadata: PNG text chunks and JPEG comments that generators write their settings into.

A key only counts when its value parses the way its generator writes it (an A1111 settings line,
a ComfyUI node graph, a NovelAI JSON comment): a bare ``prompt`` key proves nothing. The evidence
keeps the generation settings and a short excerpt, not whole prompts or workflows.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from worker.detectors.provenance.containers import HostileMetadata
from worker.detectors.provenance.generators import A1111_KEYS, GENERATOR_TEXT_KEYS
from worker.detectors.provenance.matching import generator_named
from worker.detectors.provenance.signals import Signal

# free-text keys where tools put their own name (PNG "Software", NovelAI "Source", JPEG comments)
NAME_KEYS = {"software", "source", "author", "title", "comment", "description", "creator", "generator",
             "model", "make", "creation software"}
_A1111_FIELD = re.compile(r'\s*([\w][\w .\-/]*):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')
EXCERPT_CHARS = 120
SAMPLING_KEYS = {"steps", "seed", "sampler", "scheduler", "cfg_scale", "cfgscale", "guidance_scale"}


def text_signals(texts: list[tuple[str, str, str]]) -> list[Signal]:
    signals: list[Signal] = []
    for part, key, value in texts:
        signal = _generator_text(part, key, value)
        if signal is None and key.lower() in NAME_KEYS:
            generator = generator_named(value)
            if generator:
                signal = Signal("generator-name", part, key, value[:EXCERPT_CHARS], generator)
        if signal is not None:
            signals.append(signal)
    return signals


def _generator_text(part: str, key: str, value: str) -> Signal | None:
    entry = GENERATOR_TEXT_KEYS.get(key.lower())
    if entry is None:
        return None
    generator, check = entry
    details = CHECKS[check](value)
    if details is None:
        return None
    shown = value.strip().splitlines()[-1] if check == "a1111" and not value.lstrip().startswith("{") else value
    return Signal("generator-parameters", part, key, shown[:EXCERPT_CHARS * 2].strip(), generator, details=details)


def a1111_parameters(text: str) -> dict[str, Any] | None:
    """The settings line of an AUTOMATIC1111-style ``parameters`` text, or None if it is not one."""
    if text.lstrip().startswith("{"):
        return _json_parameters(text)
    lines = text.strip().splitlines()
    if not lines or not lines[-1].lstrip().startswith("Steps:"):
        return None
    fields = {match.group(1).strip(): match.group(2).strip().strip('"')
              for match in _A1111_FIELD.finditer(lines[-1]) if match.group(1)}
    if "Sampler" not in fields and "Seed" not in fields:
        return None
    kept: dict[str, Any] = {key: fields[key] for key in A1111_KEYS if key in fields}
    kept["prompt"] = lines[0][:EXCERPT_CHARS] if len(lines) > 1 else ""
    return kept


def _json_parameters(text: str) -> dict[str, Any] | None:
    """JSON ``parameters`` (SwarmUI, Fooocus): an object holding sampling settings."""
    data = _json(text)
    if isinstance(data, dict) and isinstance(data.get("sui_image_params"), dict):
        data = data["sui_image_params"]
    if not isinstance(data, dict):
        return None
    lowered = {str(key).lower(): value for key, value in data.items()}
    if len(SAMPLING_KEYS & lowered.keys()) < 2:
        return None
    return {key: lowered[key] for key in ("steps", "sampler", "seed", "model", "version") if key in lowered}


def _comfy_prompt(text: str) -> dict[str, Any] | None:
    data = _json(text)
    if not isinstance(data, dict) or not data:
        return None
    nodes = [node for node in data.values() if isinstance(node, dict) and "class_type" in node]
    if len(nodes) * 2 < len(data):
        return None
    return {"nodes": len(nodes), "classes": sorted({str(node["class_type"]) for node in nodes})[:20],
            "models": _comfy_models(nodes)}


def _comfy_models(nodes: list[dict[str, Any]]) -> list[str]:
    models = set()
    for node in nodes:
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        for name in ("ckpt_name", "unet_name", "model_name", "lora_name"):
            if isinstance(inputs.get(name), str):
                models.add(inputs[name])
    return sorted(models)[:10]


def _comfy_workflow(text: str) -> dict[str, Any] | None:
    data = _json(text)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return None
    types = {str(node.get("type")) for node in data["nodes"] if isinstance(node, dict) and "type" in node}
    return {"nodes": len(data["nodes"]), "classes": sorted(types)[:20]} if types else None


def _novelai_comment(text: str) -> dict[str, Any] | None:
    data = _json(text) if text.lstrip().startswith("{") else None
    if not isinstance(data, dict) or "steps" not in data or not {"sampler", "seed", "scale"} & data.keys():
        return None
    return {key: data[key] for key in ("steps", "sampler", "seed", "scale") if key in data}


def _json_object(text: str) -> dict[str, Any] | None:
    data = _json(text)
    return {"keys": sorted(map(str, data))[:20]} if isinstance(data, dict) and data else None


def _nonempty(text: str) -> dict[str, Any] | None:
    return {"chars": len(text)} if text.strip() else None


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise HostileMetadata("text metadata holds absurdly deep JSON") from None
    except ValueError:
        return None


CHECKS: dict[str, Callable[[str], dict[str, Any] | None]] = {
    "a1111": a1111_parameters,
    "comfy_prompt": _comfy_prompt,
    "comfy_workflow": _comfy_workflow,
    "novelai_comment": _novelai_comment,
    "json_object": _json_object,
    "nonempty": _nonempty,
}
