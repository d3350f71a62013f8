#!/usr/bin/env python3
"""The negative control for reaping: a subreaper that never waits.

    nonreaper.py CMD [ARGS...]

Registers as a child subreaper (PR_SET_CHILD_SUBREAPER, the same thing
gracerun does when it is not PID 1), starts CMD, prints "nonreaper child=PID",
and then calls no wait function at all, so every orphan CMD leaves behind
stays a zombie under it.  On SIGTERM (the test is done looking) it kills CMD,
reaps everything, and exits 0, so the zombies do not outlive the test.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    done = []
    signal.signal(signal.SIGTERM, lambda num, frame: done.append(num))
    child = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
    os.write(1, f"nonreaper child={child}\n".encode())
    while not done:
        signal.pause()
    os.kill(child, signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break


if __name__ == "__main__":
    main()
