"""gracerun.clients.http against real servers on loopback: http.server in a thread for
well-behaved peers, raw sockets for peers that misbehave."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import run_checkout_python
from hypothesis import given
from hypothesis import strategies as st

from gracerun.clients.http import HttpError, parse_url, request

pytestmark = pytest.mark.timeout(60)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


@dataclasses.dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def handle_any(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append(Seen(self.command, self.path, headers, body))
        if self.path == "/missing":
            self.reply(404, b"nope\n")
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world" * 1000):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Checksum: abc\r\n\r\n")
        elif self.path == "/eof":  # no Content-Length: the body ends when the connection does
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the end")
        elif self.path == "/huge":
            self.send_response(200)
            self.send_header("Content-Length", str(2 * 1024 * 1024))
            self.end_headers()
        elif self.path == "/empty":
            self.send_response(204)
            self.end_headers()
        else:
            self.reply(200, json.dumps({"method": self.command, "path": self.path}).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = handle_any

    def do_HEAD(self) -> None:  # a Content-Length with no body after it
        self.server.seen.append(Seen("HEAD", self.path, {}, b""))
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()

    def reply(self, status: int, body: bytes) -> None:
        self.send_response(status, "Custom Reason" if status == 200 else None)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Multi", "a")
        self.send_header("X-Multi", "b")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    def __init__(self, host: str, family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__((host, 0), Handler)
        self.seen: list[Seen] = []


def serve(host: str, family: socket.AddressFamily) -> Iterator[RecordingServer]:
    server = RecordingServer(host, family)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    yield from serve("127.0.0.1", socket.AF_INET)


@pytest.fixture
def base(server: RecordingServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_get(server: RecordingServer, base: str) -> None:
    resp = run(request("GET", f"{base}/some/path?a=1&b=two", timeout=5))
    assert resp.status == 200
    assert resp.reason == "Custom Reason"
    assert json.loads(resp.body) == {"method": "GET", "path": "/some/path?a=1&b=two"}
    assert resp.headers["content-length"] == str(len(resp.body))
    assert resp.headers["x-multi"] == "a, b"
    [seen] = server.seen
    assert seen.headers["host"] == f"127.0.0.1:{server.server_address[1]}"
    assert seen.headers["connection"] == "close"
    assert "content-length" not in seen.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_methods_with_body_and_headers(server: RecordingServer, base: str, method: str) -> None:
    body = b'{"weight": 0}'
    headers = {"X-Token": "s3cret", "Content-Type": "application/json"}
    resp = run(request(method, f"{base}/upstream", headers=headers, body=body, timeout=5))
    assert resp.status == 200
    assert json.loads(resp.body)["method"] == method
    [seen] = server.seen
    assert (seen.method, seen.path, seen.body) == (method, "/upstream", body)
    assert seen.headers["x-token"] == "s3cret"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == str(len(body))


def test_post_without_body_sends_content_length_0(server: RecordingServer, base: str) -> None:
    assert run(request("POST", f"{base}/x", timeout=5)).status == 200
    assert server.seen[0].headers["content-length"] == "0"


def test_client_owns_framing_headers(server: RecordingServer, base: str) -> None:
    headers = {"Connection": "keep-alive", "Content-Length": "99", "Host": "example.test"}
    run(request("PUT", f"{base}/x", headers=headers, body=b"abc", timeout=5))
    [seen] = server.seen
    assert seen.headers["connection"] == "close"
    assert seen.headers["content-length"] == "3"
    assert seen.headers["host"] == "example.test"  # Host may be overridden
    assert seen.body == b"abc"


def test_error_status_is_returned_not_raised(base: str) -> None:
    resp = run(request("GET", f"{base}/missing", timeout=5))
    assert (resp.status, resp.reason, resp.body) == (404, "Not Found", b"nope\n")


def test_chunked_response(base: str) -> None:
    resp = run(request("GET", f"{base}/chunked", timeout=5))
    assert resp.status == 200
    assert resp.body == b"hello chunked " + b"world" * 1000


def test_body_read_to_eof(base: str) -> None:
    assert run(request("GET", f"{base}/eof", timeout=5)).body == b"until the end"


def test_no_body_for_head_and_204(base: str) -> None:
    """HEAD announces a Content-Length it does not send; waiting for it would time out."""
    started = time.monotonic()
    resp = run(request("HEAD", f"{base}/", timeout=5))
    assert (resp.status, resp.body, resp.headers["content-length"]) == (200, b"", "12345")
    resp = run(request("GET", f"{base}/empty", timeout=5))
    assert (resp.status, resp.reason, resp.body) == (204, "No Content", b"")
    assert time.monotonic() - started < 2


def test_body_size_limit(base: str) -> None:
    with pytest.raises(HttpError, match=r"over the 1048576 byte limit"):
        run(request("GET", f"{base}/huge", timeout=5))
    with pytest.raises(HttpError, match=r"over the 10 byte limit"):
        run(request("GET", f"{base}/eof", timeout=5, max_body=10))
    with pytest.raises(HttpError, match=r"over the 100 byte limit"):
        run(request("GET", f"{base}/chunked", timeout=5, max_body=100))


def test_response_is_frozen(base: str) -> None:
    resp = run(request("GET", f"{base}/", timeout=5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        resp.status = 500


def test_ipv6_literal() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    for server in serve("::1", socket.AF_INET6):
        url = f"http://[::1]:{server.server_address[1]}/v6"
        assert run(request("GET", url, timeout=5)).status == 200
        assert server.seen[0].headers["host"] == f"[::1]:{server.server_address[1]}"


def test_connection_refused() -> None:
    with socket.socket() as unused:  # bound, never listening: connecting is refused
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/x"
        with pytest.raises(HttpError, match=rf"^GET {url}: connection refused$"):
            run(request("GET", url, timeout=5))


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket], threading.Event]]:
    """Accepts connections, reads the request, never answers. Yields (url, accepted
    connections, an event set once a request has arrived)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    got_request = threading.Event()

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn)
            if conn.recv(4096):
                got_request.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hang", accepted, got_request
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)
    for conn in accepted:
        conn.close()


def test_timeout_bounds_a_silent_server(silent_server: tuple[str, Any, Any]) -> None:
    url = silent_server[0]
    started = time.monotonic()
    with pytest.raises(HttpError, match=rf"^GET {url}: timed out after 0.5s$"):
        run(request("GET", url, timeout=0.5))
    assert time.monotonic() - started < 1.0


def closed_by_peer(conn: socket.socket) -> bool:
    conn.settimeout(5)
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connection_closed_on_timeout(silent_server: tuple[str, Any, Any]) -> None:
    url, accepted, got_request = silent_server
    with pytest.raises(HttpError):
        run(request("GET", url, timeout=0.5))
    assert got_request.is_set()
    assert closed_by_peer(accepted[0])


def test_connection_closed_on_cancel(silent_server: tuple[str, Any, Any]) -> None:
    """Steps: start a request to a server that never answers; once the server has the
    request, cancel the task; CancelledError comes out (not HttpError), and the server
    sees the connection closed."""
    url, accepted, got_request = silent_server

    async def scenario() -> None:
        task = asyncio.create_task(request("GET", url, timeout=30))
        deadline = time.monotonic() + 5
        while not got_request.is_set():
            assert time.monotonic() < deadline, "the request never arrived"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
    assert closed_by_peer(accepted[0])


def raw_server(response: bytes) -> tuple[str, threading.Thread, socket.socket]:
    """A server that answers one request with ``response`` as given, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(response)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/", thread, listener


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (b"", "connection closed before the status line"),
        (b"garbage\r\n\r\n", "bad status line 'garbage'"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed after 5 of 10 body"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "middle of a chunk"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab", "in the middle of a"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000 + b"\r\n\r\n", "line too long"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 101 + b"\r\n", "more than 100 header lines"),
    ],
)
def test_malformed_responses(response: bytes, message: str) -> None:
    url, thread, listener = raw_server(response)
    with listener, pytest.raises(HttpError, match=r"^GET .*: malformed response: ") as info:
        run(request("GET", url, timeout=5))
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    thread.join(5)


def test_interim_responses_are_skipped() -> None:
    url, thread, listener = raw_server(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.0 200\nContent-Length: 2\n\nok"  # no reason, bare LF line endings
    )
    with listener:
        resp = run(request("GET", url, timeout=5))
    assert (resp.status, resp.reason, resp.body) == (200, "", b"ok")
    assert "link" not in resp.headers
    thread.join(5)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "scheme must be http or https"),
        ("example.com:80", "scheme must be http or https"),
        ("/just/a/path", "scheme must be http or https"),
        ("http://", "no host"),
        ("http:///path", "no host"),
        ("http://host:99999/", "Port out of range"),
        ("http://host:port/", "Port could not be cast"),
        ("http://host:0/", "port 0"),
        ("http://[::1/", "Invalid IPv6 URL"),
        ("http://ho st/", "whitespace or control characters"),
        ("http://host/a\r\nX-Injected: 1", "whitespace or control characters"),
        ("http://user:pw@host/", "credentials in URLs are not supported"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(HttpError, match=r"^bad URL ") as info:
        parse_url(url)
    assert message in str(info.value)
    assert "pw" not in str(info.value)  # credentials are redacted
    with pytest.raises(HttpError, match=r"^bad URL "):
        run(request("GET", url, timeout=5))


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://example.com", ("http", "example.com", 80, "/")),
        ("https://Example.COM/a/b?x=1&y=2#frag", ("https", "example.com", 443, "/a/b?x=1&y=2")),
        ("HTTP://127.0.0.1:8080/x", ("http", "127.0.0.1", 8080, "/x")),
        ("http://[::1]:8080/", ("http", "::1", 8080, "/")),
        ("https://[2001:db8::1]/", ("https", "2001:db8::1", 443, "/")),
        ("http://h/%41?q=%20", ("http", "h", 80, "/%41?q=%20")),
        ("http://bücher.example/ü?ä=1", ("http", "xn--bcher-kva.example", 80, "/%C3%BC?%C3%A4=1")),
    ],
)
def test_parse_url(url: str, parsed: tuple[str, str, int, str]) -> None:
    assert parse_url(url) == parsed


@given(st.text())
def test_parse_url_raises_only_http_error(url: str) -> None:
    try:
        scheme, host, port, target = parse_url(url)
    except HttpError as exc:
        assert "\n" not in str(exc)
    else:
        assert scheme in ("http", "https")
        assert host.isascii() and host
        assert 0 < port < 65536
        assert target.startswith("/") and target.isascii()
        assert not any(c <= " " for c in target)


@given(
    st.sampled_from(["http", "https"]),
    st.integers(1, 65535),
    st.lists(st.text("abcXYZ019-._~%", min_size=1), max_size=4),
)
def test_parse_url_round_trip(scheme: str, port: int, segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert parse_url(f"{scheme}://host.example:{port}{path}") == (
        scheme, "host.example", port, path,
    )  # fmt: skip


def _urlsplit_view(url: str) -> tuple[Any, ...]:
    """What parse_url reads from urllib.parse.urlsplit, or the ValueError's text."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return ("error", str(exc))
    userinfo = parts.username is not None or parts.password is not None
    return (parts.scheme, userinfo, parts.hostname, port, parts.path, parts.query)


def _split_view(url: str) -> tuple[Any, ...]:
    from gracerun.clients.http import _split

    try:
        return _split(url)
    except ValueError as exc:
        return ("error", str(exc))


# The characters URLs are made of, weighted toward the ones that split them.
_PIECES = [*"aZ09+-.:/?#@%_~!$&'()*,;=", "http", "HTTPS", "://", "//", ":80", ":0",
           ":99999", "@h"]
_URL_PIECES = st.lists(st.sampled_from(_PIECES), max_size=12).map("".join)


@given(st.one_of(
    _URL_PIECES,
    st.tuples(st.sampled_from(["http", "https", "HTTP", "ftp", "h+t", "1h", ""]),
              st.sampled_from(["://", ":", ":/", "//", ""]),
              _URL_PIECES).map("".join),
))
def test_split_agrees_with_urlsplit(url: str) -> None:
    """parse_url splits ASCII URLs itself (urllib.parse costs ~3 ms before the spawn):
    on every generated URL, it must read what urlsplit reads, and fail where it fails."""
    if any(c <= " " or c == "\x7f" for c in url):
        return  # parse_url refuses these before splitting
    assert _split_view(url) == _urlsplit_view(url)


@pytest.mark.parametrize("url", [
    "http://a%tESt/", "HtTp://H:8/p?q#f", "http://u@h:1", "http://h:/", "http://h:+1/",
    "http:h", "http:/h", "x://y", "1http://h", "http://h?x#y?z", "http://h#x?y", "http://:80",
    "http://[::1]:8080/", "http://[fe80::1%eth0]/", "http://bücher/",
])
def test_split_agrees_with_urlsplit_on_edges(url: str) -> None:
    assert _split_view(url) == _urlsplit_view(url)


def test_validating_a_url_does_not_import_urllib_parse() -> None:
    """The reason for _split: urllib.parse (and ipaddress) stay off the path to the spawn."""
    code = ("import sys; from gracerun.clients.http import parse_url; "
            "parse_url('http://127.0.0.1:9/deregister?x=1'); "
            "print(sorted({'urllib.parse', 'ipaddress'} & set(sys.modules)))")
    out = run_checkout_python(code)
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    ("method", "headers", "message"),
    [
        ("GET POST", None, "bad method 'GET POST'"),
        ("", None, "bad method ''"),
        ("GET\n", None, "bad method 'GET\\n'"),
        ("GET", {"X-Bad": "a\r\nInjected: 1"}, "bad value for header 'X-Bad'"),
        ("GET", {"Bad Name": "x"}, "bad header name"),
        ("GET", {"X-Smile": "\u263a"}, "header values must be latin-1"),
    ],
)
def test_bad_requests_are_refused_before_sending(
    server: RecordingServer, base: str, method: str, headers: dict[str, str], message: str
) -> None:
    with pytest.raises(HttpError) as info:
        run(request(method, f"{base}/", headers=headers, timeout=5))
    assert message in str(info.value)
    assert f"{base}/: " in str(info.value)
    assert "\n" not in str(info.value)
    assert server.seen == []


def test_unresolvable_host() -> None:
    with pytest.raises(HttpError, match=r"^GET http://no-such-host.invalid/: connection failed"):
        run(request("GET", "http://no-such-host.invalid/", timeout=5))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def test_https(certificate: tuple[Path, Path]) -> None:
    """A self-signed server fails verification with the default context, and succeeds with
    a context that trusts its certificate."""
    cert, key = certificate
    for server in serve("127.0.0.1", socket.AF_INET):
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert, key)
        server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
        url = f"https://127.0.0.1:{server.server_address[1]}/tls"
        with pytest.raises(HttpError, match=r"connection failed: .*CERTIFICATE_VERIFY_FAILED"):
            run(request("GET", url, timeout=5))
        trusting = ssl.create_default_context(cafile=str(cert))
        resp = run(request("GET", url, timeout=5, ssl_context=trusting))
        assert resp.status == 200
        assert json.loads(resp.body)["path"] == "/tls"
        assert server.seen[-1].headers["host"] == f"127.0.0.1:{server.server_address[1]}"


def test_imports_stay_light() -> None:
    """Importing the client loads nothing beyond asyncio, urllib.parse and dataclasses
    (and the redaction helper), so gracerun starts as fast as it can."""
    code = (
        "import sys, asyncio, urllib.parse, dataclasses; before = set(sys.modules);"
        "import gracerun.clients.http; print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30, cwd=Path(__file__).parent.parent)  # fmt: skip
    loaded = set(ast.literal_eval(out.stdout))
    assert loaded <= {"__future__", "gracerun", "gracerun.errors", "gracerun.clients",
                      "gracerun.clients.http", "gracerun.observe", "gracerun.observe.redact"}


# ------------------------------------------------- one deadline for everything


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers every request one byte every 0.2s (a valid response, if you wait 20s)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\n" + b"x" * 60:
                if stop.wait(0.2):  # the pace under test
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


def test_timeout_bounds_a_trickled_answer(trickling_server: str) -> None:
    """Every read gets a byte within 0.2s, so a per-read timeout never trips; the
    request still ends at its 1s timeout."""
    started = time.monotonic()
    with pytest.raises(HttpError, match=r"timed out after 1s$"):
        run(request("GET", trickling_server, timeout=1.0))
    assert time.monotonic() - started < 1.3


def test_timeout_bounds_a_resolver_that_never_answers(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """Name lookup is inside the timeout: with getaddrinfo blocked (the standard loop
    runs it in a thread), the request fails at its 0.5s timeout; the lookup is then
    released so the thread can end.  (uvloop's own resolver is covered by the
    dead-resolver scenarios in test_observe_push.py.)"""
    release = threading.Event()
    real = socket.getaddrinfo

    def never(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", never)

    async def scenario() -> float:
        started = time.monotonic()
        try:
            with pytest.raises(HttpError, match=r"^GET http://registry.test/x\?\[redacted\]: "
                                                r"timed out after 0.5s$"):
                await request("GET", "http://registry.test/x?token=1", timeout=0.5)
            return time.monotonic() - started
        finally:
            release.set()

    assert run(scenario()) < 0.8


def test_errors_carry_their_reason_without_the_request() -> None:
    """Callers that name the request their own way (registry clients) take `reason`
    rather than parsing the message, whose URL is redacted."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(HttpError) as info:
        run(request("PUT", f"http://127.0.0.1:{port}/x?token=1", timeout=5))
    assert info.value.reason == "connection refused"
    assert str(info.value) == f"PUT http://127.0.0.1:{port}/x?[redacted]: connection refused"
