"""The examples for images without Python: the Spring Boot + Nacos configuration
against its Kubernetes manifest, and the multi-stage Dockerfiles.

The Dockerfiles cannot be built here (no image registry), so their test checks
what can drift: the builder stage runs scripts/build-standalone, the directory
copied out of it is the one that script makes, every file copied from this
repository exists, and the ENTRYPOINT starts with the standalone gracerun.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib

import pytest
from helpers import PY, REPO

from gracerun.config.values import duration

pytestmark = pytest.mark.timeout(60)

EXAMPLE = REPO / "examples" / "spring-nacos"
CONFIG = EXAMPLE / "gracerun.toml"
MANIFEST = EXAMPLE / "deployment.yaml"
REQUIRED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${VAR}, not ${VAR:-default}


def grace_period(manifest: str) -> int:
    """terminationGracePeriodSeconds, read without a YAML parser: exactly one, an integer."""
    found = re.findall(r"^\s*terminationGracePeriodSeconds:\s*(\d+)\s*(?:#.*)?$", manifest,
                       re.MULTILINE)
    assert len(found) == 1, f"expected one terminationGracePeriodSeconds, found {found}"
    return int(found[0])


def container_env(manifest: str) -> dict[str, str]:
    """The container's env as name -> value; a valueFrom (the pod IP) stands as 10.0.0.7."""
    env: dict[str, str] = {}
    for m in re.finditer(r"^\s*- name: ([A-Z_][A-Z0-9_]*)\s*\n\s*(value|valueFrom):\s*(.*)$",
                         manifest, re.MULTILINE):
        name, kind, value = m.groups()
        env[name] = value.strip().strip('"') if kind == "value" else "10.0.0.7"
    return env


def required_vars(value: object) -> set[str]:
    """The ${VAR}s (without a default) in the strings of a parsed TOML document."""
    if isinstance(value, str):
        return set(REQUIRED_VAR.findall(value))
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return set().union(*map(required_vars, items)) if items else set()


def check(grace: int, env: dict[str, str]) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GRACERUN_")}
    proc = subprocess.run([PY, "-m", "gracerun", "check", "--config", str(CONFIG),
                           "--grace-period", str(grace)], capture_output=True, text=True,
                          timeout=30, check=False, env={**clean, "PYTHONPATH": str(REPO), **env})
    return proc.returncode, proc.stdout + proc.stderr


def test_spring_nacos_config_fits_its_manifest() -> None:
    """Steps:
    1. read terminationGracePeriodSeconds and the container's env from
       deployment.yaml (a regex each: no YAML dependency);
    2. every ${VAR} the config requires (no default) is in that env;
    3. `gracerun check --grace-period N` with that env exits 0: the phases fit
       the budget and the budget fits the grace period;
    4. the negative control: with a grace period equal to the budget (no room
       for the final report) the same check exits 1.
    """
    manifest = MANIFEST.read_text()
    grace = grace_period(manifest)
    env = container_env(manifest)
    missing = required_vars(tomllib.loads(CONFIG.read_text())) - set(env)
    assert not missing, f"gracerun.toml needs {sorted(missing)}, deployment.yaml does not set them"
    assert env["GRACERUN_CONFIG"] == "/etc/gracerun/gracerun.toml"

    code, out = check(grace, env)
    assert code == 0, out
    assert "fits Kubernetes" in out and "DOES NOT FIT" not in out, out

    budget = duration(tomllib.loads(CONFIG.read_text())["shutdown"]["budget"])
    code, out = check(int(budget), env)
    assert code == 1, out
    assert "DOES NOT FIT Kubernetes" in out


def test_spring_graceful_shutdown_fits_gracerun_stop_grace() -> None:
    """Steps: Spring's timeout-per-shutdown-phase (the manifest's env) is shorter
    than gracerun's stop_grace, so Spring finishes before the budget's SIGKILL;
    and the preStop hook runs the standalone gracerun's prestop."""
    manifest = MANIFEST.read_text()
    spring = duration(container_env(manifest)["SPRING_LIFECYCLE_TIMEOUT_PER_SHUTDOWN_PHASE"])
    stop_grace = duration(tomllib.loads(CONFIG.read_text())["shutdown"]["stop_grace"])
    assert spring < stop_grace
    assert 'command: ["/opt/gracerun/gracerun", "prestop"]' in manifest


def _build_output_dir() -> str:
    script = (REPO / "scripts" / "build-standalone").read_text()
    (out,) = re.findall(r'^OUT="([^"]+)"$', script, re.MULTILINE)
    return f"{out}/gracerun"


@pytest.mark.parametrize(("name", "base", "entrypoint"), [
    ("Dockerfile.jre", "eclipse-temurin:21-jre",
     ["/opt/gracerun/gracerun", "--", "java", "-jar", "app.jar"]),
    ("Dockerfile.distroless-go", "gcr.io/distroless/base-debian12:nonroot",
     ["/opt/gracerun/gracerun", "--", "/app"]),
])
def test_dockerfile_builds_and_copies_the_standalone(name: str, base: str,
                                                     entrypoint: list[str]) -> None:
    """Steps: parse the Dockerfile's instructions; the builder stage is
    python:3.11-slim-bookworm and runs scripts/build-standalone; the final stage
    is FROM `base` and copies the directory that script makes to /opt/gracerun;
    every file copied from this repository (the gracerun-src context) exists;
    the ENTRYPOINT is `entrypoint`."""
    text = (REPO / "examples" / name).read_text()
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms[0] == "FROM python:3.11-slim-bookworm AS gracerun"
    assert froms[-1] == f"FROM {base}"
    assert "RUN scripts/build-standalone" in lines
    # The builder stage installs every Debian package build-standalone names as needed.
    script = (REPO / "scripts" / "build-standalone").read_text()
    needed = {pkg for hint in re.findall(r"apt-get install ([a-z0-9 .+-]+)\)", script)
              for pkg in hint.split()}
    assert {"binutils", "gcc", "libc6-dev"} <= needed
    builder = " ".join(lines[:lines.index(froms[1])])
    missing = {pkg for pkg in needed if f" {pkg} " not in f" {builder} "}
    assert not missing, f"{name}: the builder stage does not install {sorted(missing)}"
    final = lines[lines.index(froms[-1]):]
    assert f"COPY --from=gracerun /src/{_build_output_dir()} /opt/gracerun" in final
    for line in lines:
        if line.startswith("COPY --from=gracerun-src "):
            *sources, _dest = line.split()[2:]
            for source in sources:
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
    (entry,) = [line for line in final if line.startswith("ENTRYPOINT ")]
    assert json.loads(entry.removeprefix("ENTRYPOINT ")) == entrypoint
