"""The load of bench/rolling.py: wrk, and a small client that records every request.

    Wrk      wrk (Debian's), one thread, N keep-alive connections, each pausing
             `delay` ms between requests (wrk's Lua delay()), so the load is
             bounded on a shared two-core machine.  Its totals: requests,
             socket errors (connect, read, write, timeout) and non-2xx/3xx
             answers.  wrk cannot say when each request ran.
    Client   Python threads, one keep-alive connection each (http.client):
             "fast" connections send GET /?id=N at a steady rate; "slow" ones
             send GET /work?ms=M&id=N back to back.  Every request is recorded:
             start, end (time.monotonic()), status or the error.  The ids tie a
             request to its line in HAProxy's log.  This is where the time
             series, the longest stretch without a success and the requests in
             flight at SIGTERM come from.

Neither retries a failed request: a failure is what a client without retries
would have seen.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from procs import BenchError, Processes

REQUEST_TIMEOUT = 10.0  # a request that takes longer has failed ("timeout")


@dataclass(frozen=True, slots=True)
class Record:
    """One request of the Client."""

    id: int
    conn: int  # which connection (thread) sent it
    slow_ms: int  # /work?ms=slow_ms; 0 for a fast request
    start: float  # time.monotonic() just before it was sent
    end: float  # time.monotonic() when the answer (or the error) came
    status: int | None  # None: no answer
    error: str  # "" or what went wrong, e.g. "RemoteDisconnected", "timeout"

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Client:
    """Threads sending requests through one host:port until stop()."""

    def __init__(self, host: str, port: int, *, fast_conns: int, fast_rate: float,
                 slow_conns: int = 0, slow_ms: int = 0) -> None:
        self.host, self.port = host, port
        self.fast_conns, self.fast_rate = fast_conns, fast_rate
        self.slow_conns, self.slow_ms = slow_conns, slow_ms
        self.records: list[Record] = []  # list.append is atomic: threads share it
        self._ids = itertools.count(1)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        t0 = time.monotonic()
        for n in range(self.fast_conns):
            # Staggered, so the fast connections do not send in step.
            first = t0 + n / (self.fast_conns * self.fast_rate)
            self._spawn(n, 0, first)
        for n in range(self.slow_conns):
            first = t0 + n * self.slow_ms / 1000 / self.slow_conns
            self._spawn(self.fast_conns + n, self.slow_ms, first)

    def _spawn(self, conn: int, slow_ms: int, first: float) -> None:
        thread = threading.Thread(target=self._run, args=(conn, slow_ms, first),
                                  name=f"client-{conn}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float = REQUEST_TIMEOUT + 2) -> None:
        """Let each connection finish its request in progress, then end."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            raise BenchError("load client: a request outlived its timeout")

    def _run(self, conn_no: int, slow_ms: int, next_at: float) -> None:
        period = 0.0 if slow_ms else 1 / self.fast_rate
        conn: http.client.HTTPConnection | None = None
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            n = next(self._ids)
            path = f"/work?ms={slow_ms}&id={n}" if slow_ms else f"/?id={n}"
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port,
                                                  timeout=REQUEST_TIMEOUT)
            start = time.monotonic()
            status: int | None = None
            error = ""
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
            except TimeoutError:
                error = "timeout"
            except (OSError, http.client.HTTPException) as exc:
                error = type(exc).__name__
            if error:
                assert conn is not None
                conn.close()
                conn = None
            end = time.monotonic()
            self.records.append(Record(n, conn_no, slow_ms, start, end, status, error))
            # A steady rate, not a backlog: a stalled connection does not burst afterwards.
            next_at = max(next_at + period, end) if period else end
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------- wrk


@dataclass(frozen=True)
class WrkResult:
    requests: int
    errors: dict[str, int]  # connect, read, write, timeout, non2xx
    rps: float

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


class Wrk:
    """wrk in the background until stop() (SIGINT makes it print its totals)."""

    def __init__(self, procs: Processes, url: str, workdir: Path, *, connections: int,
                 delay_ms: int, wrk: str = "/usr/bin/wrk") -> None:
        self.procs, self.url, self.workdir = procs, url, workdir
        self.connections, self.delay_ms, self.wrk = connections, delay_ms, wrk
        self.pid = 0
        self.out = workdir / "wrk.out"

    def start(self) -> None:
        script = self.workdir / "delay.lua"
        script.write_text(f"function delay()\n  return {self.delay_ms}\nend\n")
        fd = os.open(self.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.pid = self.procs.spawn(
                [self.wrk, "-t1", f"-c{self.connections}", "-d600s",
                 f"--timeout={REQUEST_TIMEOUT:g}s", "-s", str(script), self.url],
                stdout=fd, stderr=fd)
        finally:
            os.close(fd)

    def stop(self) -> WrkResult:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        if self.procs.wait(self.pid, REQUEST_TIMEOUT + 5) is None:
            raise BenchError(f"wrk did not stop on SIGINT: {self.out.read_text()[-500:]}")
        return parse_wrk(self.out.read_text())


def parse_wrk(text: str) -> WrkResult:
    """wrk's summary: "N requests in", "Socket errors: connect a, read b, write c,
    timeout d" and "Non-2xx or 3xx responses: e" (the last two only when not zero)."""
    total = re.search(r"^\s*(\d+) requests in ", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if total is None or rps is None:
        raise BenchError(f"cannot read wrk's summary:\n{text[-800:]}")
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "non2xx": 0}
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     text)
    if sock:
        for key, value in zip(("connect", "read", "write", "timeout"), sock.groups(),
                              strict=True):
            errors[key] = int(value)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx:
        errors["non2xx"] = int(non2xx.group(1))
    return WrkResult(int(total.group(1)), errors, float(rps.group(1)))
