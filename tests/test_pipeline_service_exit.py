"""The service exiting before or during the pipeline: deregister still runs, the
waiting phases are skipped, and gracerun exits with the service's code."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Harness, HookServer, harness, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _full_pipeline(hooks: HookServer) -> str:
    """Every phase; propagate and drain would run for 10 s each."""
    hooks.route("/busy", body=b"1")
    return f"""
[shutdown]
budget = "30s"
stop_grace = "5s"
[[shutdown.notify.hooks]]
type = "http"
url = "{hooks.url('/notify')}"
timeout = "20s"
[[shutdown.deregister.hooks]]
type = "http"
url = "{hooks.url('/deregister')}"
timeout = "20s"
[shutdown.propagate]
sleep = "10s"
[shutdown.drain]
interval = "100ms"
timeout = "10s"
[shutdown.drain.probe]
type = "http"
url = "{hooks.url('/busy')}"
"""


@pytest.mark.parametrize(("phase", "signum"), [
    ("notify", signal.SIGKILL), ("deregister", signal.SIGALRM),
    ("propagate", signal.SIGKILL), ("drain", signal.SIGALRM)])
def test_service_dies_during_a_phase(h: Harness, phase: str, signum: int) -> None:
    """Steps:
    1. Every phase configured: notify and deregister http hooks, a 10 s
       propagate sleep, a drain probe that always reads 1.  The hook of the phase
       under test (if a hook phase) is held behind a gate.
    2. SIGTERM to gracerun; wait until `phase` runs (its hook was called, or the
       log shows the phase started).
    3. Kill the app with `signum` (SIGKILL -> 137, SIGALRM, unhandled -> 142);
       wait until gracerun has reaped it; open the gate.
    4. Deregister has been called (after the death, when the app died in
       notify); no phase after the current one waits: propagate and drain are
       skipped or end "service exited"; gracerun exits with 128 + signum fast.
    """
    hooks = h.hook_server()
    gate = threading.Event()
    if phase in ("notify", "deregister"):
        hooks.route(f"/{phase}", gate=gate)
    run = h.start(_full_pipeline(hooks))
    run.signal()
    if phase in ("notify", "deregister"):
        hooks.wait_calls(f"/{phase}")
    else:
        run.wait_log("phase started", phase=phase)
    died = time.monotonic()
    os.kill(run.app_pid, signum)
    wait_for(run.app_reaped, "gracerun to reap the app")
    gate.set()
    assert run.wait() == 128 + signum
    assert time.monotonic() - died < 3.0

    dereg, = hooks.calls("/deregister")
    if phase == "notify":
        assert dereg.t > died
    order = ["notify", "deregister", "propagate", "drain"]
    last = max(order.index(phase), order.index("deregister"))
    assert run.phases() == [*order[:last + 1], "stop"], run.phases()
    if phase in ("propagate", "drain"):
        ended = run.phase_ended(phase)
        assert ended["reason"] == "service exited"
        assert ended["duration"] < 5.0
    assert "exit 0" not in run.record_lines()


def test_service_exits_by_itself_before_any_signal(h: Harness) -> None:
    """Steps:
    1. Every phase configured, notify a SIGUSR1 hook; the app's port is already
       taken, so it exits 1 at start-up, before any signal.
    2. gracerun starts the shutdown on the exit: deregister is called, notify,
       propagate and drain are skipped, and gracerun exits 1.
    """
    hooks = h.hook_server()
    config = _full_pipeline(hooks).replace(
        f'type = "http"\nurl = "{hooks.url("/notify")}"', 'type = "signal"\nsignal = "SIGUSR1"')
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", h.port))
        taken.listen()
        run = h.start(config, ready=False)
        assert run.wait() == 1
    assert len(hooks.calls("/deregister")) == 1
    assert run.phases() == ["deregister", "stop"]
    assert run.hooks("notify") == []
    assert run.record_lines() == ["exit 1"]
    assert run.find("shutdown started")[0]["trigger"] == "service exited with 1"


def test_service_stops_by_itself_while_running(h: Harness) -> None:
    """Steps:
    1. Every phase configured, notify a SIGUSR1 hook.
    2. SIGTERM straight to the app (not to gracerun): it stops by itself, exit 0.
    3. Deregister is called after the app exited; no SIGUSR1 and no second
       SIGTERM reach the app; gracerun exits 0.
    """
    hooks = h.hook_server()
    config = _full_pipeline(hooks).replace(
        f'type = "http"\nurl = "{hooks.url("/notify")}"', 'type = "signal"\nsignal = "SIGUSR1"')
    run = h.start(config)
    os.kill(run.app_pid, signal.SIGTERM)
    assert run.wait() == 0
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    assert len(hooks.calls("/deregister")) == 1
    assert run.phases() == ["deregister", "stop"]
    assert run.find("shutdown started")[0]["trigger"] == "service exited with 0"
