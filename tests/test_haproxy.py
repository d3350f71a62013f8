"""The haproxy hook and probe, against a real HAProxy started by each test on loopback.

    Haproxy      `haproxy -f CFG -db` (foreground, so its PID is ours to kill) with
                 an admin stats socket on a unix path and on 127.0.0.1:<port>, a
                 user-level socket (for "Permission denied"), a frontend on
                 127.0.0.1:<port>, and backend `app` with one server `web1`
                 pointing at examples/app.py's port

Ready when both stats sockets answer `show info` and the frontend accepts.  What
HAProxy says is read back with a plain blocking socket (`ask`), independent of
the client under test.  Synchronisation is by polling against time.monotonic()
deadlines; teardown kills only the processes these tests started, by PID.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import APP, Background, Harness, free_port, harness, http_get, wait_for

from gracerun.clients import haproxy
from gracerun.config import load as config
from gracerun.config.kinds import HaproxyHook, HaproxyProbe
from gracerun.errors import ConfigError
from gracerun.lifecycle.hooks.haproxy import took_effect

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.access(HAPROXY, os.X_OK), reason="haproxy is not installed"),
]


# ------------------------------------------------------------------ HAProxy


def ask(target: str, line: str, timeout: float = 5.0) -> str:
    """One Runtime API command over a blocking socket: the answer up to EOF."""
    if "/" in target:
        sock = socket.socket(socket.AF_UNIX)
        where: Any = target
    else:
        host, _, port = target.rpartition(":")
        sock = socket.socket(socket.AF_INET)
        where = (host, int(port))
    with sock:
        sock.settimeout(timeout)
        sock.connect(where)
        sock.sendall(line.encode() + b"\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.decode()


def stat_row(target: str, backend: str = "app", server: str = "web1") -> dict[str, str]:
    answer = ask(target, "show stat")
    assert answer.startswith("# "), answer
    for row in csv.DictReader(answer[2:].splitlines()):
        if row["pxname"] == backend and row["svname"] == server:
            return row
    raise AssertionError(f"no row for {backend}/{server} in:\n{answer}")


class Haproxy:
    """A real HAProxy in the foreground, in front of `server_port`."""

    def __init__(self, server_port: int) -> None:
        # Short: a unix socket path must fit in 108 bytes, pytest's tmp_path may not.
        self.dir = Path(tempfile.mkdtemp(prefix="gr-hap-"))
        self.socket = str(self.dir / "admin.sock")
        self.user_socket = str(self.dir / "user.sock")
        self.address = f"127.0.0.1:{free_port()}"
        self.port = free_port()
        self.log = self.dir / "haproxy.log"
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(f"""
global
    stats socket {self.socket} level admin
    stats socket {self.address} level admin
    stats socket {self.user_socket} level user
    stats timeout 30s

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s

frontend fe
    bind 127.0.0.1:{self.port}
    default_backend app

backend app
    server web1 127.0.0.1:{server_port}
""")
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], capture_output=True,
                               text=True, timeout=20)
        assert check.returncode == 0, check.stderr
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        wait_for(self._ready, f"haproxy's stats sockets and frontend (log: {self.log})")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"haproxy exited {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            for target in (self.socket, self.address):
                if "Name: HAProxy" not in ask(target, "show info", timeout=1.0):
                    return False
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
        except OSError:
            return False
        return True

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by PID
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class App:
    """examples/app.py on its own (for the client tests), ours to kill by PID."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, str(APP), "--port", str(port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = Background(self.proc.stdout.readline).result()
        assert line.startswith("ready port="), line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


@pytest.fixture
def hap(h: Harness) -> Iterator[Haproxy]:
    """HAProxy whose backend server web1 is the harness's app port."""
    proxy = Haproxy(h.port)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def app(h: Harness, hap: Haproxy) -> Iterator[App]:
    running = App(h.port)
    try:
        yield running
    finally:
        running.close()


def targets(hap: Haproxy) -> dict[str, str]:
    return {"unix": hap.socket, "tcp": hap.address}


# ----------------------------------------------------------------- the client


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_client_reads_and_sets_server_state(hap: Haproxy, app: App, via: str) -> None:
    """Steps:
    1. server_stats of app/web1: status "no check" (no health check configured),
       nothing in flight.
    2. One request through HAProxy's frontend: stot grows by exactly one.
    3. set_server_state drain, then maint, then ready: the status HAProxy itself
       reports (read independently over the other socket) follows each change.
    4. command("show info") returns HAProxy's answer as text.
    """
    target = targets(hap)[via]
    other = hap.address if via == "unix" else hap.socket
    before = asyncio.run(haproxy.server_stats(target, "app", "web1", 2.0))
    assert (before.status, before.scur, before.qcur) == ("no check", 0, 0)

    status, body, _ = http_get(hap.url("/"))
    assert status == 200 and body.startswith("hello from pid"), (status, body)
    after = asyncio.run(haproxy.server_stats(target, "app", "web1", 2.0))
    assert after.stot == before.stot + 1
    assert after.stot == int(stat_row(other)["stot"])

    for state, shown in (("drain", "DRAIN"), ("maint", "MAINT"), ("ready", "no check")):
        asyncio.run(haproxy.set_server_state(target, "app", "web1", state, 2.0))
        wait_for(lambda shown=shown: stat_row(other)["status"] == shown, f"web1 {shown}")
        assert asyncio.run(haproxy.server_stats(target, "app", "web1", 2.0)).status == shown

    assert "Name: HAProxy" in asyncio.run(haproxy.command(target, "show info", 2.0))


def _error(coro: Any) -> haproxy.HaproxyError:
    with pytest.raises(haproxy.HaproxyError) as info:
        asyncio.run(coro)
    message = str(info.value)
    assert "\n" not in message, message
    return info.value


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_client_errors_name_what_is_missing(hap: Haproxy, via: str) -> None:
    """No such backend / server, an error answer, an answer too big, permission denied:
    each a one-line HaproxyError naming the socket, never a plain answer."""
    target = targets(hap)[via]
    cases: list[tuple[Any, str]] = [
        (haproxy.server_stats(target, "nope", "web1", 2.0), f"haproxy {target}: no backend nope"),
        (haproxy.server_stats(target, "app", "web9", 2.0),
         f"haproxy {target}: no server app/web9"),
        (haproxy.set_server_state(target, "nope", "web1", "drain", 2.0),
         f"haproxy {target}: no backend nope"),
        (haproxy.set_server_state(target, "app", "web9", "drain", 2.0),
         f"haproxy {target}: no server app/web9"),
        (haproxy.server_stats(target, "app", "web1;", 2.0),
         f"haproxy {target}: bad server name 'web1;'"),
        (haproxy.command(target, "show nothing-at-all", 2.0),
         f"haproxy {target}: show nothing-at-all: Unknown command"),
        (haproxy.command(target, "show stat", 2.0, max_bytes=100),
         f"haproxy {target}: show stat: answer over the 100 byte limit"),
    ]
    for coro, expected in cases:
        error = _error(coro)
        assert str(error).startswith(expected), (str(error), expected)
        assert not isinstance(error, haproxy.HaproxyTimeout)
    denied = _error(haproxy.set_server_state(hap.user_socket, "app", "web1", "drain", 2.0))
    assert str(denied) == (f"haproxy {hap.user_socket}: set server app/web1 state drain: "
                           f'Permission denied (the stats socket needs "level admin")')
    assert stat_row(hap.socket)["status"] == "no check"  # nothing changed on the way


def test_client_connection_errors(tmp_path: Path) -> None:
    """Refused (TCP), no socket file (unix), a bad address: one line each."""
    port = free_port()
    assert str(_error(haproxy.command(f"127.0.0.1:{port}", "show info", 2.0))) == \
        f"haproxy 127.0.0.1:{port}: connection refused"
    missing = str(tmp_path / "none.sock")
    assert str(_error(haproxy.command(missing, "show info", 2.0))) == \
        f"haproxy {missing}: no such socket"
    stale = tmp_path / "stale.sock"  # a socket file nobody listens on any more
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(stale))
    assert str(_error(haproxy.command(str(stale), "show info", 2.0))) == \
        f"haproxy {stale}: connection refused"
    assert "expected \"HOST:PORT\"" in str(_error(haproxy.command("localhost", "show", 2.0)))


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_client_times_out_on_a_socket_that_never_answers(tmp_path: Path, family: str) -> None:
    """A listening socket that never accepts: the kernel completes the connection
    (backlog), the command is sent, no answer comes.  HaproxyTimeout after the
    timeout, not before and not much later."""
    if family == "unix":
        listener = socket.socket(socket.AF_UNIX)
        target = str(tmp_path / "silent.sock")
        listener.bind(target)
    else:
        listener = socket.socket(socket.AF_INET)
        listener.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{listener.getsockname()[1]}"
    with listener:
        listener.listen(4)
        started = time.monotonic()
        error = _error(haproxy.server_stats(target, "app", "web1", 0.3))
        took = time.monotonic() - started
    assert isinstance(error, haproxy.HaproxyTimeout)
    assert str(error) == f"haproxy {target}: timed out after 0.3s"
    assert 0.29 <= took < 2.0, took


# ------------------------------------------------------------ gracerun, end to end

# An exec hook after the haproxy hook: what HAProxy says about web1 at that moment,
# appended to the app's record file (which the app appends its signals to).
RECORD_STATUS = """
import csv, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
for row in csv.DictReader(data.decode()[2:].splitlines()):
    if (row["pxname"], row["svname"]) == ("app", "web1"):
        with open(sys.argv[2], "a") as f:
            f.write("haproxy web1 " + row["status"] + "\\n")
"""


def test_deregister_drains_web1_and_drain_waits_for_haproxy(
        h: Harness, hap: Haproxy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps:
    1. gracerun runs the app behind HAProxy.  Deregister: the haproxy hook on the
       unix socket (its path and the server name through ${VAR}), then an exec hook
       that reads `show stat` and appends "haproxy web1 <status>" to the app's
       record file.  Drain: a haproxy probe over the TCP stats socket.
    2. GET /work?ms=1500 through HAProxy; poll `show stat` until web1's scur is 1.
    3. SIGTERM to gracerun.
    4. Once drain has started, a new request through HAProxy gets HAProxy's 503:
       web1 takes no new traffic (its only server is draining).
    5. The slow request gets 200 "done 1500"; drain ends "drained" after waiting
       for it; the stop phase begins no earlier than the request could finish; the
       record reads DRAIN, then the app's SIGTERM, then its exit 0; the hooks ran
       in order and both succeeded.
    """
    monkeypatch.setenv("GR_HAP_SOCKET", hap.socket)
    monkeypatch.setenv("GR_HAP_SERVER", "web1")
    run = h.start(f"""
[shutdown]
budget = "20s"
stop_grace = "3s"

[[shutdown.deregister.hooks]]
name = "lb"
type = "haproxy"
socket = "${{GR_HAP_SOCKET}}"
backend = "app"
server = "${{GR_HAP_SERVER:-nope}}"
timeout = "2s"

[[shutdown.deregister.hooks]]
name = "check"
type = "exec"
command = {json.dumps([sys.executable, "-c", RECORD_STATUS, hap.socket, str(h.record)])}

[shutdown.drain]
interval = "50ms"
timeout = "10s"
probe = {{ type = "haproxy", address = "{hap.address}", backend = "app", server = "web1" }}
""")
    sent = time.monotonic()
    slow = Background(lambda: http_get(hap.url("/work?ms=1500")))
    wait_for(lambda: stat_row(hap.address)["scur"] == "1", "the slow request at web1")
    run.signal()

    run.wait_log("phase started", phase="drain")
    assert stat_row(hap.address)["status"] == "DRAIN"
    status, body, _ = http_get(hap.url("/"))
    assert status == 503 and "No server is available" in body, (status, body)

    assert slow.result()[:2] == (200, "done 1500\n")
    assert run.wait() == 0
    drain = run.phase_ended("drain")
    assert drain["reason"] == "drained", drain
    assert drain["duration"] >= 0.5, drain  # it did wait for the request
    stop = run.phase_started("stop")
    assert stop is not None
    assert stop["at"] >= sent + 1.5 - run.sigterm_at - 0.1, (stop, sent, run.sigterm_at)
    assert run.record_lines() == ["haproxy web1 DRAIN", "signal SIGTERM", "exit 0"]
    hooks = [(e["hook"], e["kind"], e["outcome"]) for e in run.hooks("deregister")]
    assert hooks == [("lb", "haproxy", "ok"), ("check", "exec", "ok")]
    assert run.hooks("deregister")[0]["detail"] == \
        "app/web1: no check -> DRAIN (1 in flight)"


def test_hook_failure_is_reported_and_the_shutdown_goes_on(h: Harness, hap: Haproxy) -> None:
    """A hook naming a server HAProxy does not have fails with HAProxy's reason;
    with on_failure = "continue" the service still gets its SIGTERM and exits 0."""
    run = h.start(f"""
[shutdown]
budget = "10s"
[[shutdown.deregister.hooks]]
type = "haproxy"
address = "{hap.address}"
backend = "app"
server = "web9"
""")
    run.signal()
    assert run.wait() == 0
    (hook,) = run.hooks("deregister")
    assert (hook["hook"], hook["outcome"]) == ("haproxy-1", "failed")
    assert hook["detail"] == f"haproxy {hap.address}: no server app/web9"
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]


def test_hook_times_out_on_a_socket_that_never_answers(h: Harness, tmp_path: Path) -> None:
    """A stats socket that never answers: the hook ends "timeout" at its own 300 ms,
    and the service still gets its SIGTERM and exits 0."""
    silent = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(silent))
        listener.listen(4)
        run = h.start(f"""
[shutdown]
budget = "10s"
[[shutdown.deregister.hooks]]
type = "haproxy"
socket = "{silent}"
backend = "app"
server = "web1"
timeout = "300ms"
""")
        run.signal()
        assert run.wait() == 0
    (hook,) = run.hooks("deregister")
    assert (hook["outcome"], hook["detail"]) == ("timeout",
                                                 f"haproxy {silent}: timed out after 0.3s")
    assert 0.29 <= hook["duration"] < 1.0, hook
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]


@pytest.mark.parametrize(("state", "status", "out"), [
    ("drain", "DRAIN", True), ("drain", "MAINT", True), ("drain", "DOWN", True),
    ("drain", "DOWN 1/2", True), ("drain", "NOLB", True), ("drain", "UP", False),
    ("drain", "UP 2/3", False), ("drain", "no check", False),
    ("maint", "MAINT", True), ("maint", "MAINT (via app/web2)", True),
    ("maint", "DRAIN", False), ("maint", "UP", False),
])
def test_hook_reads_show_stat_status(state: str, status: str, out: bool) -> None:
    """Which `show stat` statuses mean the server is out of rotation for `state`."""
    assert took_effect(state, status) is out


class Traffic(threading.Thread):
    """Requests through HAProxy's frontend, each on a new connection, until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.statuses: list[int] = []
        self._done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                self.statuses.append(http_get(self.url, timeout=5)[0])
            except OSError:
                self.statuses.append(0)
            self._done.wait(0.01)  # the traffic's rate, not a synchronisation

    def stop(self) -> None:
        self._done.set()
        self.join(10)
        assert not self.is_alive()


@pytest.mark.parametrize("deregister", [True, False], ids=["deregistered", "still-in-rotation"])
def test_propagate_on_haproxy_stot_ends_quiet_once_haproxy_stops_sending(
        h: Harness, hap: Haproxy, deregister: bool) -> None:
    """Steps:
    1. Clients keep sending requests through HAProxy, each on a new connection;
       wait until web1's stot has grown by 5 (the probe has traffic to see).
    2. Propagate: adaptive (quiet 600 ms, max 3 s) on a haproxy probe's stot.
       Deregistered: a haproxy hook drains web1 first.  Negative control: no hook.
    3. SIGTERM to gracerun; the clients go on until propagate has ended.
    4. Deregistered: HAProxy answers 503 itself, web1's stot stops growing, and
       propagate ends "quiet" shortly after `quiet`, although the clients never
       stopped.  Negative control: stot keeps growing and propagate runs to "max
       reached", so the probe does see HAProxy's sessions.
    """
    hook = f"""
[[shutdown.deregister.hooks]]
type = "haproxy"
address = "{hap.address}"
backend = "app"
server = "web1"
""" if deregister else ""
    run = h.start(f"""
[shutdown]
budget = "20s"
stop_grace = "3s"
{hook}
[shutdown.propagate]
quiet = "600ms"
max = "3s"
interval = "50ms"
probe = {{ type = "haproxy", socket = "{hap.socket}", backend = "app", server = "web1" }}
""")
    start = int(stat_row(hap.socket)["stot"])
    traffic = Traffic(hap.url("/"))
    try:
        wait_for(lambda: int(stat_row(hap.socket)["stot"]) >= start + 5, "traffic at web1")
        run.signal()
        run.wait_log("phase ended", phase="propagate")
    finally:
        traffic.stop()
    assert run.wait() == 0
    propagate = run.phase_ended("propagate")
    if deregister:
        assert propagate["reason"] == "quiet", propagate
        assert 0.55 <= propagate["duration"] < 2.0, propagate
        assert 503 in traffic.statuses  # the clients went on, HAProxy turned them away
    else:
        assert propagate["reason"] == "max reached", propagate
        assert propagate["duration"] >= 2.9, propagate
        assert 503 not in traffic.statuses
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]


# ------------------------------------------------------------- configuration


def _build(text: str, env: dict[str, str] | None = None) -> config.Config:
    return config.build(tomllib.loads(text), env=env if env is not None else {})


def _problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _build(text, env)
    return info.value.problems


HOOK = '[[shutdown.deregister.hooks]]\ntype = "haproxy"\n'
DRAIN = "[shutdown.drain]\nprobe = { type = \"haproxy\", %s }\n"


def test_config_reads_the_hook_and_probes() -> None:
    cfg = _build(HOOK + 'socket = "${SOCK}"\nbackend = "${BE:-app}"\nserver = "web1"\n'
                 + '[[shutdown.notify.hooks]]\ntype = "haproxy"\naddress = "[::1]:9999"\n'
                   'backend = "app"\nserver = "web1"\nstate = "maint"\ntimeout = "1s"\n'
                 + '[shutdown.propagate]\nquiet = "1s"\n'
                   'probe = { type = "haproxy", socket = "admin.sock", backend = "app", '
                   'server = "web1" }\n'
                 + DRAIN % 'address = "127.0.0.1:9999", backend = "app", server = "web1"',
                 env={"SOCK": "/run/haproxy/admin.sock"})
    assert cfg.plan is not None
    (hook,) = cfg.plan.deregister.hooks
    assert hook == HaproxyHook(name="haproxy-1", timeout=5.0, socket="/run/haproxy/admin.sock",
                               backend="app", server="web1", state="drain")
    assert hook.kind == "haproxy" and hook.target == "/run/haproxy/admin.sock"
    (notify,) = cfg.plan.notify.hooks
    assert isinstance(notify, HaproxyHook)
    assert (notify.target, notify.state, notify.timeout) == ("[::1]:9999", "maint", 1.0)
    assert cfg.plan.propagate is not None and cfg.plan.drain is not None
    # A relative socket path keeps a "/", which is what tells a path from HOST:PORT.
    assert cfg.plan.propagate.probe == HaproxyProbe(socket="./admin.sock", backend="app",
                                                    server="web1")
    assert cfg.plan.drain.probe == HaproxyProbe(address="127.0.0.1:9999", backend="app",
                                                server="web1", timeout=2.0)


WHERE = "shutdown.deregister.hooks[0]"
CONFIG_CASES: list[tuple[str, str, list[str]]] = [
    ("neither socket nor address", HOOK + 'backend = "app"\nserver = "web1"\n',
     [f'{WHERE}: expected "socket" (the path of HAProxy\'s stats socket) or "address" '
      '(its "HOST:PORT")']),
    ("both socket and address",
     HOOK + 'socket = "/a.sock"\naddress = "127.0.0.1:1"\nbackend = "app"\nserver = "web1"\n',
     [f'{WHERE}.address: expected either "socket" or "address", not both']),
    ("no backend, no server", HOOK + 'socket = "/a.sock"\n',
     [f"{WHERE}.backend: missing; expected the backend name in HAProxy's configuration, "
      'e.g. "app"',
      f"{WHERE}.server: missing; expected the server name in HAProxy's configuration, "
      'e.g. "web1"']),
    ("bad state", HOOK + 'socket = "/a.sock"\nbackend = "app"\nserver = "web1"\n'
     'state = "ready"\n',
     [f"{WHERE}.state: expected one of drain, maint, got 'ready'"]),
    ("name that would split the command", HOOK + 'socket = "/a.sock"\nbackend = "app"\n'
     'server = "web1; set server app/web2 state maint"\n',
     [f"{WHERE}.server: expected an HAProxy server name (letters, digits, '_', '-', '.', "
      "':'), got 'web1; set server app/web2 state maint'"]),
    ("address without a port", HOOK + 'address = "localhost"\nbackend = "app"\nserver = "w"\n',
     [f'{WHERE}.address: expected the "HOST:PORT" of HAProxy\'s stats socket, such as '
      "\"127.0.0.1:9999\", got 'localhost'"]),
    ("address port out of range", HOOK + 'address = "127.0.0.1:70000"\nbackend = "app"\n'
     'server = "w"\n',
     [f'{WHERE}.address: expected the "HOST:PORT" of HAProxy\'s stats socket, such as '
      "\"127.0.0.1:9999\", got '127.0.0.1:70000'"]),
    ("unset variable", HOOK + 'socket = "/a.sock"\nbackend = "${GR_HAP_UNSET}"\n'
     'server = "web1"\n',
     [f"{WHERE}.backend: environment variable GR_HAP_UNSET is not set "
      "(use ${GR_HAP_UNSET:-default})"]),
    ("unknown key", HOOK + 'socket = "/a.sock"\nbackend = "app"\nserver = "web1"\n'
     'sever = "x"\n',
     [f'{WHERE}.sever: unknown key (did you mean "server"?); expected one of: address, '
      "backend, name, on_failure, server, socket, state, timeout, type"]),
    ("probe without backend and server", DRAIN % 'socket = "/a.sock"',
     ["shutdown.drain.probe.backend: missing; expected the backend name in HAProxy's "
      'configuration, e.g. "app"',
      "shutdown.drain.probe.server: missing; expected the server name in HAProxy's "
      'configuration, e.g. "web1"']),
    ("probe with both socket and address",
     DRAIN % 'socket = "/a.sock", address = "127.0.0.1:1", backend = "a", server = "b"',
     ['shutdown.drain.probe.address: expected either "socket" or "address", not both']),
    ("probe with a state", DRAIN % 'socket = "/a.sock", backend = "a", server = "b", '
     'state = "drain"',
     ["shutdown.drain.probe.state: unknown key"]),
    ("haproxy is no readiness probe",
     '[server]\nready_probe = { type = "haproxy", socket = "/a.sock", backend = "a", '
     'server = "b" }\n',
     ["server.ready_probe.type: expected one of http, tcp, got 'haproxy'"]),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CONFIG_CASES],
                         ids=[c[0] for c in CONFIG_CASES])
def test_config_errors(text: str, expected: list[str]) -> None:
    problems = _problems(text)
    assert len(problems) == len(expected), problems
    for problem, want in zip(problems, expected, strict=True):
        assert problem.startswith(want), (problem, want)


@pytest.mark.parametrize("table", [
    ("shutdown.notify.hooks", {"type": "haproxy", "socket": "/a", "backend": "a", "server": "b"}),
    ("shutdown.drain.probe", {"type": "haproxy", "socket": "/a", "backend": "a", "server": "b"}),
], ids=["hook", "probe"])
def test_docs_name_every_haproxy_key(table: tuple[str, dict[str, Any]]) -> None:
    """Each key the validator knows for the haproxy hook and probe is in the docs."""
    path, data = table
    *parents, last = path.split(".")
    nested: dict[str, Any] = {last: [{**data, "zz": 1}] if last == "hooks" else {**data, "zz": 1}}
    for name in reversed(parents):
        nested = {name: nested}
    with pytest.raises(ConfigError) as info:
        config.build(nested)
    (problem,) = [p for p in info.value.problems if ".zz:" in p]
    known = problem.split("expected one of: ")[1].split(", ")
    doc = DOC.read_text()
    assert "### haproxy" in doc
    missing = [key for key in known if f"`{key}`" not in doc]
    assert not missing, missing
