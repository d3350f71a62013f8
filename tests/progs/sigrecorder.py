#!/usr/bin/env python3
"""A service that records every signal it receives, one line each on stdout.

    sigrecorder.py [--workers N] [--daemon] [--ignore SIG]... [--exit-on SIG]... [--exit CODE]

It installs a handler for every catchable signal 1-31, starts the helpers asked
for (each records signals the same way), and once every helper is ready prints

    ready pid=P pgid=G workers=P1,P2 daemon=P3

then one line per signal each process receives, written with a single write(2):

    signal SIGUSR1 role=main pid=P          (role: main, worker1, worker2, daemon)

--workers N    fork N workers that stay in this process group (like a pipeline)
--daemon       start a daemon that leaves the group and the session (setsid and a
               double fork), so only a subreaper or PID 1 inherits it
--ignore SIG   set SIG to SIG_IGN (inherited by every helper) instead of recording it
--exit-on SIG  on SIG: record it, then die of it, so the wait status says "killed by SIG"
               (only for signals whose default action terminates)
--exit CODE    exit with CODE right after printing ready, leaving the helpers behind
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys

CATCHABLE = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP)]

role = "main"
exit_on: set[int] = set()


def signum(text: str) -> int:
    text = text.upper()
    return int(text) if text.isdigit() else int(signal.Signals[text if text.startswith("SIG")
                                                                else "SIG" + text])


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def record(num: int, frame: object) -> None:
    say(f"signal {signal.Signals(num).name} role={role} pid={os.getpid()}")
    if num in exit_on:
        signal.signal(num, signal.SIG_DFL)
        os.kill(os.getpid(), num)


def serve_forever() -> None:
    while True:
        signal.pause()


def start_helper(name: str, ready_w: int, daemon: bool) -> int | None:
    """Fork a helper that records signals; return its PID (None for the daemon)."""
    global role
    pid = os.fork()
    if pid:
        return pid
    role = name
    try:
        if daemon:
            os.setsid()
            if os.fork():
                os._exit(0)  # the daemon is orphaned at once
        os.write(ready_w, f"{os.getpid()}\n".encode())
        os.close(ready_w)
        serve_forever()
    finally:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--ignore", action="append", type=signum, default=[])
    parser.add_argument("--exit-on", action="append", type=signum, default=[])
    parser.add_argument("--exit", type=int, default=None)
    args = parser.parse_args()
    exit_on.update(args.exit_on)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGQUIT must not leave core files
    for num in CATCHABLE:
        signal.signal(num, signal.SIG_IGN if num in args.ignore else record)

    ready_r, ready_w = os.pipe()
    workers = [start_helper(f"worker{i + 1}", ready_w, False) for i in range(args.workers)]
    daemon_parent = start_helper("daemon", ready_w, True) if args.daemon else None
    os.close(ready_w)
    helpers = args.workers + (1 if args.daemon else 0)
    with os.fdopen(ready_r) as ready:
        pids = [int(ready.readline()) for _ in range(helpers)]
    if daemon_parent is not None:
        os.waitpid(daemon_parent, 0)
    daemon = sorted(set(pids) - set(workers))
    say(f"ready pid={os.getpid()} pgid={os.getpgrp()} "
        f"workers={','.join(map(str, workers))} daemon={','.join(map(str, daemon))}")
    if args.exit is not None:
        sys.stdout.flush()
        os._exit(args.exit)
    serve_forever()


if __name__ == "__main__":
    main()
