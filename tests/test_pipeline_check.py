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


def test_check_warns_of_a_connections_drain_with_nothing_before_it(h: Harness) -> None:
    """A connections drain with no deregister and no propagate: valid (exit 0) but warned
    about; with a propagate phase before it the warning goes away (negative control)."""
    drain = '[shutdown.drain]\nprobe = { type = "connections", port = 8080 }\ntimeout = "5s"\n'
    code, out = _check(h, drain)
    assert code == 0, out
    assert "warning: drain relies on a connections probe with no deregister" in out
    code, out = _check(h, drain + '[shutdown.propagate]\nsleep = "2s"\n')
    assert code == 0, out
    assert "warning" not in out


def test_check_warns_of_a_restore_without_a_readiness_probe(h: Harness) -> None:
    """A deregister hook that the start-up puts back, with no startup.probe: warned; with a
    probe, not."""
    hook = ('[[shutdown.deregister.hooks]]\ntype = "haproxy"\nsocket = "/run/haproxy.sock"\n'
            'backend = "app"\nserver = "web1"\n')
    code, out = _check(h, hook)
    assert code == 0, out
    assert "warning: the start-up puts the instance back into rotation as soon as" in out
    code, out = _check(h, hook + '[startup]\nprobe = { type = "tcp", port = 8080 }\n')
    assert code == 0, out
    assert "warning" not in out
