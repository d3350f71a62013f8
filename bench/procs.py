"""Processes for bench.py: start, wait with a deadline, read /proc, clean up.

Waits use pidfds (a process's exit makes its pidfd readable), so nothing here
sleeps to synchronise, and every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Sequence

PR_SET_CHILD_SUBREAPER = 36
CLEANUP_TIMEOUT = 10.0


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Processes:
    """Start processes, wait for them with a deadline, and clean up after them."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.devnull = os.open(os.devnull, os.O_RDWR)

    def spawn(self, argv: Sequence[str], stdin: int | None = None, stdout: int | None = None,
              stderr: int | None = None) -> int:
        fds = (self.devnull if fd is None else fd for fd in (stdin, stdout, stderr))
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        try:
            return os.posix_spawn(argv[0], list(argv), self.env, file_actions=actions,
                                  setsigmask=(), setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        except OSError as exc:
            raise BenchError(f"cannot start {argv[0]}: {exc.strerror}") from None

    @staticmethod
    def wait(pid: int, timeout: float) -> int | None:
        """The exit code of our child pid (as subprocess shows it), None on timeout."""
        return Processes.wait_cpu(pid, timeout)[0]

    @staticmethod
    def wait_cpu(pid: int, timeout: float) -> tuple[int | None, float]:
        """(exit code or None on timeout, CPU ms of pid and the children it reaped)."""
        if not wait_exited(pid, timeout):
            return None, 0.0
        _, status, usage = os.wait4(pid, 0)  # it has exited: this does not block
        return os.waitstatus_to_exitcode(status), (usage.ru_utime + usage.ru_stime) * 1e3

    def cleanup(self) -> list[int]:
        """SIGKILL every process below us, by PID, and reap; return those found."""
        pids = descendants(os.getpid())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + CLEANUP_TIMEOUT
        for pid in pids:
            wait_exited(pid, deadline - time.monotonic())
        # All gone: as subreaper, every one of them is now our child or reaped.
        for _ in range(len(pids) + 1):
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        return pids


def wait_exited(pid: int, timeout: float) -> bool:
    """Whether pid (any process, not only a child) has exited within timeout."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already reaped
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000))
    finally:
        os.close(pidfd)


def children(pid: int) -> list[int]:
    """Children of pid (zombies included), from every thread's children file."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.extend(int(p) for p in fh.read().split())
        except FileNotFoundError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below pid, parents before children (bounded by pid_max)."""
    out: list[int] = []
    todo = [pid]
    while todo and len(out) < 1 << 22:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def proc_status(path: str) -> dict[str, str]:
    """/proc/PATH/status as a dict, e.g. proc_status("123") or proc_status("123/task/124")."""
    with open(f"/proc/{path}/status") as fh:
        return dict(line.split(":", 1) for line in fh.read().splitlines() if ":" in line)


def status_kb(status: dict[str, str], key: str) -> float:
    return float(status.get(key, "0 kB").split()[0])


def context_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over pid's threads."""
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            status = proc_status(f"{pid}/task/{tid}")
            vol += int(status["voluntary_ctxt_switches"])
            invol += int(status["nonvoluntary_ctxt_switches"])
    return vol, invol


def cpu_ns(pid: int) -> int:
    """CPU time pid has run, in ns, summed over its threads (first field of schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{tid}/schedstat"
        with contextlib.suppress(FileNotFoundError), open(path) as fh:
            total += int(fh.read().split()[0])
    return total


def event_loop_in(pid: int) -> str:
    """Which event loop a Python wrapper runs, from the modules it has mapped."""
    with open(f"/proc/{pid}/maps") as fh:
        maps = fh.read()
    if "uvloop" in maps:
        return "uvloop"
    if "_asyncio" in maps:
        return "asyncio"
    return "selectors (MiniLoop)"


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return ""


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (FileNotFoundError, IndexError):
        return True  # gone: reaped, so certainly exited


def become_subreaper() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
