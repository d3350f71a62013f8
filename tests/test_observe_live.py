"""The endpoint, metrics and state file, through real gracerun processes and real signals.

The service is a small script written into the test's directory (SERVICE): it
records signals, asks gracerun's /ready the moment SIGTERM arrives (so the
record proves /ready turned 503 before the service was signalled), and can
leave an orphan behind that ignores SIGTERM and lingers until the test
creates a release file, which holds gracerun in its stop phase for as long
as the test needs to look at it.
"""

from __future__ import annotations

import http.client
import json
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import Launcher, Proc, gracerun, wait_for
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "examples" / "app.py"
PY = sys.executable

SERVICE = textwrap.dedent('''
    import os, signal, socket, subprocess, sys, time, urllib.error, urllib.request
    record, ready_url, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
    flags = sys.argv[4:]
    release = record + ".release"

    def log(line):
        with open(record, "a") as fh:
            fh.write(line + "\\n")

    def ready_status():
        try:
            with urllib.request.urlopen(ready_url, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            return type(exc).__name__

    if "--orphan" in flags:  # a grandchild that ignores SIGTERM, orphaned when we exit
        orphan = subprocess.Popen([sys.executable, "-c",
            "import os, signal, sys, time\\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
            "print('ignoring', flush=True)\\n"
            "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\\n", release],
            stdout=subprocess.PIPE)
        orphan.stdout.readline()  # handshake: SIGTERM is ignored from here on
    listener = None
    waiting = {signal.SIGTERM, signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, waiting)
    print("ready", flush=True)
    while True:
        got = signal.sigtimedwait(waiting, 0.02)
        if "--listen-when" in flags and listener is None:
            i = flags.index("--listen-when")
            if os.path.exists(flags[i + 1]):
                listener = socket.create_server(("127.0.0.1", int(flags[i + 2])))
                listener.setblocking(False)
                log("listening")
        if listener is not None:
            try:
                listener.accept()[0].close()
                log("accepted")
            except BlockingIOError:
                pass
        if got is None:
            continue
        if got.si_signo == signal.SIGUSR1:
            log("signal SIGUSR1")
            continue
        log(f"signal SIGTERM ready={ready_status()}")
        break
    if "--linger" in flags:
        while not os.path.exists(release):
            time.sleep(0.01)
    log(f"exit {code}")
    sys.exit(code)
''')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Http:
    status: int
    headers: dict[str, str]
    body: str


def get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
        ) -> Http | None:
    """One request to gracerun's endpoint; None while nothing listens."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Http(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                    resp.read().decode())
    except (ConnectionRefusedError, ConnectionResetError):
        return None
    finally:
        conn.close()


def status(port: int, path: str) -> int:
    """The status of GET path, 0 while nothing listens."""
    resp = get(port, path)
    return 0 if resp is None else resp.status


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_until(port: int, predicate: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape /metrics until predicate holds for the samples; return them."""
    found: list[Samples] = []

    def check() -> bool:
        values = scrape(port)
        if predicate(values):
            found.append(values)
            return True
        return False

    wait_for(check, what=what)
    return found[0]


def scrape(port: int) -> Samples:
    """/metrics as {(sample name, sorted labels): value}."""
    resp = get(port, "/metrics")
    assert resp is not None and resp.status == 200
    return samples(resp.body)


def samples(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def metric(values: Samples, name: str,
           **labels: str) -> float | None:
    return values.get((name, tuple(sorted(labels.items()))))


def phase_now(values: Samples) -> list[str]:
    return [dict(labels)["phase"] for (name, labels), v in values.items()
            if name == "gracerun_shutdown_phase" and v == 1.0]


@dataclass
class Run:
    proc: Proc
    port: int
    record: Path
    dir: Path

    def lines(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def release(self) -> None:
        Path(str(self.record) + ".release").touch()


@pytest.fixture
def start(launcher: Launcher, tmp_path: Path) -> Callable[..., Run]:
    """Start gracerun with a config (TOML text, {port} and {dir} filled in) and SERVICE."""
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    count = 0

    def run(toml: str, *flags: str, code: int = 0, wait_ready: bool = True,
            port: int | None = None, loop: str = "uvloop", wrap: tuple[str, ...] = ()
            ) -> Run:
        nonlocal count
        count += 1
        port = port or free_port()
        config = tmp_path / f"gracerun{count}.toml"
        config.write_text(toml.format(port=port, dir=tmp_path))
        record = tmp_path / f"record{count}"
        cmd = [PY, str(script), str(record), f"http://127.0.0.1:{port}/ready", str(code),
               *flags]
        argv = gracerun("--config", str(config), "--event-loop", loop, cmd=cmd)
        proc = launcher.start([*wrap, *argv])
        result = Run(proc, port, record, tmp_path)
        if wait_ready:
            proc.expect("^ready$")
        return result

    return run


BASIC = """
[server]
listen = "127.0.0.1:{port}"
[state]
file = "{dir}/state/last.json"
textfile = "{dir}/textfile/gracerun.prom"
"""


def test_metrics_through_a_real_shutdown(start: Callable[..., Run]) -> None:
    """Signals, exit code, phases and orphans as /metrics and the textfile show them.

    1. Start gracerun serving on loopback; the service leaves an orphan behind.
    2. /live and /ready answer 200; the phase is "running".
    3. SIGUSR1 to gracerun: the service records it, the counter reads 1.
    4. SIGTERM: the service asks /ready as it gets the signal: 503.
    5. The service exits 3; its orphan ignores SIGTERM, so gracerun stays in "stop":
       /metrics shows the exit code, the stop phase in progress, the budget counting down.
    6. Release the orphan: gracerun reaps it, exits 3, and the textfile holds the final
       values (phase "done", one zombie reaped).
    """
    run = start(BASIC, "--orphan", code=3)
    assert status(run.port, "/live") == 200
    assert status(run.port, "/ready") == 200
    before = scrape(run.port)
    assert phase_now(before) == ["running"]
    assert metric(before, "gracerun_service_exit_code") is None

    run.proc.send(10)  # SIGUSR1
    wait_for(lambda: "signal SIGUSR1" in run.lines(), what="the service to get SIGUSR1")
    assert metric(scrape(run.port), "gracerun_signals_forwarded_total", signal="SIGUSR1") == 1

    run.proc.send(15)
    wait_for(lambda: "exit 3" in run.lines(), what="the service to exit")
    assert "signal SIGTERM ready=503" in run.lines()
    during = scrape_until(run.port, lambda v: metric(v, "gracerun_service_exit_code") == 3,
                          what="the exit code in /metrics")
    assert phase_now(during) == ["stop"]
    assert metric(during, "gracerun_shutdown_in_progress") == 1
    remaining = metric(during, "gracerun_shutdown_budget_remaining_seconds")
    assert remaining is not None and 0 < remaining < 30
    assert status(run.port, "/ready") == 503
    assert status(run.port, "/live") == 200

    run.release()
    assert run.proc.wait() == 3
    final = samples((run.dir / "textfile" / "gracerun.prom").read_text())
    assert phase_now(final) == ["done"]
    assert metric(final, "gracerun_service_exit_code") == 3
    assert metric(final, "gracerun_zombies_reaped_total") == 1
    assert metric(final, "gracerun_signals_forwarded_total", signal="SIGUSR1") == 1
    assert metric(final, "gracerun_shutdown_in_progress") == 0
    assert (metric(final, "gracerun_shutdown_phase_duration_seconds_count", phase="stop")
            == 1)
    assert run.proc.stderr == ""  # quiet by default, no tracebacks at exit


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_requests_the_endpoint_refuses(start: Callable[..., Run], loop: str) -> None:
    """405, 404, HEAD, oversized and stalled requests, on both event loops."""
    run = start(BASIC, loop=loop)
    post = get(run.port, "/metrics", method="POST")
    assert post is not None and post.status == 405 and post.headers["allow"] == "GET, HEAD"
    assert status(run.port, "/nope") == 404
    head = get(run.port, "/metrics", method="HEAD")
    assert head is not None and head.status == 200 and head.body == ""
    assert int(head.headers["content-length"]) > 1000
    # Headers beyond the bound are refused, and the server carries on.
    with socket.create_connection(("127.0.0.1", run.port), timeout=5) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
    # A client that sends half a request and stalls does not block anyone else.
    with socket.create_connection(("127.0.0.1", run.port), timeout=5) as stalled:
        stalled.sendall(b"GET /live HT")
        assert status(run.port, "/live") == 200
    run.proc.send(15)
    assert run.proc.wait() == 0


def test_openmetrics_and_promtool(start: Callable[..., Run], tmp_path: Path) -> None:
    """/metrics passes `promtool check metrics`; OpenMetrics is served when asked for."""
    run = start(BASIC + """
[shutdown.deregister]
hooks = [{{ type = "exec", name = "lb-out", command = ["true"] }}]
""")
    text = get(run.port, "/metrics")
    assert text is not None and text.headers["content-type"].startswith("text/plain")
    check = subprocess.run(["promtool", "check", "metrics"], input=text.body,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    om = get(run.port, "/metrics",
             headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om is not None
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.body.endswith("# EOF\n")
    names = {f.name for f in parse_om(om.body)}
    assert {"gracerun_shutdown_phase", "gracerun_hook_runs", "gracerun_build_info"} <= names
    run.proc.send(15)
    assert run.proc.wait() == 0
    final = (tmp_path / "textfile" / "gracerun.prom").read_text()
    check = subprocess.run(["promtool", "check", "metrics"], input=final,
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert metric(samples(final), "gracerun_hook_runs_total", hook="lb-out",
                  phase="deregister", outcome="ok") == 1


def test_port_in_use_is_a_startup_error(start: Callable[..., Run], tmp_path: Path) -> None:
    """A taken port: exit 2, one line naming the address, and the service never starts."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        run = start(BASIC, port=port, wait_ready=False)
        assert run.proc.wait() == 2
    assert run.proc.stderr == (f"gracerun: error: server.listen: cannot listen on "
                               f"127.0.0.1:{port}: address already in use\n")
    assert run.proc.out.lines == []  # the service never printed "ready"


def test_ready_waits_for_the_ready_probe(start: Callable[..., Run], tmp_path: Path) -> None:
    """/ready stays 503 until the service's port accepts, then polling stops.

    1. The service opens its port only once the test creates a file, and logs every
       connection it accepts there.
    2. /ready: 503 while the port is closed, although the process is up.
    3. Create the file: /ready turns 200 after one accepted probe connection.
    4. Polling has stopped: over 10 more probe intervals no second connection arrives
       (an observation window for something that must not happen, not a sync sleep).
    """
    app_port = free_port()
    gate = tmp_path / "open"
    run = start(BASIC.replace("[state]", f"""ready_interval = "50ms"
[server.ready_probe]
type = "tcp"
port = {app_port}
[state]"""), "--listen-when", str(gate), str(app_port))
    assert status(run.port, "/ready") == 503
    assert status(run.port, "/live") == 200
    gate.touch()
    wait_for(lambda: status(run.port, "/ready") == 200,
             what="/ready to turn 200")
    wait_for(lambda: "accepted" in run.lines(), what="the probe's connection")
    deadline = time.monotonic() + 10 * 0.05
    while time.monotonic() < deadline:
        assert run.lines().count("accepted") == 1, "the ready probe kept polling"
        time.sleep(0.02)
    run.proc.send(15)
    assert run.proc.wait() == 0


def test_state_file_is_read_back_after_a_restart(start: Callable[..., Run],
                                                 tmp_path: Path) -> None:
    """The first run's shutdown is the second run's gracerun_last_shutdown_*."""
    first = start(BASIC, code=7)
    first.proc.send(15)
    assert first.proc.wait() == 7
    saved = json.loads((tmp_path / "state" / "last.json").read_text())
    assert saved["schema"] == 1 and saved["service_exit_code"] == 7
    assert saved["trigger"] == "signal SIGTERM" and saved["killed"] is False
    assert [p["name"] for p in saved["phases"]] == ["stop"]

    second = start(BASIC)
    values = scrape(second.port)
    assert metric(values, "gracerun_last_shutdown_exit_code") == 7
    assert metric(values, "gracerun_last_shutdown_killed") == 0
    assert metric(values, "gracerun_last_shutdown_duration_seconds") == pytest.approx(
        saved["duration_seconds"])
    assert metric(values, "gracerun_last_shutdown_phase_seconds", phase="stop") == (
        pytest.approx(saved["phases"][0]["duration"]))
    assert metric(values, "gracerun_last_shutdown_timestamp_seconds") == pytest.approx(
        saved["started_at"])
    second.proc.send(15)
    assert second.proc.wait() == 0


def test_corrupt_state_file_is_one_warning(start: Callable[..., Run], tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "last.json").write_text("{not json")
    run = start(BASIC)
    assert metric(scrape(run.port), "gracerun_last_shutdown_exit_code") is None
    run.proc.send(15)
    assert run.proc.wait() == 0
    warnings = [line for line in run.proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "ignoring the previous state file" in warnings[0]
    assert json.loads((tmp_path / "state" / "last.json").read_text())["schema"] == 1


def test_a_plain_run_imports_nothing_more(launcher: Launcher, tmp_path: Path) -> None:
    """Without server/state options neither prometheus_client nor asyncio is imported;
    with only a state file, prometheus_client still is not, and the file is written."""
    rc, _, err = launcher.run([PY, "-X", "importtime", "-m", "gracerun", "--", "true"])
    assert rc == 0
    assert "prometheus_client" not in err and "asyncio" not in err
    config = tmp_path / "g.toml"
    config.write_text(f'[state]\nfile = "{tmp_path}/last.json"\n')
    rc, _, err = launcher.run([PY, "-X", "importtime", "-m", "gracerun", "--config",
                               str(config), "--", "true"])
    assert rc == 0 and "prometheus_client" not in err
    assert json.loads((tmp_path / "last.json").read_text())["exit_code"] == 0


# ------------------------------------------------------- with pre-stop phases


def test_ready_turns_503_before_the_service_is_signalled(start: Callable[..., Run]) -> None:
    """With a propagate wait the window is wide enough to watch from the outside.

    1. Start with a 1.5s propagate sleep.
    2. SIGTERM to gracerun; poll /ready until 503, and at that moment the service has
       not been signalled yet; the phase reads "propagate".
    3. Then the service gets SIGTERM (and saw 503 itself); the state file records the
       propagate phase at about 1.5s.
    """
    run = start(BASIC + """
[shutdown.propagate]
sleep = "1.5s"
""")
    assert status(run.port, "/ready") == 200
    run.proc.send(15)
    wait_for(lambda: status(run.port, "/ready") == 503,
             what="/ready to turn 503")
    assert not any(line.startswith("signal SIGTERM") for line in run.lines())
    assert phase_now(scrape(run.port)) == ["propagate"]
    assert run.proc.wait() == 0
    assert "signal SIGTERM ready=503" in run.lines()
    saved = json.loads((run.dir / "state" / "last.json").read_text())
    propagate = next(p for p in saved["phases"] if p["name"] == "propagate")
    assert propagate["duration"] == pytest.approx(1.5, abs=0.3)


def test_pipeline_metrics_with_the_example_app(launcher: Launcher, tmp_path: Path) -> None:
    """Hooks, drain readings and every phase's duration, with examples/app.py.

    1. app.py on a known port; notify sends SIGUSR1 (stop the consumer), deregister runs
       an exec hook that succeeds and one that fails; drain polls /inflight.
    2. A slow request is in flight when SIGTERM arrives.
    3. During drain /metrics shows one request in flight; at the end the textfile holds
       each phase's duration, the hook outcomes and a last in-flight reading of 0.
    """
    app_port, port = free_port(), free_port()
    config = tmp_path / "g.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[state]
file = "{tmp_path}/last.json"
textfile = "{tmp_path}/gracerun.prom"
[shutdown.notify]
hooks = [{{ type = "signal", name = "consumer", signal = "SIGUSR1" }}]
[shutdown.deregister]
hooks = [{{ type = "exec", name = "lb", command = ["true"] }},
         {{ type = "exec", name = "registry", command = ["false"] }}]
[shutdown.propagate]
sleep = "0.2s"
[shutdown.drain]
probe = {{ type = "http", url = "http://127.0.0.1:{app_port}/inflight" }}
interval = "50ms"
""")
    proc = launcher.start(gracerun("--config", str(config),
                                   cmd=[PY, str(APP), "--port", str(app_port)]))
    proc.expect("^ready port=")
    slow: list[int] = []

    def request() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", app_port, timeout=20)
        conn.request("GET", "/work?ms=1500")
        slow.append(conn.getresponse().status)
        conn.close()

    worker = threading.Thread(target=request)
    worker.start()
    wait_for(lambda: (resp := get(app_port, "/inflight")) and resp.body == "1",
             what="the slow request to be in flight")
    proc.send(15)
    draining = scrape_until(port, lambda v: phase_now(v) == ["drain"]
                            and metric(v, "gracerun_drain_inflight") == 1,
                            what="the drain phase to read one request in flight")
    assert metric(draining, "gracerun_hook_runs_total", hook="registry", phase="deregister",
                  outcome="failed") == 1
    assert proc.wait(20) == 0
    worker.join(10)
    assert slow == [200]
    final = samples((tmp_path / "gracerun.prom").read_text())
    assert metric(final, "gracerun_drain_inflight") == 0
    for phase in ("notify", "deregister", "propagate", "drain", "stop"):
        assert (metric(final, "gracerun_shutdown_phase_duration_seconds_count", phase=phase)
                == 1), phase
    assert metric(final, "gracerun_hook_runs_total", hook="lb", phase="deregister",
                  outcome="ok") == 1
    assert metric(final, "gracerun_hook_runs_total", hook="consumer", phase="notify",
                  outcome="ok") == 1
    drain = metric(final, "gracerun_shutdown_phase_seconds", phase="drain")
    assert drain is not None and 0.5 < drain < 2.0


def test_a_killed_shutdown_is_recorded_and_reported(start: Callable[..., Run],
                                                    launcher: Launcher, tmp_path: Path) -> None:
    """The budget runs out: the record says so, and `gracerun report` draws it.

    1. A 1s budget and a service that ignores SIGTERM (it waits for a release file
       that never comes).
    2. SIGTERM: gracerun SIGKILLs the tree at the budget and exits 137.
    3. The textfile counts one escalation; the state file says killed, with a kill phase.
    4. `gracerun report` renders it as text and as SVG.
    """
    run = start(BASIC + """
[shutdown]
budget = "1s"
""", "--linger")
    run.proc.send(15)
    assert run.proc.wait() == 137
    final = samples((tmp_path / "textfile" / "gracerun.prom").read_text())
    assert metric(final, "gracerun_sigkill_escalations_total") == 1
    assert phase_now(final) == ["done"]
    assert metric(final, "gracerun_service_exit_code") == 137
    path = tmp_path / "state" / "last.json"
    saved = json.loads(path.read_text())
    assert saved["killed"] is True and saved["service_exit_code"] == 137
    assert [p["name"] for p in saved["phases"]] == ["stop", "kill"]

    rc, out, err = launcher.run([PY, "-m", "gracerun", "report", str(path)])
    assert (rc, err) == (0, "")
    assert "budget spent, SIGKILL sent to the whole tree" in out
    assert next(line for line in out.splitlines() if line.startswith("kill")).endswith(
        "SIGKILL sent to the whole tree")
    svg = tmp_path / "report.svg"
    rc, out, err = launcher.run([PY, "-m", "gracerun", "report", str(path), "--format", "svg",
                                 "--output", str(svg)])
    assert (rc, out, err) == (0, "", "")
    assert svg.read_text().startswith("<svg ") and "SIGKILL" in svg.read_text()
    rc, out, err = launcher.run([PY, "-m", "gracerun", "report", str(tmp_path / "nope.json")])
    assert rc == 2 and err == f"gracerun: error: report: {tmp_path}/nope.json: no such file\n"


# ------------------------------------------------------------ hostile clients


class IdleHolder(threading.Thread):
    """Keeps `count` idle connections open to a port, opening a new one whenever the
    server closes one (with `reconnect`), as someone trying to starve the endpoint
    would; else opens `count` once and holds what is left of them."""

    def __init__(self, port: int, count: int, reconnect: bool = True) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.count = count
        self.reconnect = reconnect
        self.stopping = threading.Event()
        self.opened = 0
        self.closed_by_server = 0
        self.closed_order: list[int] = []  # which (in the order opened) the server closed
        self.full = threading.Event()

    def _open(self, sel: selectors.BaseSelector) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        except OSError:
            return
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, self.opened)
        self.opened += 1

    def run(self) -> None:
        with selectors.DefaultSelector() as sel:
            while not self.stopping.is_set():
                while ((len(sel.get_map()) < self.count and not self.stopping.is_set())
                       and (self.reconnect or self.opened < self.count)):
                    self._open(sel)
                self.full.set()
                for key, _ in sel.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(1)
                    except OSError:
                        data = b""
                    if not data:
                        self.closed_order.append(key.data)
                        sel.unregister(sock)
                        sock.close()
                        self.closed_by_server += 1
            for key in list(sel.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_idle_connections_do_not_starve_live(start: Callable[..., Run], loop: str) -> None:
    """64 idle connections used to fill the endpoint, failing /live for 10s.
    Steps:
    1. Another client holds 80 idle connections open, reopening each the server
       closes.
    2. 60 requests to /live, one after another: every one answers 200 within 1s.
    3. An idle connection is closed by the server within its header deadline
       (HEADER_TIMEOUT, 2s) even when nothing needs its slot.
    """
    run = start(BASIC, loop=loop)
    holder = IdleHolder(run.port, 80)
    holder.start()
    try:
        assert holder.full.wait(10)
        failures = live_requests(run.port, 60)
        assert not failures, (f"{len(failures)} of 60 /live requests failed or were slow: "
                              f"{failures[:5]}")
    finally:
        holder.stopping.set()
        holder.join(10)
    with socket.create_connection(("127.0.0.1", run.port), timeout=5) as idle:
        began = time.monotonic()
        assert idle.recv(1) == b""
        assert 1.5 < time.monotonic() - began < 3.0
    run.proc.send(15)
    assert run.proc.wait() == 0


@pytest.mark.parametrize(("name", "content"), [
    ("100,000 [", b"[" * 100_000),
    ("phase name not a string", json.dumps({
        "schema": 1, "trigger": "x", "started_at": None, "budget_seconds": 1,
        "duration_seconds": 1, "exit_code": 0, "service_exit_code": 0, "killed": False,
        "phases": [{"name": 7, "start": 0, "duration": 1}], "hooks": []}).encode()),
    ("NaN", b'{"schema": 1, "budget_seconds": NaN}'),
])
def test_a_tampered_state_file_is_one_warning(start: Callable[..., Run], tmp_path: Path,
                                              name: str, content: bytes) -> None:
    """A state file of 100,000 '[' crashed the start-up (RecursionError, exit 1, before
    the service: a crash loop); a phase name that is not a string made /metrics answer
    500 for the whole run.  Steps: start with the file in place: the service starts,
    /metrics answers 200 without gracerun_last_shutdown_*, one warning; SIGTERM exits 0."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "last.json").write_bytes(content)
    run = start(BASIC)
    resp = get(run.port, "/metrics")
    assert resp is not None and resp.status == 200
    assert "gracerun_last_shutdown" not in resp.body
    run.proc.send(15)
    assert run.proc.wait() == 0
    warnings = [line for line in run.proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "ignoring the previous state file" in warnings[0], warnings
    assert "Traceback" not in run.proc.stderr


def test_secrets_and_escapes_reach_no_output(launcher: Launcher, tmp_path: Path) -> None:
    """A hook URL's token appeared verbatim in the log, the state file and the report;
    a hook's output went raw to the terminal.  Steps:
    1. deregister: an http hook to a refused port with ?token=SECRET in its URL, and an
       exec hook that prints escape sequences (colour, window title, screen clear).
    2. SIGTERM; gracerun exits 0.
    3. No SECRET, and no ESC or BEL, in gracerun's log, the state file, `gracerun
       report` (text) or the SVG; the path of the URL is still shown.
    """
    secret = "s3cr3t-T0KEN"
    port = free_port()
    config = tmp_path / "g.toml"
    config.write_text(f"""
[state]
file = "{tmp_path}/last.json"
[[shutdown.deregister.hooks]]
type = "http"
name = "registry"
url = "http://127.0.0.1:{port}/nacos/v1/ns/instance?serviceName=app&token={secret}"
timeout = "1s"
[[shutdown.deregister.hooks]]
type = "exec"
name = "shout"
command = ["printf", "\\\\033[31mred\\\\033]0;title\\\\007\\\\033[2J\\\\n"]
""")
    proc = launcher.start(gracerun("--config", str(config),
                                   cmd=[PY, "-c", "import signal, time; "
                                        "print('ready', flush=True); time.sleep(30)"]))
    proc.expect("^ready$")
    proc.send(15)
    assert proc.wait() in (0, 143)
    state_text = (tmp_path / "last.json").read_text()
    rc, report_text, err = launcher.run([PY, "-m", "gracerun", "report",
                                         str(tmp_path / "last.json")])
    assert rc == 0, err
    svg = tmp_path / "r.svg"
    rc, _, err = launcher.run([PY, "-m", "gracerun", "report", str(tmp_path / "last.json"),
                               "--format", "svg", "--output", str(svg)])
    assert rc == 0, err
    for where, text in (("log", proc.stderr), ("state file", state_text),
                        ("report", report_text), ("svg", svg.read_text())):
        assert secret not in text, f"the token leaked into the {where}:\n{text}"
        assert "\x1b" not in text and "\x07" not in text, f"raw escapes in the {where}"
    assert "/nacos/v1/ns/instance?[redacted]" in proc.stderr
    assert "\\x1b[31mred\\x1b]0;title\\x07\\x1b[2J" in proc.stderr
    assert "/nacos/v1/ns/instance?[redacted]" in report_text


def live_requests(port: int, count: int) -> list[str]:
    """`count` GET /live, one after another: what went wrong or took 1s or more."""
    failures = []
    for _ in range(count):
        began = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/live")
            resp = conn.getresponse()
            outcome = f"{resp.status} {resp.read()!r}"
        except OSError as exc:
            outcome = repr(exc)
        finally:
            conn.close()
        took = time.monotonic() - began
        if outcome != "200 b'live\\n'" or took >= 1.0:
            failures.append(f"{outcome} after {took:.3f}s")
    return failures


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_at_the_cap_the_oldest_idle_connection_makes_room(start: Callable[..., Run],
                                                          loop: str) -> None:
    """Steps:
    1. gracerun with a descriptor limit of 200, so the endpoint holds 100 connections.
    2. Another client opens 150 idle connections and keeps them: 50 of the oldest are
       closed at once to make room, not the newest (and the next oldest may meet
       their 2 s head timeout meanwhile, on a loaded machine).
    3. 60 requests to /live: every one answers 200 within 1s, each pushing out one
       more of the idle connections.
    """
    run = start(BASIC, loop=loop, wrap=("prlimit", "--nofile=200:200", "--"))
    holder = IdleHolder(run.port, 150, reconnect=False)
    holder.start()
    try:
        assert holder.full.wait(10)
        wait_for(lambda: holder.closed_by_server >= 50, what="50 connections closed")
        # The oldest ones: on a loaded machine the next oldest may also have reached
        # the 2 s head timeout by now (a flake seen once in a full run), still the
        # oldest first, never a newer one.
        closed = sorted(holder.closed_order)
        assert closed == list(range(len(closed))), closed
        failures = live_requests(run.port, 60)
        assert not failures, (f"{len(failures)} of 60 /live requests failed or were slow: "
                              f"{failures[:5]}")
        wait_for(lambda: holder.closed_by_server >= 110, what="60 more connections closed")
    finally:
        holder.stopping.set()
        holder.join(10)
    run.proc.send(15)
    assert run.proc.wait() == 0
