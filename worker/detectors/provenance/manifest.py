"""C2PA manifests, read and validated by the c2pa SDK (c2pa-python), turned into signals.

A manifest only counts when the SDK validates it: the claim signature verifies and the hash
bindings match the bytes (state ``Valid``, or ``Trusted`` when the signer chains to a configured
trust anchor). An invalid or tampered manifest becomes a ``c2pa-invalid`` signal that carries
the failure codes and no score. Reading never touches the network (no remote manifests, no OCSP).
"""

from __future__ import annotations

import io
import json
from typing import Any

import c2pa

from worker.detectors.provenance.containers import HostileMetadata
from worker.detectors.provenance.matching import generator_named, source_type
from worker.detectors.provenance.signals import Signal

MIME_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "tiff": "image/tiff",
              "gif": "image/gif", "heif": "image/heif", "avif": "image/avif"}
ORIGIN_KINDS = {"ai": "c2pa-ai", "synthetic": "c2pa-synthetic", "neutral": "c2pa-neutral"}
BINDING_CODES = ("assertion.dataHash.", "assertion.boxesHash.", "assertion.bmffHash.", "assertion.collectionHash.")
MAX_LISTED = 20


def make_context(trust_anchors_pem: str | None) -> c2pa.Context:
    config: dict[str, Any] = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False}}
    if trust_anchors_pem:
        config["trust"] = {"trust_anchors": trust_anchors_pem}
    return c2pa.Context(settings=c2pa.Settings.from_dict(config))


def read_store(data: bytes, image_format: str, context: c2pa.Context) -> dict[str, Any] | None:
    """The manifest store as JSON, None when the file carries none; unreadable ones are hostile."""
    try:
        reader = c2pa.Reader(MIME_TYPES.get(image_format), io.BytesIO(data), None, context)
    except c2pa.C2paError.ManifestNotFound:
        return None
    except c2pa.C2paError as error:
        raise HostileMetadata(f"C2PA manifest cannot be read: {error}") from None
    with reader:
        try:
            return json.loads(reader.json())
        except (c2pa.C2paError, ValueError) as error:
            raise HostileMetadata(f"C2PA manifest cannot be parsed: {error}") from None


def manifest_signals(store: dict[str, Any]) -> tuple[list[Signal], dict[str, Any]]:
    """Signals and the ``c2pa`` evidence record of a manifest store."""
    manifests = store.get("manifests") or {}
    active = manifests.get(store.get("active_manifest"), {})
    results = (store.get("validation_results") or {}).get("activeManifest") or {}
    state = str(store.get("validation_state") or "Invalid").lower()
    record = _record(active, results, state)
    if state not in ("valid", "trusted"):
        failures = ", ".join(failure["code"] for failure in record["failures"]) or "validation failed"
        return [Signal("c2pa-invalid", "c2pa", "validation_state", failures, validation="invalid")], record
    signals = _action_signals(manifests, store.get("active_manifest"), state)
    generator = generator_named(record["claim_generator"])
    if generator:
        signals.append(Signal("c2pa-generator", "c2pa", "claim_generator", record["claim_generator"],
                              generator, validation=state))
    return signals, record


def _record(active: dict[str, Any], results: dict[str, Any], state: str) -> dict[str, Any]:
    signature = active.get("signature_info") or {}
    failures = [{"code": item.get("code", ""), "explanation": item.get("explanation", "")}
                for item in results.get("failure") or []][:MAX_LISTED]
    successes = {item.get("code", "") for item in results.get("success") or []}
    failed = {failure["code"] for failure in failures}
    return {
        "state": state,
        "trusted": state == "trusted",
        "claim_generator": _claim_generator(active),
        "signer": signature.get("common_name"),
        "issuer": signature.get("issuer"),
        "signed_at": signature.get("time"),
        "signature_valid": "claimSignature.validated" in successes
        and not any(code.startswith("claimSignature.") for code in failed),
        "hash_binding_valid": any(code.startswith(BINDING_CODES) for code in successes)
        and not any(code.startswith(BINDING_CODES) or code.endswith("Hash.mismatch") for code in failed),
        "failures": failures,
    }


def _claim_generator(manifest: dict[str, Any]) -> str:
    info = manifest.get("claim_generator_info")
    if isinstance(info, list) and info and isinstance(info[0], dict):
        return " ".join(str(info[0].get(key, "")) for key in ("name", "version")).strip()
    return str(manifest.get("claim_generator") or "")


def _action_signals(manifests: dict[str, Any], active_label: str | None, state: str) -> list[Signal]:
    """Digital source types and software agents of every manifest's actions, ingredients included."""
    signals: list[Signal] = []
    for label, manifest in manifests.items():
        where = "active manifest" if label == active_label else f"ingredient manifest {label}"
        for index, action in enumerate(_actions(manifest)[:MAX_LISTED]):
            signals.extend(_one_action(action, f"{where} actions[{index}]", label == active_label, state))
    return signals


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for assertion in manifest.get("assertions") or []:
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            found.extend(a for a in (assertion.get("data") or {}).get("actions") or [] if isinstance(a, dict))
    return found


def _one_action(action: dict[str, Any], where: str, active: bool, state: str) -> list[Signal]:
    signals: list[Signal] = []
    value = str(action.get("digitalSourceType") or "")
    known = source_type(value) if value else None
    details = {"action": action.get("action")}
    if known and known[1] == "capture":
        # only the active manifest's own capture speaks for these pixels
        if active:
            kind = "c2pa-capture-trusted" if state == "trusted" else "c2pa-capture-untrusted"
            signals.append(Signal(kind, "c2pa", f"{where}.digitalSourceType", value, validation=state, details=details))
    elif known:
        signals.append(Signal(ORIGIN_KINDS[known[1]], "c2pa", f"{where}.digitalSourceType", value,
                              validation=state, details=details))
    agent = action.get("softwareAgent")
    agent_name = str(agent.get("name", "")) if isinstance(agent, dict) else str(agent or "")
    generator = generator_named(agent_name) if agent_name else None
    if generator:
        signals.append(Signal("c2pa-generator", "c2pa", f"{where}.softwareAgent", agent_name, generator,
                              validation=state, details=details))
    return signals
