#!/usr/bin/env python3
"""An example service to run under gracerun, and the service the test suite starts.

    python3 examples/app.py [--host H] [--port N] [--record FILE] [--drain-timeout S]
                            [--queue DIR --ledger FILE [--item-ms N]]

HTTP/1.1 with keep-alive on the standard library. Once listening it prints one line,
``ready port=<N>``, to stdout (``--port 0`` picks a free port).

In the background a consumer stands in for a message-queue consumer.  Without
``--queue`` it only ticks.  With ``--queue DIR`` it works through a local queue:
each file in DIR is an item; the consumer claims the first (by name) by renaming it
into ``DIR/taken/`` (atomic, so several instances can share one queue and each item
goes to one of them), works on it for ``--item-ms`` (200), then deletes it.  The
ledger, ``--ledger FILE``, gets ``taken NAME PID`` and ``finished NAME PID``, one
line each, appended as it happens: an item taken and never finished was lost (and
is still in ``DIR/taken/``).

    GET /             hello from pid <pid>
    GET /work?ms=N    sleeps N ms, then "done <N>": a slow request, for drain tests
    GET /inflight     requests in progress (monitoring requests like this one not counted)
    GET /healthz      ok
    GET /stats        {"requests_total", "inflight", "consumer_running", "consumer_ticks",
                       "items_finished", "current_item"}

Signals:
    SIGUSR1           stop the background consumer (it takes no new item and finishes the
                      one in hand), keep serving HTTP
    SIGTERM, SIGINT   stop accepting connections, finish in-flight requests, stop the
                      consumer the same way, exit 0
    SIGHUP, SIGUSR2   recorded and otherwise ignored (for signal forwarding tests)

``--record FILE`` appends ``signal <NAME>`` for each signal received and ``exit <code>``
last, each line written as it happens. Logs go to stderr as ``app: ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("app")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR2)
# Probes are not work: they are not counted in flight, so polling /inflight reads only the
# real requests, and shutdown does not wait for a load balancer's health checks.
MONITORING = {"/healthz", "/inflight", "/stats"}


class Consumer:
    """Stands in for a message-queue consumer: a thread that takes one item at a time.

    stop() is the graceful stop a notify hook asks for: no new item is taken, the one
    in hand is finished, then the thread ends.  Without a queue directory the thread
    only ticks (a unit of work every 0.1 s).
    """

    POLL = 0.05  # an empty queue is looked at again after this long

    def __init__(self, queue_dir: str | None = None, ledger: str | None = None,
                 item_ms: int = 200) -> None:
        self.ticks = 0
        self.items_finished = 0
        self.current: str | None = None
        self._queue = queue_dir
        self._ledger = ledger
        self._item_s = item_ms / 1000
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="consumer", daemon=True)
        if queue_dir is not None:
            os.makedirs(os.path.join(queue_dir, "taken"), exist_ok=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self.running:
            self._stop.set()
            self._thread.join()
            log.info("consumer stopped items_finished=%d", self.items_finished)

    def _run(self) -> None:
        if self._queue is None:
            while not self._stop.wait(0.1):
                self.ticks += 1
            return
        while not self._stop.is_set():
            name = self._claim(self._queue)
            if name is None:
                self._stop.wait(self.POLL)
                continue
            # Once taken, an item is finished whatever happens meanwhile: the stop flag
            # is only looked at between items.
            self.current = name
            self._note(f"taken {name}")
            time.sleep(self._item_s)  # the work
            self._note(f"finished {name}")
            os.unlink(os.path.join(self._queue, "taken", name))
            self.items_finished += 1
            self.current = None
            self.ticks += 1

    @staticmethod
    def _claim(queue_dir: str) -> str | None:
        """Take the first item nobody else took: rename() is atomic, so of several
        instances renaming the same file exactly one succeeds."""
        for name in sorted(os.listdir(queue_dir)):
            if name == "taken" or name.startswith("."):
                continue  # "." files: an item still being written by the producer
            try:
                os.rename(os.path.join(queue_dir, name), os.path.join(queue_dir, "taken", name))
            except FileNotFoundError:
                continue  # another instance was first
            return name
        return None

    def _note(self, event: str) -> None:
        record(self._ledger, f"{event} {os.getpid()}")


class Server(ThreadingHTTPServer):
    """Counts the requests in progress, so that shutdown can wait for them."""

    def __init__(self, address: tuple[str, int], consumer: Consumer) -> None:
        self.address_family = socket.getaddrinfo(*address, type=socket.SOCK_STREAM)[0][0]
        super().__init__(address, Handler)
        self.consumer = consumer
        self.stopping = False
        self.inflight = 0
        self.requests_total = 0
        self._changed = threading.Condition()

    @contextmanager
    def track(self, in_flight: bool) -> Iterator[None]:
        with self._changed:
            self.requests_total += 1
            self.inflight += in_flight
        try:
            yield
        finally:
            with self._changed:
                self.inflight -= in_flight
                self._changed.notify_all()

    def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for in-flight requests; return how many are left."""
        with self._changed:
            self._changed.wait_for(lambda: self.inflight == 0, timeout)
            return self.inflight


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        with self.server.track(in_flight=url.path not in MONITORING):
            status, body, content_type = self.route(url.path, urllib.parse.parse_qs(url.query))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if self.server.stopping:
                self.send_header("Connection", "close")  # also ends this keep-alive loop
            self.end_headers()
            self.wfile.write(data)

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, str]:
        text = "text/plain; charset=utf-8"
        if path == "/":
            return 200, f"hello from pid {os.getpid()}\n", text
        if path == "/healthz":
            return 200, "ok", text
        if path == "/inflight":
            return 200, str(self.server.inflight), text
        if path == "/stats":
            consumer = self.server.consumer
            stats = {
                "requests_total": self.server.requests_total,
                "inflight": self.server.inflight,
                "consumer_running": consumer.running,
                "consumer_ticks": consumer.ticks,
                "items_finished": consumer.items_finished,
                "current_item": consumer.current,
            }
            return 200, json.dumps(stats) + "\n", "application/json"
        if path == "/work":
            ms = query.get("ms", ["0"])[0]
            if not ms.isdigit() or int(ms) > 600_000:
                return 400, "ms must be a whole number of milliseconds up to 600000\n", text
            time.sleep(int(ms) / 1000)
            return 200, f"done {int(ms)}\n", text
        return 404, "not found\n", text

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # no access log: the tests read stderr

    def log_message(self, format: str, *args: object) -> None:
        log.info("%s: %s", self.address_string(), format % args)


def record(path: str | None, line: str) -> None:
    if path:
        with open(path, "a") as f:  # closed at once, so written before anything else happens
            f.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=os.environ.get("PORT", "8080"))
    parser.add_argument("--record", metavar="FILE", help="append received signals and exit")
    parser.add_argument("--drain-timeout", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument("--queue", metavar="DIR", help="consume the item files in DIR")
    parser.add_argument("--ledger", metavar="FILE", help="append 'taken/finished NAME PID'")
    parser.add_argument("--item-ms", type=int, default=200, metavar="N",
                        help="milliseconds of work per item (200)")
    args = parser.parse_args(argv)
    if args.ledger and not args.queue:
        parser.error("--ledger needs --queue")
    if args.item_ms < 0:
        parser.error("--item-ms must be 0 or more")
    logging.basicConfig(format="app: %(message)s", level=logging.INFO, stream=sys.stderr)

    # Signal handlers only enqueue; the main thread does the work. Python runs handlers in
    # the main thread between bytecodes, so a handler may interrupt code holding a lock:
    # Event.set() or a Condition there can deadlock, and server.shutdown() from a handler
    # waits for a loop that cannot finish. SimpleQueue.put() is documented as reentrant,
    # and a blocked SimpleQueue.get() wakes to run the handler, but only if the kernel
    # delivers the signal to the main thread. So every other thread is started with the
    # signals blocked (threads inherit the mask), leaving the main thread the only taker.
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    for sig in HANDLED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: signals.put(signum))

    consumer = Consumer(args.queue, args.ledger, args.item_ms)
    try:
        server = Server((args.host, args.port), consumer)
    except OSError as exc:
        log.error("cannot listen on %s port %s: %s", args.host, args.port, exc)
        record(args.record, "exit 1")
        return 1
    # A short poll: server.shutdown() waits for serve_forever() to notice, and the default
    # (0.5 s) would add up to half a second to every stop.
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                               name="http")
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    consumer.start()
    serving.start()  # and, from it, every request thread
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
    port = server.server_address[1]
    log.info("listening on %s port %d, pid %d", args.host, port, os.getpid())
    print(f"ready port={port}", flush=True)

    while (signum := signals.get()) not in STOP_SIGNALS:
        record(args.record, f"signal {signal.Signals(signum).name}")
        if signum == signal.SIGUSR1:
            consumer.stop()
    record(args.record, f"signal {signal.Signals(signum).name}")

    log.info("stopping")
    server.stopping = True
    server.shutdown()  # serve_forever() returns: no more accept()
    server.server_close()  # the listening socket goes: new connections are refused
    serving.join()
    consumer.stop()
    # Requests already read are finished, and answered with "Connection: close". Idle
    # keep-alive connections are simply dropped at exit, which clients must expect anyway.
    left = server.drain(args.drain_timeout)
    log.info("stopped inflight=%d", left)
    while not signals.empty():  # signals that arrived while draining
        record(args.record, f"signal {signal.Signals(signals.get()).name}")
    record(args.record, "exit 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
