"""The worker's metrics endpoint before any batch: local by default, every metric already listed."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from fakescan.settings import load_settings
from tests.services import free_port
from worker import metrics


def test_endpoint_listens_on_localhost_and_lists_the_metrics_before_the_first_batch():
    port = free_port()
    server = metrics.serve(port, multiprocess=False)  # a solo/threads pool: this process's registry
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert samples[("fakescan_batch_seconds_count", ())] == 0
    assert samples[("fakescan_batch_objects_count", ())] == 0
    for stage in metrics.STAGES:
        assert samples[("fakescan_stage_seconds_count", (("stage", stage),))] == 0
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {"fakescan_images_scanned", "fakescan_model_load_seconds"} <= families  # labelled: no series yet


def test_the_worker_listens_where_fakescan_metrics_address_says(monkeypatch):
    from celery import signals

    assert load_settings().metrics_address == "127.0.0.1"  # unset: this host only
    started = []
    monkeypatch.setattr(metrics, "serve", lambda port, **options: started.append((port, options)))
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    monkeypatch.setenv("FAKESCAN_METRICS_PORT", "9100")
    monkeypatch.setenv("FAKESCAN_METRICS_ADDRESS", "0.0.0.0")
    metrics.install(load_settings())
    try:
        signals.worker_init.send(sender=None)
    finally:
        signals.worker_init.disconnect(dispatch_uid="fakescan-metrics-endpoint")
    assert started == [(9100, {"multiprocess": False, "address": "0.0.0.0"})]
