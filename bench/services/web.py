#!/usr/bin/env python3
"""The HTTP service bench/rolling.py restarts under load: graceful or naive.

    python3 bench/services/web.py --mode graceful|naive --port N [--host H]

HTTP/1.1 with keep-alive, standard library only, so that the two modes differ in
nothing but what SIGTERM does:

    graceful   stop accepting (the listening socket closes), finish the requests
               already read (answered with "Connection: close"), exit 0: what
               examples/app.py and most web frameworks do
    naive      no SIGTERM handler: the default action ends the process at once,
               whatever is in flight (as PID 1 of a container the kernel ignores
               it instead, and only SIGKILL stops it: the classic)

    GET /             "ok <port>"
    GET /work?ms=N    sleeps N ms first: a slow request
    GET /healthz      "ok" (HAProxy's health check)

SIGUSR1 (gracerun's notify hook) is ignored in both modes: this service has no
background work to stop, and its default action would kill it.  Once listening
it prints ``ready port=N``; no access log.
"""

from __future__ import annotations

import argparse
import queue
import signal
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, Handler)
        self.stopping = False
        self.inflight = 0
        self._changed = threading.Condition()

    def handle_error(self, request: object, client_address: object) -> None:
        # A peer that resets its connection (HAProxy ends each health check that way) is
        # not this service's error; the default prints a traceback for each.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def begin(self) -> None:
        with self._changed:
            self.inflight += 1

    def end(self) -> None:
        with self._changed:
            self.inflight -= 1
            self._changed.notify_all()

    def drain(self, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.inflight == 0, timeout)
            return self.inflight


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        work = url.path == "/work"
        if work:
            self.server.begin()
        try:
            status, body = self.route(url.path, urllib.parse.parse_qs(url.query))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            if self.server.stopping:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        finally:
            if work:
                self.server.end()

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
        if path == "/":
            return 200, f"ok {self.server.server_address[1]}\n"
        if path == "/healthz":
            return 200, "ok\n"
        if path == "/work":
            ms = query.get("ms", ["0"])[0]
            if not ms.isdigit() or int(ms) > 600_000:
                return 400, "ms must be a whole number of milliseconds up to 600000\n"
            time.sleep(int(ms) / 1000)
            return 200, f"done {ms}\n"
        return 404, "not found\n"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"web: {format % args}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("graceful", "naive"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    # The handler only enqueues (SimpleQueue.put is reentrant); the main thread does the
    # work. See examples/app.py for why nothing else may happen in a handler.  A handler,
    # not sigwait(): as PID 1 the kernel delivers only signals that have one.
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    if args.mode == "graceful":
        signal.signal(signal.SIGTERM, lambda signum, _frame: signals.put(signum))
    try:
        server = Server((args.host, args.port))
    except OSError as exc:
        sys.stderr.write(f"web: cannot listen on {args.host} port {args.port}: {exc}\n")
        return 1
    # Request threads must not take the signal from the main thread's wait below.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    # A short poll: shutdown() waits for serve_forever() to notice, and its default of
    # 0.5 s would be charged to every wrapper's stop.
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                               name="http")
    serving.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    print(f"ready port={server.server_address[1]}", flush=True)

    signals.get()  # naive: never returns; SIGTERM's default action ends the process
    server.stopping = True
    server.shutdown()
    server.server_close()
    serving.join()
    left = server.drain(args.drain_timeout)
    sys.stderr.write(f"web: stopped inflight={left}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
