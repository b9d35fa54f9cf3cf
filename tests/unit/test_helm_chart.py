"""helm/fakescan rendered by Helm's own Go engine (helm-python-sdk), every object validated
against the Kubernetes schemas of the oldest and newest supported versions."""

from __future__ import annotations

import copy
import json
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_support import (
    by_kind_and_name,
    containers,
    parses_as_fakescan,
    pod_spec,
    render_chart,
    unknown_settings,
)

KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# the least a user must say: where the database URL Secret is, and where the broker is
REQUIRED = {"database": {"existingSecret": "fakescan-db"}, "broker": {"url": "redis://redis-master:6379/0"}}
GPU_KEDA_NIGHTLY = {
    "database": {"existingSecret": "fakescan-db"},
    "broker": {"existingSecret": "fakescan-redis"},
    "s3": {"endpointUrl": "https://minio.storage:9000", "region": "eu-west-1", "existingSecret": "s3-keys"},
    "worker": {
        "gpu": {"enabled": True, "precision": "fp16", "nodeSelector": {"nvidia.com/gpu.present": "true"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "scan", "effect": "NoSchedule"}],
    },
    "autoscaling": {"keda": {"enabled": True, "maxReplicas": 6, "redis": {
        "address": "redis-master:6379", "passwordSecret": {"name": "redis", "key": "redis-password"}}}},
    "nightly": {"enabled": True, "timeZone": "Europe/Berlin", "sources": [
        {"name": "photos", "uri": "s3://media/photos/", "detectors": ["default", "provenance"]},
        {"name": "uploads", "uri": "s3://media/uploads/", "extraArgs": ["--ext", ".jpg,.png"]},
    ]},
    "flower": {"enabled": True, "basicAuthSecret": "flower-auth"},
}


def validated(values: dict[str, Any]) -> list[dict[str, Any]]:
    objects = render_chart(values)
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: checked by test_keda_scales_the_worker_deployment_on_the_celery_queue
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    return objects


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def worker_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind_and_name(objects)[("Deployment", "scan-fakescan-worker")]


def test_required_values_render_a_cpu_release_with_migrations_and_exporter() -> None:
    objects = validated(REQUIRED)
    assert sorted((obj["kind"], obj["metadata"]["name"]) for obj in objects) == [
        ("Deployment", "scan-fakescan-exporter"), ("Deployment", "scan-fakescan-reconciler"),
        ("Deployment", "scan-fakescan-worker"),
        ("Job", "scan-fakescan-migrate"), ("Service", "scan-fakescan-exporter"),
        ("ServiceAccount", "scan-fakescan"),
    ]
    worker = worker_of(objects)
    (container,) = containers(worker)
    assert container["image"] == "fakescan:0.1.0-cpu"
    assert container["args"][:3] == ["worker", "--pool", "prefork"]
    assert "nvidia.com/gpu" not in str(container["resources"])
    env = env_of(container)
    assert env["FAKESCAN_DEVICE"]["value"] == "cpu" and env["FAKESCAN_PRECISION"]["value"] == "fp32"
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"].startswith("/tmp/")  # the writable emptyDir
    assert worker["spec"]["replicas"] == 1
    migrate = by_kind_and_name(objects)[("Job", "scan-fakescan-migrate")]
    assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert containers(migrate)[0]["args"] == ["db", "upgrade"]


def test_every_pod_is_non_root_read_only_and_without_privileges() -> None:
    for values in (REQUIRED, GPU_KEDA_NIGHTLY):
        for obj in render_chart(values):
            pod = pod_spec(obj)
            if pod is None:
                continue
            assert pod["securityContext"]["runAsNonRoot"] is True, obj["metadata"]["name"]
            for container in containers(obj):
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True
                assert context["allowPrivilegeEscalation"] is False
                assert context["capabilities"]["drop"] == ["ALL"]
                mounted = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
                assert "/tmp" in mounted, f"{obj['metadata']['name']} has no writable /tmp"


def test_no_secret_is_rendered_as_a_value() -> None:
    secret_names = {"FAKESCAN_DATABASE_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FLOWER_BASIC_AUTH"}
    for obj in render_chart(GPU_KEDA_NIGHTLY):
        for container in containers(obj):
            for name, entry in env_of(container).items():
                if name in secret_names or name.endswith("BROKER_URL"):
                    assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], (name, entry)
    assert not [obj for obj in render_chart(GPU_KEDA_NIGHTLY) if obj["kind"] == "Secret"]


def test_gpu_workers_run_one_solo_process_on_one_gpu_where_the_gpus_are() -> None:
    objects = validated(GPU_KEDA_NIGHTLY)
    worker = worker_of(objects)
    (container,) = containers(worker)
    assert container["image"] == "fakescan:0.1.0-cuda"
    assert container["args"] == ["worker", "--pool", "solo", "--concurrency", "1"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    env = env_of(container)
    assert (env["FAKESCAN_DEVICE"]["value"], env["FAKESCAN_PRECISION"]["value"]) == ("cuda", "fp16")
    assert "PROMETHEUS_MULTIPROC_DIR" not in env  # one process: the plain registry
    pod = pod_spec(worker)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {toleration["key"] for toleration in pod["tolerations"]} == {"nvidia.com/gpu", "dedicated"}
    # the rest stays on the CPU image
    others = [c["image"] for obj in objects if obj is not worker for c in containers(obj) if "fakescan" in c["image"]]
    assert others and set(others) == {"fakescan:0.1.0-cpu"}


def test_keda_scales_the_worker_deployment_on_the_celery_queue() -> None:
    objects = validated(GPU_KEDA_NIGHTLY)
    index = by_kind_and_name(objects)
    scaled = index[("ScaledObject", "scan-fakescan-worker")]
    worker = worker_of(objects)
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert "replicas" not in worker["spec"]  # KEDA owns the replica count
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 6)
    (trigger,) = scaled["spec"]["triggers"]
    queue = env_of(containers(worker)[0])["FAKESCAN_QUEUE"]["value"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == queue
    assert trigger["metadata"]["address"] == "redis-master:6379"
    auth = index[("TriggerAuthentication", trigger["authenticationRef"]["name"])]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": "redis", "key": "redis-password"}]


def test_keda_takes_redis_address_database_and_tls_from_a_plain_broker_url() -> None:
    values = copy.deepcopy(REQUIRED)
    values["broker"]["url"] = "rediss://cache.internal:6380/3"
    values["autoscaling"] = {"keda": {"enabled": True}}
    scaled = by_kind_and_name(render_chart(values))[("ScaledObject", "scan-fakescan-worker")]
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    found = (metadata["address"], metadata["databaseIndex"], metadata["enableTLS"])
    assert found == ("cache.internal:6380", "3", "true")


def test_one_nightly_cronjob_per_source_running_fakescan_nightly() -> None:
    objects = validated(GPU_KEDA_NIGHTLY)
    cronjobs = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "CronJob"}
    assert set(cronjobs) == {"scan-fakescan-nightly-photos", "scan-fakescan-nightly-uploads"}
    photos = cronjobs["scan-fakescan-nightly-photos"]
    assert photos["spec"]["timeZone"] == "Europe/Berlin"
    assert photos["spec"]["concurrencyPolicy"] == "Forbid"
    args = containers(photos)[0]["args"]
    assert args == ["nightly", "s3://media/photos/", "--detector", "default", "--detector", "provenance"]
    assert containers(cronjobs["scan-fakescan-nightly-uploads"])[0]["args"][-2:] == ["--ext", ".jpg,.png"]


@pytest.mark.parametrize("values", [REQUIRED, GPU_KEDA_NIGHTLY], ids=["required", "gpu-keda-nightly"])
def test_every_command_and_setting_the_chart_uses_exists(values: dict[str, Any]) -> None:
    for obj in render_chart(values):
        for container in containers(obj):
            if not container["image"].startswith("fakescan:"):
                continue
            parses_as_fakescan(container["args"])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command:
                    assert command[0] == "fakescan"
                    parses_as_fakescan(command[1:])
            assert not unknown_settings(env_of(container)), obj["metadata"]["name"]


def test_cpu_workers_take_their_own_precision_and_gpu_workers_keep_theirs() -> None:
    bf16_cpus = {**REQUIRED, "worker": {"cpu": {"precision": "bf16"}}}
    (container,) = containers(worker_of(validated(bf16_cpus)))
    assert env_of(container)["FAKESCAN_PRECISION"]["value"] == "bf16"
    with_gpus = {**REQUIRED, "worker": {"cpu": {"precision": "bf16"}, "gpu": {"enabled": True, "precision": "fp16"}}}
    (container,) = containers(worker_of(render_chart(with_gpus)))
    assert env_of(container)["FAKESCAN_PRECISION"]["value"] == "fp16"


def test_worker_probes_ask_the_worker_itself() -> None:
    (container,) = containers(worker_of(render_chart(REQUIRED)))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == ["fakescan", "worker-ping"]


BAD_VALUES = {
    "negative replicas": ({"worker": {"replicas": -1}}, "/worker/replicas"),
    "misspelt key": ({"worker": {"replica": 2}}, "replica"),
    "unknown precision": ({"worker": {"gpu": {"precision": "fp8"}}}, "/worker/gpu/precision"),
    "a GPU precision on CPU workers": ({"worker": {"cpu": {"precision": "fp16"}}}, "/worker/cpu/precision"),
    "broker that is not redis": ({"broker": {"url": "amqp://rabbit:5672"}}, "/broker/url"),
    "nightly source name with capitals": (
        {"nightly": {"enabled": True, "sources": [{"name": "Photos", "uri": "s3://a/"}]}}, "/nightly/sources/0/name"),
}


@pytest.mark.parametrize("change", list(BAD_VALUES), ids=list(BAD_VALUES))
def test_values_that_break_the_schema_fail_at_render(change: str) -> None:
    import helm_python as helm

    override, where = BAD_VALUES[change]
    values = _merged(REQUIRED, override)
    with pytest.raises(helm.HelmError, match=where):
        render_chart(values)


@pytest.mark.parametrize("missing, message", [
    ({"database": {"existingSecret": ""}}, "database.existingSecret is required"),
    ({"broker": {"url": ""}}, "broker.url or broker.existingSecret is required"),
    ({"broker": {"url": "", "existingSecret": "redis-url"}, "autoscaling": {"keda": {"enabled": True}}},
     "autoscaling.keda.redis.address"),
], ids=["database-secret", "broker", "keda-address"])
def test_missing_connection_values_fail_with_what_to_set(missing: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=message):
        render_chart(_merged(REQUIRED, missing))


def test_defaults_alone_do_not_render() -> None:
    """No placeholder database: installing without naming the Secret fails."""
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="database.existingSecret is required"):
        render_chart({})


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def test_helm_lint_strict_finds_no_warning() -> None:
    import helm_python as helm

    from tests.deploy_support import CHART

    for values in (REQUIRED, GPU_KEDA_NIGHTLY):
        report = helm.lint(str(CHART), values, strict=True, kube_version="v1.27.0")
        assert not [message for message in report["messages"] if message["severity"] >= 2], report


CANARY = "canary-Pw-7f3a9c"
PASSWORD_PLACES = {
    "broker.url": {"broker": {"url": f"redis://:{CANARY}@redis-master:6379/0"}},
    "broker.url with a user": {"broker": {"url": f"rediss://fakescan:{CANARY}@redis-master:6380/1"}},
    "s3.endpointUrl": {"s3": {"endpointUrl": f"https://minio:{CANARY}@minio.storage:9000"}},
    "settings.extraEnv": {"settings": {"extraEnv": [
        {"name": "FAKESCAN_DATABASE_URL", "value": f"postgresql+psycopg://app:{CANARY}@db:5432/scans"}]}},
    "nightly source": {"nightly": {"enabled": True, "sources": [
        {"name": "photos", "uri": "s3://media/photos/", "extraArgs": ["--glob", f"http://u:{CANARY}@x/*"]}]}},
}


@pytest.mark.parametrize("place", list(PASSWORD_PLACES), ids=list(PASSWORD_PLACES))
def test_a_password_in_any_url_value_fails_the_render_without_echoing_it(place: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match="carries a password") as refused:
        render_chart(_merged(GPU_KEDA_NIGHTLY | {"broker": {"url": "redis://redis-master:6379/0"}},
                             PASSWORD_PLACES[place]))
    assert CANARY not in str(refused.value)


def test_a_password_reaches_the_pods_only_through_a_secret() -> None:
    """Every object rendered from values naming Secrets, grepped for the canary: it is nowhere."""
    from tests.deploy_support import CHART

    everything = _merged(GPU_KEDA_NIGHTLY, {"reconciler": {"enabled": True}, "redis": {"enabled": False},
                                            "settings": {"extraEnv": [{"name": "FAKESCAN_DATABASE_URL", "valueFrom": {
                                                "secretKeyRef": {"name": "db", "key": CANARY.lower()[:6]}}}]}})
    rendered = render_chart(everything)
    assert rendered and CANARY not in json.dumps(rendered)
    assert CANARY not in "".join(path.read_text() for path in CHART.rglob("*") if path.is_file())


def test_the_reconciler_runs_as_one_deployment_with_the_settings_it_reads() -> None:
    objects = validated(REQUIRED)
    reconciler = by_kind_and_name(objects)[("Deployment", "scan-fakescan-reconciler")]
    (container,) = containers(reconciler)
    assert container["args"] == ["reconcile", "--interval", "30"] and reconciler["spec"]["replicas"] == 1
    env = env_of(container)
    assert env["FAKESCAN_RECONCILE_GRACE"]["value"] == "120"
    assert env["FAKESCAN_BROKER_URL"]["value"] == "redis://redis-master:6379/0"


def test_the_charts_own_redis_is_durable_and_becomes_the_broker() -> None:
    values = _merged(REQUIRED, {"broker": {"url": ""}, "redis": {"enabled": True}})
    objects = by_kind_and_name(validated(values))
    (redis,) = containers(objects[("StatefulSet", "scan-fakescan-redis")])
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes" and args[args.index("--appendfsync") + 1] == "everysec"
    worker_env = env_of(containers(objects[("Deployment", "scan-fakescan-worker")])[0])
    assert worker_env["FAKESCAN_BROKER_URL"]["value"] == "redis://scan-fakescan-redis:6379/0"
    assert ("Service", "scan-fakescan-redis") in objects
API = _merged(REQUIRED, {"api": {
    "enabled": True, "replicas": 2, "tokens": {"existingSecret": "fakescan-api-tokens"},
    "ingress": {"enabled": True, "className": "nginx", "host": "review.example.org", "tlsSecret": "review-tls"}}})


def test_api_deployment_service_and_ingress_render_valid_and_take_tokens_from_a_secret() -> None:
    objects = validated(API)
    index = by_kind_and_name(objects)
    api = index[("Deployment", "scan-fakescan-api")]
    (container,) = containers(api)
    assert container["image"] == "fakescan:0.1.0-cpu"  # the same image as the workers
    assert container["args"] == ["serve", "--port", "8080"]
    parses_as_fakescan(container["args"])
    assert not unknown_settings(env_of(container))
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    tokens_file = env_of(container)["FAKESCAN_API_TOKENS_FILE"]["value"]
    volume = next(v for v in pod_spec(api)["volumes"] if v["name"] == "api-tokens")
    assert volume["secret"]["secretName"] == "fakescan-api-tokens"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "api-tokens")
    assert tokens_file == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}" and mount["readOnly"]
    assert api["spec"]["replicas"] == 2
    service = index[("Service", "scan-fakescan-api")]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    ingress = index[("Ingress", "scan-fakescan-api")]
    assert ingress["spec"]["rules"][0]["host"] == "review.example.org"
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "scan-fakescan-api"
    assert not [obj for obj in objects if obj["kind"] == "Secret"]
    assert ("Deployment", "scan-fakescan-api") not in by_kind_and_name(render_chart(REQUIRED))  # opt-in


@pytest.mark.parametrize("override, message", [
    ({"api": {"enabled": True}}, "api.tokens.existingSecret is required"),
    ({"api": {"enabled": True, "port": 0, "tokens": {"existingSecret": "t"}}}, "/api/port"),
    ({"api": {"enabled": True, "tokens": {"existingSecret": "t"}, "ingress": {"enabled": True}}},
     "api.ingress.host is required"),
    ({"api": {"enabled": True, "token": "plain"}}, "token"),
], ids=["no-tokens", "bad-port", "ingress-without-host", "misspelt-key"])
def test_api_values_that_cannot_work_fail_at_render(override: dict[str, Any], message: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=message):
        render_chart(_merged(REQUIRED, override))
