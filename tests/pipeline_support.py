"""Shared pieces of the pipeline scenario tests (tests/test_pipeline_*.py).

    HookServer   a recording HTTP server in the test process that stands in for
                 registries and load balancers: it records every call and can
                 answer with given statuses, after a delay, behind a gate, hang
                 forever, or be closed (connection refused)
    Gracerun     one `python3 -m gracerun --log-format json ... -- python3
                 examples/app.py --port N --record R` run: its JSON log, the
                 app's record file, port and PID
    Harness      what one test starts (runs, hook servers, clients); its
                 teardown kills only those, then asserts that nothing is left.
                 Each module's `h` fixture is `yield from harness(tmp_path)`

Every process a test starts carries a marker in its environment, inherited by
the app and by gracerun's exec hooks and probes; "nothing is left" means no
live process carries the marker, so even an orphan that escaped gracerun is
found.  Synchronisation is by polling against time.monotonic() deadlines.

The record file doubles as an ordering log: the app appends `signal NAME` as
it handles a signal, and a HookServer given `order_log` appends `hook METHOD
PATH` when a call arrives and `hook-reply METHOD PATH STATUS` just before it
answers.  Appends of whole lines (O_APPEND) from both processes are ordered
as they happened, so the file shows the causal order of hooks and signals.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "app.py"
DEADLINE = 15.0  # seconds allowed for any condition a test waits for
MARKER_ENV = "GRACERUN_PIPELINE_TEST"

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = DEADLINE,
             interval: float = 0.01) -> T:
    """Poll `condition` until it returns something truthy; return that, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_url(path: str = "/") -> str:
    """An http URL on which connections are refused."""
    return f"http://127.0.0.1:{free_port()}{path}"


def append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:  # one write() of a whole line, O_APPEND
        f.write(line + "\n")


# ------------------------------------------------------------- hook server


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    t: float  # time.monotonic() when the request arrived
    replied: float | None = None  # time.monotonic() just before the answer


@dataclass
class Route:
    statuses: list[int] = field(default_factory=lambda: [200])  # in turn; the last repeats
    body: bytes = b"ok"
    delay: float = 0.0
    hang: bool = False  # never answer (until the server is stopped)
    gate: threading.Event | None = None  # answer once set
    counter: bool = False  # body: how many calls this route has had (never "quiet")
    before_reply: Callable[[], None] | None = None
    served: int = 0


class HookServer:
    """A ThreadingHTTPServer on 127.0.0.1:0 that records every call."""

    def __init__(self, order_log: Path | None = None) -> None:
        self.order_log = order_log
        self._routes: dict[str, Route] = {}
        self._calls: list[Call] = []
        self._lock = threading.Lock()
        self._released = threading.Event()  # set at stop: hanging handlers return
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *, status: int = 200, statuses: list[int] | None = None,
              body: bytes = b"ok", delay: float = 0.0, hang: bool = False,
              gate: threading.Event | None = None, counter: bool = False,
              before_reply: Callable[[], None] | None = None) -> None:
        """How to answer `path` (unrouted paths get 200 "ok")."""
        self._routes[path] = Route(statuses=list(statuses or [status]), body=body, delay=delay,
                                   hang=hang, gate=gate, counter=counter,
                                   before_reply=before_reply)

    def calls(self, path: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if path is None or c.path == path]

    def wait_calls(self, path: str, n: int = 1, timeout: float = DEADLINE) -> list[Call]:
        def enough() -> list[Call]:
            calls = self.calls(path)
            return calls if len(calls) >= n else []

        return wait_for(enough, f"{n} call(s) to {path}", timeout)

    def close(self) -> None:
        """Stop listening: from now on connections are refused."""
        if not self._closed:
            self._closed = True
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(5)

    def stop(self) -> None:
        self._released.set()
        for route in self._routes.values():
            if route.gate is not None:
                route.gate.set()
        self.close()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        arrived = time.monotonic()
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        path = req.path
        with self._lock:
            route = self._routes.get(path) or Route()
            n = route.served
            route.served += 1
            index = len(self._calls)
            self._calls.append(Call(req.command, path, {k.lower(): v for k, v in
                                                        req.headers.items()}, body, arrived))
        if self.order_log is not None:
            append_line(self.order_log, f"hook {req.command} {path}")
        if route.hang:
            self._released.wait()
            return
        if route.gate is not None:
            route.gate.wait(60)
        if route.delay:
            time.sleep(route.delay)  # the service behind the hook being slow
        if route.before_reply is not None:
            route.before_reply()
        status = route.statuses[min(n, len(route.statuses) - 1)]
        payload = str(n + 1).encode() if route.counter else route.body
        with self._lock:
            call = self._calls[index]
            self._calls[index] = Call(call.method, call.path, call.headers, call.body, call.t,
                                      time.monotonic())
        if self.order_log is not None:
            append_line(self.order_log, f"hook-reply {req.command} {path} {status}")
        try:
            req.send_response(status)
            req.send_header("Content-Length", str(len(payload)))
            req.end_headers()
            if req.command != "HEAD":
                req.wfile.write(payload)
        except OSError:
            pass  # the caller gave up (its timeout): nothing to answer


# ------------------------------------------------------------------ processes


def _marked_pids(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries the marker."""
    needle = f"{MARKER_ENV}={marker}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rpartition(b")")[2].split()[0]
        except OSError:
            continue
        if state != b"Z" and needle in env.split(b"\0"):
            pids.append(int(entry))
    return pids


@dataclass
class Gracerun:
    proc: subprocess.Popen[bytes]
    port: int
    record: Path
    out: Path
    err: Path
    marker: str
    app_pid: int = 0
    sigterm_at: float = 0.0  # time.monotonic() of the last signal() of SIGTERM

    # The app and its record.

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def record_lines(self) -> list[str]:
        return self.record.read_text().splitlines() if self.record.exists() else []

    def app_reaped(self) -> bool:
        """The app is gone and gracerun has collected its exit status."""
        return not os.path.exists(f"/proc/{self.app_pid}")

    # gracerun's log: one JSON object a line on stderr (the app's lines are text).

    def log(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.err.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    continue
        return entries

    def find(self, msg: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in self.log() if e.get("msg") == msg
                and all(e.get(k) == v for k, v in fields.items())]

    def wait_log(self, msg: str, timeout: float = DEADLINE, **fields: Any) -> dict[str, Any]:
        found = wait_for(lambda: self.find(msg, **fields),
                         f"log {msg!r} {fields} in:\n{self.err.read_text()}", timeout)
        return found[0]

    def phase_started(self, phase: str) -> dict[str, Any] | None:
        found = self.find("phase started", phase=phase)
        return found[0] if found else None

    def phase_ended(self, phase: str) -> dict[str, Any]:
        found = self.find("phase ended", phase=phase)
        assert found, f"no 'phase ended' for {phase} in:\n{self.err.read_text()}"
        return found[0]

    def phases(self) -> list[str]:
        return [e["phase"] for e in self.find("phase started")]

    def hooks(self, phase: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.find("hook") if phase is None or e["phase"] == phase]

    # gracerun itself.

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if signum == signal.SIGTERM:
            self.sigterm_at = time.monotonic()
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = DEADLINE) -> int:
        """gracerun's exit code; then nothing it started may be left running."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"gracerun still running after {timeout:g}s:\n{self.err.read_text()}")
        left = _marked_pids(self.marker)
        assert not left, f"gracerun exited {code} but left processes behind: {left}"
        return code


class Harness:
    """What one test starts, and its teardown (the `h` fixture)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.marker = uuid.uuid4().hex
        self.port = free_port()  # the app's port, known before the config is written
        self.record = tmp / "record"
        self.socket = str(tmp / "ctl.sock")
        self.runs: list[Gracerun] = []
        self.servers: list[HookServer] = []
        self.clients: list[subprocess.Popen[bytes]] = []

    def env(self, marker: str | None = None) -> dict[str, str]:
        return {**os.environ, MARKER_ENV: marker or self.marker, "PYTHONUNBUFFERED": "1"}

    def hook_server(self, order_log: bool = False) -> HookServer:
        server = HookServer(self.record if order_log else None)
        self.servers.append(server)
        return server

    def write_config(self, text: str, name: str = "gracerun.toml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def start(self, config: str, *args: str, app_args: tuple[str, ...] = (),
              ready: bool = True, app: Path = APP) -> Gracerun:
        """Start gracerun around the app (examples/app.py unless `app` names another
        with the same command line and handshake); with `ready`, return once it serves."""
        n = len(self.runs)
        cfg = self.write_config(config, f"gracerun{n}.toml")
        out, err = self.tmp / f"out{n}", self.tmp / f"err{n}"
        argv = [sys.executable, "-m", "gracerun", "--config", str(cfg), "--log-format", "json",
                *args, "--", sys.executable, str(app), "--port", str(self.port),
                "--record", str(self.record), *app_args]
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(), stdin=subprocess.DEVNULL,
                                    stdout=fout, stderr=ferr, start_new_session=True)
        run = Gracerun(proc, self.port, self.record, out, err, self.marker)
        self.runs.append(run)
        if ready:
            def serving() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"gracerun exited {proc.returncode} before the app was "
                                f"ready:\n{err.read_text()}")
                return "ready port=" in out.read_text()

            wait_for(serving, "the app's 'ready port=' line")
            m = re.search(r"app: listening on \S+ port \d+, pid (\d+)", err.read_text())
            assert m, err.read_text()
            run.app_pid = int(m.group(1))
        return run

    def client(self, *argv: str) -> subprocess.Popen[bytes]:
        """Run `python3 -m gracerun ARGV...` (prestop, check) with output captured.

        Clients carry a marker of their own: they are not gracerun's to clean up."""
        proc = subprocess.Popen([sys.executable, "-m", "gracerun", *argv], cwd=ROOT,
                                env=self.env(f"{self.marker}-client"),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.clients.append(proc)
        return proc

    def close(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                # The service tree first, while gracerun is alive to reap it, then gracerun's
                # own session (it was started as a session and group leader).
                for pid in _marked_pids(self.marker):
                    if pid != run.proc.pid:
                        _kill(pid)
                try:
                    os.killpg(run.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            run.proc.wait(10)
        for proc in self.clients:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        for server in self.servers:
            server.stop()
        for pid in _marked_pids(self.marker):  # orphans that left gracerun's tree
            _kill(pid)
        deadline = time.monotonic() + 5
        while (left := _marked_pids(self.marker)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not left, f"processes left after teardown: {left}"


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def harness_pair(tmp_path: Path) -> Iterator[tuple[Harness, Harness]]:
    """Two harnesses (instances A and B of a rolling restart), each in its own directory."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gen_a, gen_b = harness(tmp_path / "a"), harness(tmp_path / "b")
    try:
        yield next(gen_a), next(gen_b)
    finally:
        for gen in (gen_a, gen_b):
            for _ in gen:  # runs each one's teardown
                pass


def harness(tmp_path: Path) -> Iterator[Harness]:
    """The body of each module's `h` fixture: `yield from harness(tmp_path)`."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


# ------------------------------------------------------------------- clients


class Background(threading.Thread):
    """Run fn in a thread; join() returns its result or raises its exception."""

    def __init__(self, fn: Callable[[], T]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self._result: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as exc:
            self._error = exc

    def result(self, timeout: float = DEADLINE) -> Any:
        self.join(timeout)
        assert not self.is_alive(), f"background call still running after {timeout:g}s"
        if self._error is not None:
            raise self._error
        return self._result


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str, dict[str, str]]:
    """GET on a fresh connection: (status, body, headers with lower-cased names)."""
    import http.client
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        body = resp.read().decode()
        return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def inflight(run: Gracerun) -> int:
    status, body, _ = http_get(run.url("/inflight"), timeout=5)
    assert status == 200
    return int(body)
