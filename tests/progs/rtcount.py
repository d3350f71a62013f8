#!/usr/bin/env python3
"""A service that counts the queued real-time signals it receives, one by one.

    rtcount.py SIG

SIG (a number) and SIGTERM are blocked and taken with sigtimedwait, one queued
entry per call, so nothing is folded together (a Python signal handler would
fold a burst of SIGRTMIN+1 into one call).  Prints "ready pid=P", then
"count N" each time the count has changed and no SIG arrived for 50 ms, and on
SIGTERM "final N" and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    sig = int(sys.argv[1])
    wanted = {sig, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    os.write(1, f"ready pid={os.getpid()}\n".encode())
    count = shown = 0
    while True:
        info = signal.sigtimedwait(wanted, 0.05)
        if info is None:
            if count != shown:
                os.write(1, f"count {count}\n".encode())
                shown = count
        elif info.si_signo == sig:
            count += 1
        else:
            os.write(1, f"final {count}\n".encode())
            return


if __name__ == "__main__":
    main()
