"""The small HTTP endpoint: /metrics, /ready and /live, reads only.

    GET /metrics   Prometheus text format, or OpenMetrics when Accept asks for it
    GET /ready     200 while the lifecycle is READY: 503 until the start-up
                   sequence (ready probe, putting the instance back) is done, and
                   from the first moment of the shutdown on
    GET /live      200 while gracerun runs
    HEAD           the same without the body; any other method: 405

It runs on the supervisor's asyncio loop (server.listen makes the run use one,
see Config.needs_asyncio).  Why an asyncio.Protocol and not start_server's
streams: a connection here is one short request, so a protocol needs no task
per connection, and no task is left pending when gracerun stops the loop in
the middle of a callback to exit; the header bound is a buffer length check
and the connection timeout one timer.  One request per connection
(`Connection: close`) keeps the parser to a page.

Why a liveness probe always gets an answer: a client has HEADER_TIMEOUT from
its connection to a whole request head, and CONNECTION_TIMEOUT to be gone;
the cap on open connections is high (MAX_CONNECTIONS, or half the descriptor
limit), so that holding idle connections takes many of them; and at the cap a
new connection is neither refused nor kept waiting: the oldest one still
sending its head (an idle or slow client) is closed to make room.  A probe
sends its request at once and is answered in the same loop turn that reads
it.  (Why not a small cap with eviction alone: a client that reopens each
connection we close would then churn the table so fast that a probe's own
connection could be the oldest before its request is read.)

/ready exists so that the load balancer stops sending work *before* the
service is told to stop: it reads the lifecycle's state, which leaves READY
at the shutdown's trigger, before any phase (and so before any signal) runs.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING, Any

from gracerun.core.lifecycle import State
from gracerun.core.log import DEBUG, WARNING, event
from gracerun.errors import UsageError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gracerun.core.supervisor import Supervisor

MAX_HEAD_BYTES = 8 * 1024  # request line and headers
MAX_HEADER_LINES = 64
HEADER_TIMEOUT = 2.0  # from the connection to a whole request head
CONNECTION_TIMEOUT = 10.0  # the whole connection, a slow reader of the answer included
MAX_CONNECTIONS = 1024  # and at most half of RLIMIT_NOFILE (see connection_limit())
_END_OF_HEAD = re.compile(rb"\r?\n\r?\n")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


def connection_limit() -> int:
    """How many connections the endpoint holds at once: MAX_CONNECTIONS, or half the
    soft descriptor limit if that is lower (the rest is for gracerun's other uses)."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, soft // 2))


def parse_listen(addr: str) -> tuple[str | None, int]:
    """("127.0.0.1", 9102) for "127.0.0.1:9102"; "[::1]:80" -> "::1"; ":80" -> all (None)."""
    host, _, port = addr.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or None, int(port)


class Server:
    """The endpoint for one supervisor, serving one registry."""

    def __init__(self, sup: Supervisor, registry: CollectorRegistry) -> None:
        self.sup = sup
        self.registry = registry
        # Insertion-ordered: the first is the oldest (see _Connection.connection_made).
        self.connections: dict[_Connection, None] = {}
        self.max_connections = connection_limit()
        self._server: Any = None

    # ------------------------------------------------------------ lifecycle

    def start(self, listen: str, sock: Any = None) -> None:
        """Serve on `sock` (bound and listening already), or bind and listen on
        `listen` now (the loop is not running yet); UsageError when we cannot."""
        loop = self.sup.loop
        try:
            if sock is not None:
                # Accept once the loop runs, not inside run_until_complete: the
                # service runs already and its first /ready must see the lifecycle
                # gracerun is in by then, not the one it has while wiring.
                self._server = loop.run_until_complete(loop.create_server(
                    lambda: _Connection(self), sock=sock, start_serving=False))
                loop.create_task(self._server.start_serving())
            else:
                host, port = parse_listen(listen)
                self._server = loop.run_until_complete(loop.create_server(
                    lambda: _Connection(self), host, port, reuse_address=True))
        except OSError as exc:
            # asyncio wraps the bind error in a long message; the errno is the news.
            # (A name that does not resolve has a negative errno and its own text.)
            if exc.errno is not None and exc.errno > 0:
                reason = os.strerror(exc.errno).lower()
            else:
                reason = exc.strerror or str(exc)
            raise UsageError(f"server.listen: cannot listen on {listen}: {reason}") from None
        event(DEBUG, "serving /metrics, /ready, /live", listen=listen)

    def close(self) -> None:
        """Stop listening and drop open connections (called last, as gracerun exits)."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()

    # ------------------------------------------------------------ readiness

    @property
    def ready(self) -> bool:
        """READY in the lifecycle (the start-up sequence, ready probe included, is done;
        no shutdown has begun) and the service running."""
        return self.sup.lifecycle.state is State.READY and self.sup.service.running

    # ------------------------------------------------------------- requests

    def respond(self, method: str, path: str, headers: dict[str, str]) -> bytes:
        """The whole response to one parsed request."""
        if path == "/metrics":
            return self._metrics(method, headers.get("accept", ""))
        if path == "/ready":
            ok = self.ready
            return _response(method, 200 if ok else 503, b"ready\n" if ok else b"not ready\n")
        if path == "/live":
            return _response(method, 200, b"live\n")
        return _response(method, 404, b"not found\n")

    def _metrics(self, method: str, accept: str) -> bytes:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        try:
            body = encoder(self.registry)
        except Exception as exc:  # a collector bug must not take the endpoint down
            event(WARNING, "cannot render metrics", error=repr(exc))
            return _response(method, 500, b"cannot render metrics\n")
        return _response(method, 200, body, content_type)


def _response(method: str, status: int, body: bytes,
              content_type: str = "text/plain; charset=utf-8",
              extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Cache-Control: no-store\r\n{extra}"
            "Connection: close\r\n\r\n").encode("latin-1")
    return head if method == "HEAD" else head + body


def parse_head(head: bytes) -> tuple[str, str, dict[str, str]] | int:
    """(method, path, headers) from a request head, or the status to refuse it with."""
    lines = head.decode("latin-1").split("\n")
    if len(lines) > MAX_HEADER_LINES:
        return 431
    parts = lines[0].rstrip("\r").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        return 400
    method, target, _ = parts
    if target.startswith(("http://", "https://")):  # absolute form: keep the path
        target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
    if not target.startswith("/"):
        return 400
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.rstrip("\r").partition(":")
        if not colon or not name or name != name.strip():
            return 400
        headers[name.lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        return 405
    return method, target.partition("?")[0], headers


class _Connection(asyncio.Protocol):
    """One client: read one request head, answer, close."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: Any = None  # asyncio's or uvloop's transport (not a subclass)
        self.timer: asyncio.TimerHandle | None = None
        self.answered = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        connections = self.server.connections
        if len(connections) >= self.server.max_connections:
            # Room for the newcomer at the expense of the oldest client still
            # sending its head (else the oldest of all): see the module docstring.
            victim = next((c for c in connections if not c.answered), None)
            victim = victim or next(iter(connections))
            victim.abort()
            connections.pop(victim, None)
        connections[self] = None
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(HEADER_TIMEOUT, self._head_timeout)

    def _head_timeout(self) -> None:
        if self.answered:  # still writing the answer to a slow reader: its own deadline
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(CONNECTION_TIMEOUT - HEADER_TIMEOUT, self.abort)
        else:
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # one request per connection; anything after it is ignored
        self.buf += data
        end = _END_OF_HEAD.search(self.buf)
        if end is None:
            if len(self.buf) > MAX_HEAD_BYTES:
                self._answer(_response("GET", 431, b"request head too large\n"))
            return
        if end.start() > MAX_HEAD_BYTES:
            self._answer(_response("GET", 431, b"request head too large\n"))
            return
        parsed = parse_head(bytes(self.buf[:end.start()]))
        if isinstance(parsed, int):
            allow = "Allow: GET, HEAD\r\n" if parsed == 405 else ""
            body = b"only GET and HEAD\n" if parsed == 405 else b"bad request\n"
            self._answer(_response("GET", parsed, body, extra=allow))
            return
        method, path, headers = parsed
        self._answer(self.server.respond(method, path, headers))

    def _answer(self, response: bytes) -> None:
        self.answered = True
        self.transport.write(response)
        self.transport.close()  # after the write is flushed

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.server.connections.pop(self, None)
