#!/usr/bin/env python3
"""A service with a big process tree that ignores SIGTERM.

    tree.py N [--escaped M] [--busy B]

Starts N `sleep` processes that stay in its process group and M that leave it
(setsid: only a sweep of the whole tree finds them), plus B children in its
group that spin on the CPU.  Small processes (posix_spawn of sleep, not forks
of this interpreter), so that the kernel's own work to end them stays small.
Ignores SIGTERM (so only the budget's SIGKILL ends it), prints "ready pid=P
group=N escaped=M busy=B first_escaped=E" once every child exists, and waits.
"""

from __future__ import annotations

import argparse
import os
import signal


def spinner() -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        while True:
            pass
    finally:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--escaped", type=int, default=0)
    parser.add_argument("--busy", type=int, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sleep = ["sleep", "100000"]
    escaped = [os.posix_spawnp("sleep", sleep, os.environ, setsid=True,
                               setsigdef=(signal.SIGTERM,)) for _ in range(args.escaped)]
    for _ in range(args.busy):
        spinner()
    for _ in range(args.count):
        os.posix_spawnp("sleep", sleep, os.environ, setsigdef=(signal.SIGTERM,))
    first = escaped[0] if escaped else 0
    os.write(1, f"ready pid={os.getpid()} group={args.count} escaped={args.escaped} "
                f"busy={args.busy} first_escaped={first}\n".encode())
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
