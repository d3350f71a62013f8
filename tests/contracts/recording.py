"""The plumbing shared by the contract servers: a threaded HTTP server on 127.0.0.1:0 that
records every request and can be told to misbehave.

A contract server subclasses ContractServer and implements `route(req) -> Reply`; this
module owns the sockets, the request log and the faults:

    server.inject("PUT", r"/status$", status=500)          # answer 500 instead
    server.inject("GET", r"/apps/", body=b"<html>", status=200, times=1)
    server.inject("PUT", r".", hang=True)                  # never answer (until close())

Faults are matched in the order given against the method and the request path (without
the query); `times` limits how often one applies.  A hanging request is held until
close(), which also stops the server, so nothing outlives the test.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query, percent-decoded
    query: dict[str, list[str]]
    raw_target: str  # the request target exactly as sent (path and query)
    headers: dict[str, str]  # names lower-cased
    body: bytes
    t: float  # time.monotonic() on arrival

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    reply: Reply
    hang: bool = False
    times: int | None = None  # None: every time


class ContractServer:
    """Subclasses implement route(); start() binds 127.0.0.1:0 and serves in a thread."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[Request] = []
        self._faults: list[Fault] = []
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> ContractServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                owner._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        assert self._httpd is not None, "start() first"
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        """Release hanging requests, stop serving and close the listening socket."""
        self._closing.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- faults

    def inject(self, method: str, path: str, *, status: int = 200, body: bytes = b"",
               content_type: str = "text/plain", hang: bool = False,
               times: int | None = None) -> None:
        with self.lock:
            self._faults.append(Fault(method, re.compile(path),
                                      Reply(status, body, content_type), hang, times))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def calls(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """The recorded requests, optionally those whose path matches the regex `path`."""
        with self.lock:
            return [r for r in self.requests if (method is None or r.method == method)
                    and (path is None or re.search(path, r.path))]

    # ------------------------------------------------------------- internals

    def route(self, req: Request) -> Reply:
        raise NotImplementedError

    def _fault(self, req: Request) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.method in (req.method, "*") and fault.path.search(req.path):
                    if fault.times is not None:
                        if fault.times <= 0:
                            continue
                        fault.times -= 1
                    return fault
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        split = urllib.parse.urlsplit(h.path)
        req = Request(method=h.command, path=urllib.parse.unquote(split.path),
                      query=urllib.parse.parse_qs(split.query, keep_blank_values=True),
                      raw_target=h.path,
                      headers={k.lower(): v for k, v in h.headers.items()},
                      body=body, t=time.monotonic())
        with self.lock:
            self.requests.append(req)
        fault = self._fault(req)
        if fault is not None and fault.hang:
            self._closing.wait(60)
            h.close_connection = True
            return
        reply = fault.reply if fault is not None else self.route(req)
        h.send_response(reply.status)
        if reply.content_type:
            h.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(reply.body)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(reply.body)


def http_call(method: str, url: str, *, body: bytes | None = None,
              headers: dict[str, str] | None = None,
              timeout: float = 5.0) -> tuple[int, bytes]:
    """One blocking request with the standard library (for heartbeat loops and tests):
    (status, body), never raising for an HTTP status."""
    import http.client

    split = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(split.hostname or "", split.port or 80, timeout=timeout)
    try:
        target = split.path + (f"?{split.query}" if split.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Loop:
    """A background thread calling `beat()` every `interval` seconds until stop().

    The heartbeat clients build on it; `beats` counts completed beats so that a test
    can wait for N more of them (wait_beats) instead of sleeping.
    """

    def __init__(self, interval: float, beat: Callable[[], None]) -> None:
        self.interval = interval
        self._beat = beat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self.beats = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def wait_beats(self, n: int, timeout: float = 15.0) -> int:
        """Block until n more beats completed (from now); the count reached."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self.beats + n
            while self.beats < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"only {self.beats} of {target} heartbeats within "
                                         f"{timeout:g}s")
                self._cond.wait(remaining)
            return self.beats

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except OSError:
                pass  # the server is down: a real client logs and tries again next time
            with self._cond:
                self.beats += 1
                self._cond.notify_all()
