#!/usr/bin/env python3
"""The naive service: HTTP/1.1 with keep-alive that dies at once on SIGTERM.

It leaves SIGTERM at its default action, as most services that were never
written for graceful shutdown do, so a request in flight when the stop signal
arrives is cut short and fails: a drain that ends too early fails a test
instead of passing quietly.

    naive_http.py --port N --record FILE

Prints ``ready port=N`` on stdout and ``app: listening on HOST port N, pid P`` on
stderr once listening; appends ``got METHOD PATH`` to FILE as soon as a request's
head has been read (the tests' handshake), and ``sent PATH`` when its response
has been written.

    GET  /                 "hello"
    GET  /work?ms=N        sleeps N ms, then "done N"
    GET  /sse?n=K&every=MS K events, one every MS ms (a stream, then the end)
    POST /upload           reads the whole body (Content-Length), answers "got N"
    GET  /download?bytes=N N bytes of "x"
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    record_lock = threading.Lock()

    def record(line: str) -> None:
        with record_lock, open(args.record, "a") as fh:
            fh.write(line + "\n")

    listener = socket.create_server((args.host, args.port), backlog=128, reuse_port=False)
    port = listener.getsockname()[1]
    print(f"app: listening on {args.host} port {port}, pid {os.getpid()}", file=sys.stderr,
          flush=True)
    print(f"ready port={port}", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, record), daemon=True).start()


def serve(conn: socket.socket, rec: Callable[[str], None]) -> None:
    buf = b""
    with conn:
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.partition(":") for line in lines[1:])}
            url = urllib.parse.urlsplit(target)
            query = dict(urllib.parse.parse_qsl(url.query))
            rec(f"got {method} {url.path}")
            length = int(headers.get("content-length", "0"))
            if url.path == "/upload":
                while len(buf) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                body = f"got {length}\n".encode()
                buf = buf[length:]
            else:
                buf = buf[length:]
                body = b"hello\n"
            if url.path == "/work":
                ms = int(query.get("ms", "0"))
                time.sleep(ms / 1000)
                body = f"done {ms}\n".encode()
            if url.path == "/sse":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                for i in range(int(query.get("n", "3"))):
                    if i:
                        time.sleep(int(query.get("every", "1000")) / 1000)
                    event = f"data: {i}\n\n".encode()
                    conn.sendall(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                conn.sendall(b"0\r\n\r\n")
                rec(f"sent {url.path}")
                continue
            if url.path == "/download":
                body = b"x" * int(query.get("bytes", "0"))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\n\r\n" + body)
            rec(f"sent {url.path}")
            if headers.get("connection", "").lower() == "close":
                return


if __name__ == "__main__":
    main()
