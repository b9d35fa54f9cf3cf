"""The worker's metrics endpoint before any batch: local by default, every metric already listed."""

from __future__ import annotations

import json
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from fakescan.settings import load_settings
from tests.services import free_port
from worker import metrics

# in a fresh process: other tests of this session record batches into this process's registry
FIRST_SCRAPE = """
import json, sys, urllib.request
from worker import metrics
server = metrics.serve(int(sys.argv[1]), multiprocess=False)  # a solo/threads pool: this process's registry
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=10) as response:
    print(json.dumps({"address": server.server_address[0], "text": response.read().decode()}))
server.shutdown()
"""


def test_endpoint_listens_on_localhost_and_lists_the_metrics_before_the_first_batch():
    done = subprocess.run([sys.executable, "-c", FIRST_SCRAPE, str(free_port())], capture_output=True, text=True,
                          timeout=60, check=True)
    first = json.loads(done.stdout)
    assert first["address"] == "127.0.0.1"
    families = list(text_string_to_metric_families(first["text"]))
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in families for sample in family.samples}
    assert samples[("fakescan_batch_seconds_count", ())] == 0
    assert samples[("fakescan_batch_objects_count", ())] == 0
    for stage in metrics.STAGES:
        assert samples[("fakescan_stage_seconds_count", (("stage", stage),))] == 0
    names = {family.name for family in families}
    assert {"fakescan_images_scanned", "fakescan_model_load_seconds"} <= names  # labelled: no series yet


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
