"""Every example configuration fits its Kubernetes grace period (`gracerun check`).

The rule that pairs them: `examples/NAME.toml` goes with `examples/k8s/NAME.yaml`, and
is checked with that manifest's `terminationGracePeriodSeconds`.  A configuration
without a manifest is checked with DEFAULT_GRACE_PERIOD, 35 s: the grace period the
examples are written for (README, examples/gracerun.toml), not Kubernetes' own default
of 30 s, which leaves a 30 s budget no room for the final report; an example meant
for another grace period ships a manifest that says so.  Configurations are found,
not listed, so an example added later is checked too; none is skipped.

Each manifest must also pair with a configuration, and say what gracerun needs:
preStop `gracerun prestop`, a readinessProbe on /ready and Prometheus annotations
for /metrics, both on the port of the configuration's `[server] listen`.

The manifests are read with regular expressions, not a YAML library (none is a
dependency); the patterns expect the layout of examples/k8s/*.yaml: one key a line.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gracerun.config import values

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MANIFESTS = EXAMPLES / "k8s"
DEFAULT_GRACE_PERIOD = 35
# What a pod's spec gives its container (the downward API and the Deployment's env):
# the examples read these with ${VAR}, as they would in the cluster.
POD_ENV = {"HOSTNAME": "orders-7d9f8-x2k4q", "POD_NAME": "orders-7d9f8-x2k4q",
           "POD_IP": "10.1.2.3", "SERVICE": "orders", "SERVICE_NAME": "orders",
           "NACOS_ADDR": "http://nacos-0.nacos:8848"}

pytestmark = pytest.mark.timeout(60)


def configs() -> list[Path]:
    return sorted(EXAMPLES.glob("*.toml"))


def manifests() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


def manifest_of(config: Path) -> Path | None:
    path = MANIFESTS / f"{config.stem}.yaml"
    return path if path.exists() else None


def grace_period(manifest: Path) -> int:
    """The manifest's terminationGracePeriodSeconds (exactly one, a whole number)."""
    found = re.findall(r"^\s*terminationGracePeriodSeconds:\s*(\S+)\s*(?:#.*)?$",
                       manifest.read_text(), re.M)
    assert len(found) == 1, f"{manifest}: expected one terminationGracePeriodSeconds, " \
                            f"found {found}"
    assert found[0].isdigit(), f"{manifest}: terminationGracePeriodSeconds {found[0]!r}"
    return int(found[0])


def check(config: Path, seconds: int) -> subprocess.CompletedProcess[str]:
    """`gracerun check` as a user runs it: its own environment, from the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRACERUN_")}
    env.update(POD_ENV)
    return subprocess.run([sys.executable, "-m", "gracerun", "check", "--config", str(config),
                           "--grace-period", str(seconds)],
                          capture_output=True, text=True, timeout=30, cwd=REPO, env=env)


def _pairs() -> list[tuple[Path, int, str]]:
    pairs = []
    for config in configs():
        manifest = manifest_of(config)
        if manifest is None:
            pairs.append((config, DEFAULT_GRACE_PERIOD, "default"))
        else:
            pairs.append((config, grace_period(manifest), manifest.name))
    return pairs


def test_there_are_examples_to_check() -> None:
    """The discovery itself: a wrong glob must not turn the test below into nothing."""
    names = {p.name for p in configs()}
    assert {"gracerun.toml", "kubernetes.toml"} <= names, names
    assert manifest_of(EXAMPLES / "kubernetes.toml") is not None


@pytest.mark.parametrize(("config", "seconds", "source"), _pairs(),
                         ids=[f"{c.name}@{s}s({src})" for c, s, src in _pairs()])
def test_example_config_fits_its_grace_period(config: Path, seconds: int, source: str) -> None:
    result = check(config, seconds)
    assert result.returncode == 0, (
        f"gracerun check --config {config.relative_to(REPO)} --grace-period {seconds} "
        f"(grace period from: {source}) exited {result.returncode}:\n"
        f"{result.stdout}{result.stderr}")
    assert "fits Kubernetes" in result.stdout


def test_check_catches_a_config_that_does_not_fit(tmp_path: Path) -> None:
    """Negative control: the classic 35 s sleep within a 35 s grace period, through
    the same check() the examples go through, fails."""
    classic = tmp_path / "classic.toml"
    classic.write_text('[shutdown]\nbudget = "35s"\n\n[[shutdown.notify.hooks]]\n'
                       'type = "sleep"\nduration = "35s"\n')
    result = check(classic, 35)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DOES NOT FIT Kubernetes" in result.stdout


@pytest.mark.parametrize("manifest", manifests(), ids=[m.name for m in manifests()])
def test_manifest_pairs_with_a_config_and_wires_gracerun(manifest: Path) -> None:
    """A manifest has its configuration, preStop `gracerun prestop`, a readinessProbe on
    /ready, and scrape annotations for /metrics, on the port gracerun listens on; and
    its grace period is above the budget."""
    config = EXAMPLES / f"{manifest.stem}.toml"
    assert config.exists(), f"{manifest.name} has no examples/{manifest.stem}.toml"
    text = manifest.read_text()
    cfg = tomllib.loads(config.read_text())

    listen = cfg.get("server", {}).get("listen")
    assert listen, f"{config.name}: no [server] listen for the readinessProbe and /metrics"
    port = listen.rpartition(":")[2]

    assert re.search(r'command:\s*\["gracerun",\s*"prestop"\]', text), "preStop"
    probe = re.search(r"readinessProbe:\s*\n\s*httpGet:\s*\n\s*path:\s*(\S+)\s*(?:#.*)?\n"
                      r"\s*port:\s*(\S+)", text)
    assert probe, "readinessProbe with httpGet path and port"
    assert probe.groups() == ("/ready", port), probe.groups()
    annotations = dict(re.findall(r'^\s*prometheus\.io/(\w+):\s*"?([^"\s#]+)"?', text, re.M))
    assert annotations == {"scrape": "true", "port": port, "path": "/metrics"}, annotations

    budget = values.duration(str(cfg.get("shutdown", {}).get("budget", "30s")))
    assert grace_period(manifest) > budget, (grace_period(manifest), budget)


def test_the_readme_configuration_fits(tmp_path: Path) -> None:
    """README's example configuration is valid and fits the grace period its comment names."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```toml\n(\[shutdown\]\nbudget = .*?)```", text, re.S)
    assert block, "README has no [shutdown] example"
    grace = re.search(r"terminationGracePeriodSeconds \((\d+)\)", block.group(1))
    assert grace, "the example names its grace period"
    config = tmp_path / "readme.toml"
    config.write_text(block.group(1))
    result = check(config, int(grace.group(1)))
    assert result.returncode == 0, result.stdout + result.stderr
