#!/usr/bin/env python3
"""A service that makes COUNT orphans: processes whose parent exits before them.

    orphans.py COUNT [--batch B]
        the orphans exit at once; print "done orphans=COUNT pid=P", then wait for
        a signal (SIGTERM kills it: 143)
    orphans.py COUNT --together --exit CODE
        the orphans wait; print "ready orphans=COUNT", then exit CODE: every
        orphan exits at the same moment

Each of COUNT/B intermediate children forks B grandchildren and exits without
waiting for them (the double fork), so the grandchildren are re-parented to the
nearest subreaper or PID 1: exactly COUNT orphans, all of them for that
process to reap.  The intermediates themselves are reaped here.
"""

from __future__ import annotations

import argparse
import os
import signal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--together", action="store_true")
    parser.add_argument("--exit", type=int, default=0)
    args = parser.parse_args()

    # --together: every orphan blocks reading this pipe; our exit closes the
    # last write end, and they all see EOF at once.
    hold_r, hold_w = os.pipe() if args.together else (-1, -1)
    intermediates = []
    left = args.count
    while left > 0:
        batch = min(args.batch, left)
        left -= batch
        pid = os.fork()
        if pid == 0:
            for _ in range(batch):
                if os.fork() == 0:
                    if args.together:
                        os.close(hold_w)
                        os.read(hold_r, 1)
                    os._exit(0)
            os._exit(0)
        intermediates.append(pid)
    for pid in intermediates:
        os.waitpid(pid, 0)
    if args.together:
        os.write(1, f"ready orphans={args.count}\n".encode())
        os._exit(args.exit)
    os.write(1, f"done orphans={args.count} pid={os.getpid()}\n".encode())
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
