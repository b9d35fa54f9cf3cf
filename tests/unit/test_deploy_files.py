"""The container images and the compose stack stay in step with the README install.

No Docker engine runs here, so the images are never built in these tests; what is checked is that
both Dockerfiles install through the same docker/install.sh as the README and CI, in a
dependency layer before the code layer, and that every command and setting compose uses exists.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_support import PROJECT, parses_as_fakescan, unknown_settings

DOCKERFILES = [PROJECT / "docker" / "Dockerfile.cpu", PROJECT / "docker" / "Dockerfile.cuda"]
COMPOSE = PROJECT / "docker" / "compose.yaml"
INSTALL = PROJECT / "docker" / "install.sh"
ENTRYPOINT = PROJECT / "docker" / "entrypoint.sh"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def build_stage(dockerfile: Path) -> list[tuple[str, str]]:
    steps = instructions(dockerfile)
    start = next(i for i, (keyword, rest) in enumerate(steps) if keyword == "FROM" and rest.endswith(" AS build"))
    end = next(i for i in range(start + 1, len(steps)) if steps[i][0] == "FROM")
    return steps[start + 1:end]


def install_switches() -> set[str]:
    """The FAKESCAN_* switches docker/install.sh documents in its header."""
    return set(re.findall(r"^#\s+(FAKESCAN_[A-Z_]+)=", INSTALL.read_text(), re.MULTILINE))


def packages() -> set[str]:
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())
    return {pattern.rstrip("*") for pattern in config["tool"]["setuptools"]["packages"]["find"]["include"]}


def test_readme_and_ci_install_through_the_shared_script() -> None:
    assert "bash docker/install.sh" in (PROJECT / "README.md").read_text()
    assert 'bash "$project/docker/install.sh"' in (PROJECT / "tests" / "run.sh").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_installs_dependencies_then_code_with_the_shared_script(dockerfile: Path) -> None:
    steps = build_stage(dockerfile)
    runs = [i for i, (keyword, rest) in enumerate(steps) if keyword == "RUN" and "docker/install.sh" in rest]
    assert len(runs) == 2, "one dependency layer and one code layer, both through docker/install.sh"
    deps, code = runs
    assert "FAKESCAN_DEPS_ONLY=1" in steps[deps][1] and "FAKESCAN_DEPS_ONLY" not in steps[code][1]
    copies = {i: rest.split()[0] for i, (keyword, rest) in enumerate(steps) if keyword == "COPY"}
    before_deps = {source for i, source in copies.items() if i < deps}
    assert before_deps == {"pyproject.toml", "docker/install.sh"}, "only what the dependency layer needs"
    code_copies = {source for i, source in copies.items() if deps < i < code}
    assert packages() <= code_copies, f"the code layer copies every package: {packages() - code_copies} missing"
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    for switch in ('FAKESCAN_EXTRAS=""', "FAKESCAN_SKIP_APT=1", "FAKESCAN_EDITABLE=0", "PYTHON=python3.11"):
        assert switch in env
    used = set(re.findall(r"\b(FAKESCAN_[A-Z_]+)=", " ".join(rest for _, rest in instructions(dockerfile))))
    assert not unknown_settings(used - install_switches()), "every FAKESCAN_ variable is a setting or a switch"


def test_build_context_leaves_out_the_virtualenv_and_git() -> None:
    ignored = set((PROJECT / ".dockerignore").read_text().split())
    assert {".venv", ".git"} <= ignored


def test_both_images_build_the_code_the_same_way() -> None:
    cpu, cuda = (build_stage(path) for path in DOCKERFILES)
    assert cpu == cuda


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_image_runs_as_a_numeric_non_root_user_with_a_writable_home(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    users = [rest for keyword, rest in steps if keyword == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    env = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    for name in ("HOME=/var/lib/fakescan", "FAKESCAN_HOME=/var/lib/fakescan", "TMPDIR=/tmp"):
        assert name in env
    assert ("VOLUME", '["/var/lib/fakescan"]') in steps
    assert ("ENTRYPOINT", '["fakescan-entrypoint"]') in steps
    assert ("COPY", "docker/entrypoint.sh /usr/local/bin/fakescan-entrypoint") in steps


def test_install_switches_are_read_by_the_script() -> None:
    body = "\n".join(line for line in INSTALL.read_text().splitlines() if not line.startswith("#"))
    for switch in install_switches():
        assert "${" + switch in body, f"{switch} is documented but never read"


# --- compose -------------------------------------------------------------------------------------

def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def fakescan_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose()["services"].items()
            if str(service.get("image", "")).startswith("${FAKESCAN_IMAGE")}


def test_compose_builds_the_cpu_image_and_runs_real_commands() -> None:
    services = fakescan_services()
    assert {"migrate", "worker", "scheduler", "exporter"} <= set(services)
    for name, service in services.items():
        assert (PROJECT / "docker" / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        parses_as_fakescan(service["command"])
        assert service["read_only"] is True
        health = service.get("healthcheck", {}).get("test", [])
        if health[:2] == ["CMD", "fakescan"]:
            parses_as_fakescan(health[2:])
        assert not unknown_settings(service["environment"]), name
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["worker"]["command"][0] == "worker"
    assert services["api"]["command"][0] == "serve"
    assert "FAKESCAN_API_TOKENS" in services["api"]["environment"]


def test_compose_runs_a_durable_broker_and_the_reconciler() -> None:
    services = compose()["services"]
    command = services["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    assert any(volume.endswith(":/data") for volume in services["redis"]["volumes"])  # the AOF outlives the container
    assert services["reconciler"]["command"][0] == "reconcile"


def test_compose_orders_start_up_through_healthchecks_and_one_shot_jobs() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on a missing service {dependency}"
            wanted = "service_completed_successfully" if services[dependency].get("restart") == "no" \
                else "service_healthy"
            assert condition["condition"] == wanted, (name, dependency)
            if wanted == "service_healthy":
                assert "healthcheck" in services[dependency], dependency
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_seeds_the_bucket_from_the_shipped_samples() -> None:
    seed = compose()["services"]["minio-seed"]
    host_path = seed["volumes"][0].split(":")[0]
    samples = (COMPOSE.parent / host_path).resolve()
    assert samples == PROJECT / "fakescan" / "samples"
    assert samples.is_dir() and any(path.is_file() for path in samples.rglob("*"))
    script = " ".join(seed["command"])
    bucket = re.search(r"mc mb --ignore-existing local/([a-z0-9-]+)", script).group(1)
    scan_source = compose()["services"]["scheduler"]["command"][1]
    assert scan_source.startswith(f"s3://{bucket}/")


def test_compose_passwords_are_overridable_local_values() -> None:
    for match in re.finditer(r"(PASSWORD|SECRET)[A-Z_]*: (.+)", COMPOSE.read_text()):
        value = match.group(2)
        assert "${" in value, f"{match.group(0)!r} cannot be overridden from the environment"


# --- entrypoint ----------------------------------------------------------------------------------

def run_entrypoint(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAKESCAN_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["FAKESCAN_HOME"] = str(home)
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_entrypoint_runs_fakescan_subcommands_and_programs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    upgraded = run_entrypoint(["db", "upgrade"], home)
    assert upgraded.returncode == 0, upgraded.stderr
    current = run_entrypoint(["fakescan", "db", "current"], home)
    assert current.returncode == 0 and current.stdout.strip() not in ("", "empty")
    program = run_entrypoint(["python", "-c", "print('plain program')"], home)
    assert program.stdout.strip() == "plain program"
    usage = run_entrypoint([], home)
    assert usage.returncode == 0 and "worker-ping" in usage.stdout


def test_entrypoint_refuses_an_unwritable_home(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_entrypoint(["status"], blocker / "home")
    assert result.returncode == 78
    assert "not writable" in result.stderr and shlex.quote(str(blocker / "home")) in result.stderr
