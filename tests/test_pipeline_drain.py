"""The drain phase: in-flight work finishes before the service gets its stop signal."""

from __future__ import annotations

import http.client
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Background, Harness, harness, http_get, inflight, wait_for

from gracerun.clients import sockdiag

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _config(probe: str, timeout: str = "10s", budget: str = "15s") -> str:
    return f"""
[shutdown]
budget = "{budget}"
stop_grace = "2s"
[shutdown.drain]
interval = "100ms"
timeout = "{timeout}"
[shutdown.drain.probe]
{probe}
"""


@pytest.mark.parametrize("probe", ["http", "connections"])
def test_drain_waits_for_a_slow_request(h: Harness, probe: str) -> None:
    """Steps:
    1. Drain probe: GET /inflight on the app, or the kernel's view of the app's
       connections (idle 3 s, longer than the request is quiet).
    2. Start GET /work?ms=2000 and poll /inflight until it shows 1.
    3. SIGTERM to gracerun.
    4. The slow request gets 200 "done 2000" without "Connection: close" (the app
       adds that header once it has handled SIGTERM); the drain phase ends
       "drained", and the stop phase starts no earlier than the request could
       have finished; the app records exactly one SIGTERM and exits 0.
    """
    probe_toml = (f'type = "http"\nurl = "http://127.0.0.1:{h.port}/inflight"'
                  if probe == "http" else f'type = "connections"\nport = {h.port}\nidle = "3s"')
    run = h.start(_config(probe_toml))
    sent = time.monotonic()
    slow = Background(lambda: http_get(run.url("/work?ms=2000")))
    wait_for(lambda: inflight(run) == 1, "the slow request in flight")
    run.signal()

    status, body, headers = slow.result()
    assert (status, body) == (200, "done 2000\n")
    assert headers.get("connection", "").lower() != "close", \
        "the app had its SIGTERM before the request finished"
    assert run.wait() == 0
    drain = run.phase_ended("drain")
    assert drain["reason"] == "drained"
    stop = run.phase_started("stop")
    assert stop is not None
    # The request ends at sent + 2 s at the earliest; gracerun's clock starts at the SIGTERM.
    assert stop["at"] >= sent + 2.0 - run.sigterm_at - 0.1, (stop, sent, run.sigterm_at)
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]


@pytest.mark.parametrize(("idle", "held"), [("300ms", False), ("1m", True)])
def test_idle_keepalive_connection_does_not_hold_drain(h: Harness, idle: str,
                                                       held: bool) -> None:
    """Steps:
    1. Drain probe: the app's connections, idle threshold `idle`; drain timeout 4 s.
    2. Open a keep-alive connection with http.client, make one request, leave it
       open and idle; check the kernel shows it established (not vacuous).
    3. SIGTERM to gracerun.
    4. idle 300 ms: drain ends "drained" well before its timeout.
       Negative control, idle 1 m: the same idle connection counts as busy, and
       drain runs into its timeout, so the probe does see the connection.
    """
    run = h.start(_config(f'type = "connections"\nport = {h.port}\nidle = "{idle}"',
                          timeout="4s"))
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
        assert resp.getheader("Connection", "").lower() != "close"
        established = [s for s in sockdiag.tcp_sockets([h.port])
                       if s.state == sockdiag.TcpState.ESTABLISHED and s.local[1] == h.port]
        assert len(established) == 1, established
        run.signal()
        assert run.wait() == 0
    finally:
        conn.close()
    drain = run.phase_ended("drain")
    if held:
        assert drain["reason"] == "timeout"
        assert drain["duration"] >= 3.9
    else:
        assert drain["reason"] == "drained"
        assert drain["duration"] < 1.5, drain


def test_exec_probe_drains_when_the_command_succeeds(h: Harness) -> None:
    """Steps:
    1. Drain probe: exec `test ! -e FLAG` (through sh, which also appends a line
       to TRACE on each run); FLAG exists at the start.
    2. SIGTERM to gracerun; wait until the probe has run 3 times (3 TRACE lines).
    3. Remove FLAG.
    4. Drain ends "drained" after the removal and within a few intervals of it;
       gracerun exits 0.
    """
    flag, trace = h.tmp / "busy.flag", h.tmp / "probe.trace"
    flag.touch()
    run = h.start(_config(
        f'type = "exec"\ncommand = ["sh", "-c", "echo probe >> {trace}; test ! -e {flag}"]'))
    run.signal()
    wait_for(lambda: trace.exists() and len(trace.read_text().splitlines()) >= 3,
             "three drain probe runs")
    assert run.phase_started("stop") is None
    removed = time.monotonic()
    flag.unlink()
    assert run.wait() == 0

    drain = run.phase_ended("drain")
    assert drain["reason"] == "drained"
    stop = run.phase_started("stop")
    assert stop is not None
    assert stop["at"] >= removed - run.sigterm_at - 0.1, (stop, removed, run.sigterm_at)
    assert stop["at"] <= removed - run.sigterm_at + 1.0, (stop, removed, run.sigterm_at)
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]


def test_second_sigterm_during_drain_skips_to_stop(h: Harness) -> None:
    """Steps:
    1. Drain probe: GET on the hook server, which always answers "1" (never
       drained); drain timeout 20 s, budget 30 s.
    2. SIGTERM to gracerun; wait for the log's "phase started" drain.
    3. A second SIGTERM.
    4. Drain ends (superseded by stop) and stop starts at once, after "second
       signal"; gracerun exits 0 within 3 s of the second signal, and the app
       received exactly one SIGTERM (the second one is not forwarded).
    """
    hooks = h.hook_server()
    hooks.route("/busy", body=b"1")
    run = h.start(_config(f'type = "http"\nurl = "{hooks.url("/busy")}"', timeout="20s",
                          budget="30s"))
    run.signal()
    run.wait_log("phase started", phase="drain")
    hooks.wait_calls("/busy", 2)
    second = time.monotonic()
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert time.monotonic() - second < 3.0

    drain = run.phase_ended("drain")
    assert drain["reason"] == "second signal"
    assert drain["duration"] < 3.0
    assert run.find("phase ended", phase="stop")[0]["after"] == "second signal"
    assert run.find("second stop signal: skipping to the stop phase")
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
