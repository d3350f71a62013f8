"""The connections drain probe against a naive service that dies at once on SIGTERM.

Each test is a row of the table in issue 9: some work is in flight at SIGTERM,
gracerun drains with `probe = { type = "connections" }` and only then sends the
stop signal, which kills the naive service (tests/progs/naive_http.py) on the
spot.  A drain that ends while the service still owes a reply cuts the
request, and the test fails on the client's error: a wrong verdict cannot
pass quietly.
"""

from __future__ import annotations

import http.client
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import ROOT, Background, Harness, harness, http_get, wait_for

pytestmark = pytest.mark.timeout(90)

NAIVE = ROOT / "tests" / "progs" / "naive_http.py"


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def start(h: Harness, idle: str = "1s", timeout: str = "20s") -> object:
    config = f"""
[shutdown]
budget = "40s"
stop_grace = "2s"
[shutdown.drain]
interval = "100ms"
timeout = "{timeout}"
probe = {{ type = "connections", port = {h.port}, idle = "{idle}" }}
"""
    return h.start(config, app=NAIVE)


def got(h: Harness, what: str, n: int = 1) -> None:
    """Wait until the service has read `n` request heads matching `what`."""
    def seen() -> bool:
        text = h.record.read_text() if h.record.exists() else ""
        return text.count(f"got {what}") >= n

    wait_for(seen, f"the service to read {what}")


def sigterm_and_wait(run: object) -> tuple[int, dict[str, object]]:
    run.signal(signal.SIGTERM)  # type: ignore[attr-defined]
    code = run.wait()  # type: ignore[attr-defined]
    return code, run.phase_ended("drain")  # type: ignore[attr-defined]


def test_slow_request_on_a_fresh_connection(h: Harness) -> None:
    """1. GET /work?ms=3000 on a new connection; 2. SIGTERM once the service read it;
    3. the response arrives whole; drain ended "drained" after the request, not before."""
    run = start(h)
    slow = Background(lambda: http_get(run.url("/work?ms=3000"), timeout=20))
    got(h, "GET /work")
    sent = time.monotonic()
    code, drain = sigterm_and_wait(run)
    assert slow.result()[:2] == (200, "done 3000\n")
    assert drain["reason"] == "drained"
    assert time.monotonic() - sent >= 2.5  # the stop signal came after the request
    assert code == 128 + signal.SIGTERM  # the naive service dies of it


def test_slow_request_on_a_reused_keepalive_connection(h: Harness) -> None:
    """1. One quick request on a keep-alive connection, then the connection idles past
    `idle`; 2. a 3 s request on the same connection; 3. SIGTERM once it is read;
    4. it completes."""
    run = start(h)
    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=20)
    conn.request("GET", "/")
    assert conn.getresponse().read() == b"hello\n"
    time.sleep(1.3)  # the scenario itself: the pooled connection goes idle past idle=1s

    def slow() -> tuple[int, bytes]:
        conn.request("GET", "/work?ms=3000")
        resp = conn.getresponse()
        return resp.status, resp.read()

    result = Background(slow)
    got(h, "GET /work")
    _, drain = sigterm_and_wait(run)
    assert result.result() == (200, b"done 3000\n")
    assert drain["reason"] == "drained"
    conn.close()


def test_server_sent_events_with_idle_above_the_event_interval(h: Harness) -> None:
    """A stream where the service speaks last between events: rule 4 cannot see it, so
    `idle` must exceed the pause (the documented recommendation). 6 events, one every
    1.5 s, idle 2.5 s: every event arrives."""
    run = start(h, idle="2.5s")

    def stream() -> str:
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=20)
        conn.request("GET", "/sse?n=6&every=1500")
        body = conn.getresponse().read().decode()
        conn.close()
        return body

    result = Background(stream)
    got(h, "GET /sse")
    _, drain = sigterm_and_wait(run)
    assert result.result().count("data: ") == 6
    assert drain["reason"] == "drained"


def test_upload_that_stalls_between_chunks(h: Harness) -> None:
    """The client sends a body in three parts, 2 s apart (longer than idle): the peer
    spoke last all along, so the connection is busy; the upload completes."""
    run = start(h)
    part = b"y" * 1000

    def upload() -> bytes:
        with socket.create_connection(("127.0.0.1", h.port), timeout=20) as sock:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n"
                         + part)
            for _ in range(2):
                time.sleep(2.0)  # the scenario: a client that stalls mid-body
                sock.sendall(part)
            return _read_response(sock)

    result = Background(upload)
    got(h, "POST /upload")
    _, drain = sigterm_and_wait(run)
    assert result.result().endswith(b"got 3000\n")
    assert drain["reason"] == "drained"


def test_request_on_a_half_closed_connection(h: Harness) -> None:
    """The client sends its request and shuts down its writing side (FIN); the service
    works 2 s and answers on the half-closed connection."""
    run = start(h)

    def half_closed() -> bytes:
        with socket.create_connection(("127.0.0.1", h.port), timeout=20) as sock:
            sock.sendall(b"GET /work?ms=2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            sock.shutdown(socket.SHUT_WR)
            return _read_response(sock)

    result = Background(half_closed)
    got(h, "GET /work")
    _, drain = sigterm_and_wait(run)
    assert result.result().endswith(b"done 2000\n")
    assert drain["reason"] == "drained"


def test_idle_keepalive_pool_ends_drain_quickly(h: Harness) -> None:
    """16 keep-alive connections, each with one answered request, nothing in flight:
    drain ends within idle plus a poll or two, not at its timeout."""
    run = start(h, timeout="15s")
    conns = []
    for _ in range(16):
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"hello\n"
        conns.append(conn)
    _, drain = sigterm_and_wait(run)
    assert drain["reason"] == "drained"
    assert float(drain["duration"]) < 3.0  # type: ignore[arg-type]
    for conn in conns:
        conn.close()


def test_slow_reading_download(h: Harness) -> None:
    """The client reads an 8 MB answer slowly: the service's bytes wait in its send
    queue (wqueue), so the connection is busy until the client has them all."""
    run = start(h)
    size = 8 * 1024 * 1024

    def download() -> int:
        with socket.create_connection(("127.0.0.1", h.port), timeout=20) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(f"GET /download?bytes={size} HTTP/1.1\r\nHost: x\r\n"
                         "Connection: close\r\n\r\n".encode())
            total = 0
            while chunk := sock.recv(256 * 1024):
                total += len(chunk)
                time.sleep(0.05)  # the scenario: a slow reader (about 3 s for 8 MB)
            return total

    result = Background(download)
    got(h, "GET /download")
    _, drain = sigterm_and_wait(run)
    assert result.result() > size  # the whole body plus the head
    assert drain["reason"] == "drained"


def test_steady_load_keeps_drain_busy_until_it_stops(h: Harness) -> None:
    """Requests every 50 ms on keep-alive connections for 3 s after SIGTERM: drain
    waits for the load to stop and every request succeeds."""
    run = start(h)
    failures: list[str] = []

    def load() -> int:
        done = 0
        end = time.monotonic() + 4.0
        conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=10)
        while time.monotonic() < end:
            try:
                conn.request("GET", "/work?ms=20")
                conn.getresponse().read()
                done += 1
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                break
            time.sleep(0.05)  # the scenario: a steady trickle of requests
        conn.close()
        return done

    result = Background(load)
    got(h, "GET /work", n=5)
    sent = time.monotonic()
    _, drain = sigterm_and_wait(run)
    assert result.result() > 20
    assert failures == []
    assert drain["reason"] == "drained"
    assert time.monotonic() - sent >= 2.5  # drained only once the load had stopped


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, body = data.partition(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:") \
                        and len(body) >= int(line.split(b":")[1]):
                    return data
    return data
