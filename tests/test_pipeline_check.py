"""`gracerun check`: the planned shutdown timeline against the budget and the
Kubernetes grace period."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import DEADLINE, Harness, harness, refused_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _check(h: Harness, config: str, *args: str) -> tuple[int, str]:
    path = h.write_config(config, "check.toml")
    proc = h.client("check", "--config", str(path), *args)
    out, err = proc.communicate(timeout=DEADLINE)
    return proc.returncode, out.decode() + err.decode()


def test_check_says_fits_when_the_phases_fit(h: Harness) -> None:
    """Steps: notify sleep 1 s + deregister http 2 s + propagate 1 s + drain 3 s +
    stop grace 2 s = 9 s in a 10 s budget, grace period 12 s: `gracerun check`
    prints "fits" for both and exits 0."""
    code, out = _check(h, f"""
[shutdown]
budget = "10s"
stop_grace = "2s"
[[shutdown.notify.hooks]]
type = "sleep"
duration = "1s"
[[shutdown.deregister.hooks]]
type = "http"
url = "{refused_url()}"
timeout = "2s"
[shutdown.propagate]
sleep = "1s"
[shutdown.drain]
timeout = "3s"
probe = {{ type = "http", url = "{refused_url('/inflight')}" }}
""", "--grace-period", "12")
    assert code == 0, out
    assert "fits: worst case 9.000s within budget 10.000s" in out
    assert "fits Kubernetes" in out
    assert "DOES NOT FIT" not in out


def test_check_catches_the_classic_mistake(h: Harness) -> None:
    """Steps: a 35 s sleep hook in notify with budget 35 s and
    terminationGracePeriodSeconds 35: the phases plus the stop grace exceed the
    budget, and the budget leaves no margin before the kubelet's SIGKILL;
    `gracerun check --grace-period 35` says DOES NOT FIT (both) and exits 1."""
    code, out = _check(h, """
[shutdown]
budget = "35s"
[[shutdown.notify.hooks]]
type = "sleep"
duration = "35s"
""", "--grace-period", "35")
    assert code == 1, out
    assert "DOES NOT FIT: worst case 40.000s exceeds budget 35.000s" in out
    assert "DOES NOT FIT Kubernetes" in out
