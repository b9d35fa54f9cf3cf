"""Shared checks for the deployment files: is a command line one ``fakescan`` accepts, is an
environment variable one the settings read, is a Helm chart rendered and valid."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any, Iterable

import yaml

from fakescan.cli import build_parser
from fakescan.settings import Settings

PROJECT = Path(__file__).resolve().parents[1]
CHART = PROJECT / "helm" / "fakescan"
SETTINGS_ENV = {f"FAKESCAN_{name.upper()}" for name in Settings.model_fields}


def parses_as_fakescan(argv: list[str]) -> argparse.Namespace:
    """The namespace ``fakescan`` builds from ``argv``; AssertionError naming the line if it refuses."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"fakescan rejects {' '.join(argv)!r}: {stderr.getvalue().strip()}") from None


def unknown_settings(names: Iterable[str]) -> set[str]:
    return {name for name in names if name.startswith("FAKESCAN_") and name not in SETTINGS_ENV}


def render_chart(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object Helm's own engine renders from the chart with ``values`` (schema checked too)."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="scan", namespace="media", is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = pod_spec(obj)
    return list(pod.get("containers", [])) + list(pod.get("initContainers", [])) if pod else []


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        return spec["template"]["spec"]
    return None


def by_kind_and_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}
