#!/usr/bin/env python3
"""Exec a command in a prepared process state.

    launch.py [--ctty] [--dirty] -- CMD [ARGS...]

--ctty   make stdin (a pty slave) this session's controlling terminal first
         (TIOCSCTTY; start it with start_new_session=True so it leads a session),
         as a shell or `docker run -t` does; CMD then owns the terminal's foreground
--dirty  hand CMD the worst signal state a parent can leave: SIGHUP, SIGINT,
         SIGPIPE, SIGXFSZ, SIGUSR2 and SIGRTMIN+2 ignored, and SIGUSR1, SIGALRM
         and SIGRTMIN+1 blocked (exec keeps both)
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import termios


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    opts, cmd = args[:split], args[split + 1:]
    if "--ctty" in opts:
        if os.getsid(0) != os.getpid():
            os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if "--dirty" in opts:
        rtmin = signal.SIGRTMIN
        for num in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ,
                    signal.SIGUSR2, rtmin + 2):
            signal.signal(num, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGALRM, rtmin + 1})
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
