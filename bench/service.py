"""The service bench.py runs under each wrapper: stdlib only, it never imports gracerun.

    service.py signals     print "ready PID"; then, for each SIGUSR1 or SIGTERM,
                           print "SIGNAME NS" with NS = CLOCK_MONOTONIC in
                           nanoseconds taken inside the handler; exit 0 after SIGTERM
    service.py orphans N   leave N processes orphaned to PID 1, each blocked reading
                           one pipe; print "orphaned N"; on a "go" line on stdin,
                           take the time and close the pipe so that all of them
                           exit at once, print "released NS"; exit 0 on the next
                           line or end of stdin

CLOCK_MONOTONIC is one clock for every process on the machine, so bench.py can
subtract its own reading from ours.  Output goes straight to fd 1 with
os.write: no buffering between the event and the line.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

CAT = "/bin/cat"  # an orphan: reads the pipe, exits at end of file


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


def say(line: str) -> None:
    os.write(1, f"{line}\n".encode())


def on_signal(signum: int, frame: FrameType | None) -> None:
    """Record the time first: this is the moment the benchmark measures to."""
    stamp = now_ns()
    say(f"{signal.Signals(signum).name} {stamp}")
    if signum == signal.SIGTERM:
        os._exit(0)


def serve_signals() -> int:
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say(f"ready {os.getpid()}")
    while True:  # ends in on_signal(SIGTERM), or by SIGKILL from bench.py's cleanup
        signal.pause()


def make_orphans(count: int) -> int:
    """Fork a middle process that starts `count` cats on the pipe and exits at once.

    Once the middle process is reaped, every cat has been re-parented to PID 1
    of the namespace (the wrapper; the service itself for "bare").
    """
    go_r, go_w = os.pipe()  # close-on-exec: the cats get go_r as stdin only
    middle = os.fork()
    if middle == 0:
        code = 1
        try:
            os.close(go_w)
            devnull = os.open(os.devnull, os.O_WRONLY)
            actions = [(os.POSIX_SPAWN_DUP2, go_r, 0), (os.POSIX_SPAWN_DUP2, devnull, 1)]
            for _ in range(count):
                os.posix_spawn(CAT, [CAT], {}, file_actions=actions)
            code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    _, status = os.waitpid(middle, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        say("error: could not start the orphans")
        return 1
    say(f"orphaned {count}")
    if sys.stdin.buffer.readline().strip() != b"go":
        return 1
    stamp = now_ns()
    os.close(go_w)
    say(f"released {stamp}")
    sys.stdin.buffer.readline()  # bench.py is done measuring (or gone)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["signals"]:
        return serve_signals()
    if argv[:1] == ["orphans"] and len(argv) == 2:
        return make_orphans(int(argv[1]))
    sys.stderr.write("usage: service.py signals | service.py orphans N\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
