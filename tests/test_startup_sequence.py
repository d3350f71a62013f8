"""The start-up half of the lifecycle, with a real HAProxy: put back what the shutdown took out.

    two instances of examples/app.py, each under gracerun, behind one HAProxy backend
    (web1, web2); each gracerun's deregister hook drains its own server, and the same
    hook puts it back (`set server app/webN state ready`) once its service is ready.

Synchronisation is by polling HAProxy's `show stat` and the endpoints against
monotonic deadlines; teardown kills only what these tests started, by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Gracerun, Harness, free_port, harness, http_get, wait_for
from test_haproxy import HAPROXY, ask, stat_row

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed"),
]


class TwoServerHaproxy:
    """A real HAProxy with backend app = web1 (port a) and web2 (port b), no health checks."""

    def __init__(self, port_a: int, port_b: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gr-su-"))
        self.socket = str(self.dir / "admin.sock")
        self.port = free_port()
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(f"""
global
    stats socket {self.socket} level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe
    bind 127.0.0.1:{self.port}
    default_backend app
backend app
    balance roundrobin
    server web1 127.0.0.1:{port_a}
    server web2 127.0.0.1:{port_b}
""")
        self.log = open(self.dir / "haproxy.log", "wb")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        wait_for(self._ready, "haproxy's stats socket")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"haproxy exited {self.proc.returncode}")
        try:
            return "Name: HAProxy" in ask(self.socket, "show info", timeout=1.0)
        except OSError:
            return False

    def status(self, server: str) -> str:
        return stat_row(self.socket, "app", server)["status"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Harness, Harness, TwoServerHaproxy]]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gen_a, gen_b = harness(tmp_path / "a"), harness(tmp_path / "b")
    a, b = next(gen_a), next(gen_b)
    hap = TwoServerHaproxy(a.port, b.port)
    try:
        yield a, b, hap
    finally:
        hap.close()
        for gen in (gen_a, gen_b):
            with pytest.raises(StopIteration):
                next(gen)


def config(h: Harness, hap: TwoServerHaproxy, server: str, restore: bool = True,
           extra: str = "") -> str:
    return f"""
[shutdown]
budget = "15s"
stop_grace = "3s"
[[shutdown.deregister.hooks]]
type = "haproxy"
socket = "{hap.socket}"
backend = "app"
server = "{server}"
state = "drain"
timeout = "2s"
[shutdown.drain]
probe = {{ type = "haproxy", socket = "{hap.socket}", backend = "app", server = "{server}" }}
timeout = "5s"
[startup]
probe = {{ type = "http", url = "http://127.0.0.1:{h.port}/healthz" }}
interval = "100ms"
restore = {str(restore).lower()}
{extra}
[server]
listen = "127.0.0.1:{free_port()}"
"""


def ready_url(run: Gracerun, cfg: str) -> str:
    listen = cfg.split('listen = "', 1)[1].split('"', 1)[0]
    return f"http://{listen}/ready"


def restart(h: Harness, run: Gracerun, cfg: str) -> Gracerun:
    """One step of a rolling restart: SIGTERM, wait for the exit, start it again."""
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    return h.start(cfg)


def reaches(hap: TwoServerHaproxy, pids: set[int], tries: int = 40) -> set[int]:
    """The app PIDs that answer requests through HAProxy (round robin: a few suffice)."""
    seen: set[int] = set()
    for _ in range(tries):
        status, body, _ = http_get(f"http://127.0.0.1:{hap.port}/")
        assert status == 200, body
        seen.add(int(body.split()[-1]))
        if seen == pids:
            break
    return seen


def test_a_rolling_restart_leaves_every_instance_in_rotation(
        pair: tuple[Harness, Harness, TwoServerHaproxy]) -> None:
    """Steps:
    1. A (web1) and B (web2) start; each start-up puts its server back: both in rotation.
    2. Restart A: its shutdown drains web1 (DRAIN while it is down); the new A's start-up
       sets it ready once /healthz passes; /ready answers 200 only then.
    3. Restart B the same way.
    4. Both servers are out of DRAIN and requests through HAProxy reach both new apps.
    """
    a, b, hap = pair
    cfg_a, cfg_b = config(a, hap, "web1"), config(b, hap, "web2")
    run_a, run_b = a.start(cfg_a), b.start(cfg_b)
    for run in (run_a, run_b):
        run.wait_log("phase ended", phase="register")
    for h, run, cfg, server in ((a, run_a, cfg_a, "web1"), (b, run_b, cfg_b, "web2")):
        new = restart(h, run, cfg)
        wait_for(lambda server=server: not hap.status(server).startswith(("DRAIN", "MAINT")),
                 f"{server} put back in rotation")
        wait_for(lambda new=new, cfg=cfg: http_get(ready_url(new, cfg))[0] == 200,
                 "/ready after the start-up")
        ended = new.wait_log("phase ended", phase="register")
        assert ended["reason"] == "registered"
        if server == "web1":
            run_a = new
        else:
            run_b = new
    assert not hap.status("web1").startswith(("DRAIN", "MAINT"))
    assert not hap.status("web2").startswith(("DRAIN", "MAINT"))
    assert reaches(hap, {run_a.app_pid, run_b.app_pid}) == {run_a.app_pid, run_b.app_pid}


def test_without_restore_a_drained_server_stays_drained(
        pair: tuple[Harness, Harness, TwoServerHaproxy]) -> None:
    """The negative control: with `restore = false` the restarted A stays in DRAIN (the
    outage the start-up half exists to prevent)."""
    a, _, hap = pair
    cfg_a = config(a, hap, "web1", restore=False)
    run_a = a.start(cfg_a)
    new = restart(a, run_a, cfg_a)
    wait_for(lambda: http_get(ready_url(new, cfg_a))[0] == 200, "/ready")
    assert hap.status("web1").startswith("DRAIN")


def test_ready_waits_for_the_start_up_and_a_sigterm_during_it_is_a_normal_shutdown(
        pair: tuple[Harness, Harness, TwoServerHaproxy], tmp_path: Path) -> None:
    """Steps:
    1. A start-up hook waits for a file (the test's handshake); /ready answers 503
       meanwhile, and the state is `register`.
    2. SIGTERM during the start-up: it stops, the shutdown drains web1 as usual, and
       gracerun exits 0; /ready was never 200.
    """
    a, _, hap = pair
    gate = tmp_path / "gate"
    extra = f"""
[[startup.hooks]]
type = "exec"
command = ["sh", "-c", "while [ ! -e {gate} ]; do sleep 0.05; done"]
timeout = "30s"
"""
    cfg = config(a, hap, "web1", extra=extra)
    run = a.start(cfg)
    run.wait_log("phase started", phase="register")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # the condition must hold throughout, not once
        assert http_get(ready_url(run, cfg))[0] == 503
        time.sleep(0.1)
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert "register" in [p["phase"] for p in run.find("phase started")]
    assert run.phase_ended("deregister")["reason"] == "done"
    assert hap.status("web1").startswith("DRAIN")
    gate.touch()


@pytest.mark.parametrize("on_failure", ["ready", "not-ready"])
def test_a_failed_start_up_registration_never_keeps_the_service_from_starting(
        pair: tuple[Harness, Harness, TwoServerHaproxy], tmp_path: Path,
        on_failure: str) -> None:
    """Steps: the deregister hook names an HAProxy stats socket that does not exist, so
    putting the instance back fails at start-up.
    - on_failure = "ready": the failure is logged and counted
      (gracerun_hook_runs_total{phase="register",outcome="failed"}), and /ready answers
      200: the service works, it is only missing from that load balancer.
    - on_failure = "not-ready": /ready stays 503 and the hook is retried every
      retry_interval.
    Either way the app serves, and SIGTERM ends the run normally.
    """
    a, _, hap = pair
    missing = tmp_path / "no-such.sock"
    cfg = config(a, hap, "web1", extra=f'on_failure = "{on_failure}"\n'
                                       'retry_interval = "200ms"\n')
    cfg = cfg.replace(f'socket = "{hap.socket}"\nbackend = "app"\nserver = "web1"\n'
                      'state = "drain"',
                      f'socket = "{missing}"\nbackend = "app"\nserver = "web1"\n'
                      'state = "drain"', 1)
    run = a.start(cfg)
    assert http_get(run.url("/"))[0] == 200  # the service runs whatever the registry says
    metrics = ready_url(run, cfg).replace("/ready", "/metrics")
    if on_failure == "ready":
        wait_for(lambda: http_get(ready_url(run, cfg))[0] == 200, "/ready")
        failed = [line for line in http_get(metrics)[1].splitlines()
                  if line.startswith("gracerun_hook_runs_total{") and 'phase="register"' in line
                  and 'outcome="failed"' in line]
        assert failed and failed[0].endswith(" 1.0"), failed
        assert run.wait_log("phase ended", phase="register")["reason"] == "hook failed"
    else:
        wait_for(lambda: len(run.find("start-up hooks failed; not ready, retrying")) >= 3,
                 "three retries")
        assert http_get(ready_url(run, cfg))[0] == 503
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
