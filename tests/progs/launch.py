#!/usr/bin/env python3
"""Exec a command in a prepared process state.

    launch.py [--ctty] [--dirty] [--ignore SIG]... [--block SIG]...
              [--close FD]... [--cgroup DIR] [--cpu N] [--raise SIG]... -- CMD [ARGS...]

--ctty        make stdin (a pty slave) this session's controlling terminal first
              (TIOCSCTTY; start it with start_new_session=True so it leads a session),
              as a shell or `docker run -t` does; CMD then owns the terminal's foreground
--dirty       hand CMD the worst signal state a parent can leave: SIGHUP, SIGINT,
              SIGPIPE, SIGXFSZ, SIGUSR2 and SIGRTMIN+2 ignored, and SIGUSR1, SIGALRM
              and SIGRTMIN+1 blocked (exec keeps both)
--ignore SIG  set SIG to SIG_IGN (a name, a number, or RTMIN+N), as nohup does for HUP
--block SIG   block SIG
--close FD    close FD (0, 1 or 2), as `>&-` does
--cgroup DIR  move into the cgroup DIR first (e.g. one with a pids limit, under
              which CMD's fork fails with EAGAIN)
--cpu N       run on CPU N only (sched_setaffinity; inherited by every descendant)
--raise SIG   send SIG to itself last (block it too, or it acts now): CMD starts
              with SIG pending, as if it had arrived in CMD's first instant
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import termios


def signum(text: str) -> int:
    text = text.upper().removeprefix("SIG")
    if text.isdigit():
        return int(text)
    if text.startswith("RTMIN+"):
        return int(signal.SIGRTMIN) + int(text[6:])
    return int(signal.Signals["SIG" + text])


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    opts, cmd = args[:split], args[split + 1:]
    ignore: list[int] = []
    block: list[int] = []
    close: list[int] = []
    cgroup: str | None = None
    cpu: int | None = None
    raise_: list[int] = []
    i = 0
    while i < len(opts):
        opt = opts[i]
        if opt in ("--ignore", "--block", "--close", "--cgroup", "--cpu", "--raise"):
            value = opts[i + 1]
            i += 2
            if opt == "--ignore":
                ignore.append(signum(value))
            elif opt == "--block":
                block.append(signum(value))
            elif opt == "--close":
                close.append(int(value))
            elif opt == "--raise":
                raise_.append(signum(value))
            elif opt == "--cgroup":
                cgroup = value
            else:
                cpu = int(value)
            continue
        i += 1
    if "--ctty" in opts:
        if os.getsid(0) != os.getpid():
            os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if "--dirty" in opts:
        rtmin = signal.SIGRTMIN
        ignore += [signal.SIGHUP, signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ,
                   signal.SIGUSR2, rtmin + 2]
        block += [signal.SIGUSR1, signal.SIGALRM, rtmin + 1]
    for num in ignore:
        signal.signal(num, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, block)
    if cgroup is not None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    for fd in close:
        os.close(fd)
    for num in raise_:
        os.kill(os.getpid(), num)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
