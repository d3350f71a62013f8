"""The propagate phase: a fixed sleep, or adaptive until new traffic stops."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Background, Harness, harness

pytestmark = pytest.mark.timeout(60)

SLACK = 0.4  # scheduling on a loaded 2-core machine


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _adaptive(port: int) -> str:
    return f"""
[shutdown]
budget = "20s"
stop_grace = "2s"
[shutdown.propagate]
quiet = "500ms"
max = "10s"
interval = "100ms"
[shutdown.propagate.probe]
type = "connections"
port = {port}
"""


def test_adaptive_propagate_without_traffic_ends_after_quiet(h: Harness) -> None:
    """Steps:
    1. Adaptive propagate: quiet 500 ms, max 10 s, interval 100 ms, a connections
       probe on the app's port; no client traffic at all.
    2. SIGTERM to gracerun.
    3. Propagate ends "quiet" after 500 ms and within quiet + 1 interval + slack.
    """
    run = h.start(_adaptive(h.port))
    run.signal()
    assert run.wait() == 0
    propagate = run.phase_ended("propagate")
    assert propagate["reason"] == "quiet"
    assert 0.5 - 0.01 <= propagate["duration"] <= 0.5 + 0.1 + SLACK, propagate
    assert run.phases() == ["propagate", "stop"]


def test_adaptive_propagate_waits_while_new_connections_arrive(h: Harness) -> None:
    """Steps:
    1. The same adaptive propagate (quiet 500 ms, max 10 s).
    2. A client opens a new connection to the app every 200 ms for 2 s, keeping
       each open until the next (longer than the probe interval, so each is seen).
    3. SIGTERM to gracerun right after the first connection.
    4. Propagate ends "quiet", no sooner than 2 s after the client started (the
       last new connection) and before max.
    """
    run = h.start(_adaptive(h.port))
    started = threading.Event()

    def traffic() -> int:
        begin, opened, previous = time.monotonic(), 0, None
        while time.monotonic() - begin < 2.0:
            conn = socket.create_connection(("127.0.0.1", h.port), timeout=5)
            opened += 1
            if previous is not None:
                previous.close()
            previous = conn
            started.set()
            time.sleep(0.2)  # the traffic's pace, not synchronisation
        if previous is not None:
            previous.close()
        return opened

    client = Background(traffic)
    assert started.wait(10)
    began = time.monotonic()
    run.signal()
    assert client.result() >= 9
    assert run.wait() == 0
    propagate = run.phase_ended("propagate")
    assert propagate["reason"] == "quiet"
    # The client ran until began + ~2 s; the phase needs quiet 0.5 s after that.
    assert propagate["duration"] >= 2.0 - (run.sigterm_at - began) - 0.2, propagate
    assert propagate["duration"] < 6.0, propagate


def test_fixed_propagate_sleep(h: Harness) -> None:
    """Steps:
    1. Propagate: sleep = "1s".
    2. SIGTERM to gracerun.
    3. Propagate ends "slept" after about 1 s; then the app gets its SIGTERM.
    """
    run = h.start("""
[shutdown]
budget = "10s"
stop_grace = "2s"
[shutdown.propagate]
sleep = "1s"
""")
    run.signal()
    assert run.wait() == 0
    propagate = run.phase_ended("propagate")
    assert propagate["reason"] == "slept"
    assert 1.0 - 0.01 <= propagate["duration"] <= 1.0 + SLACK, propagate
    stop = run.phase_started("stop")
    assert stop is not None and stop["at"] >= 0.99
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
