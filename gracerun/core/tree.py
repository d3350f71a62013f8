"""The process tree below gracerun: listing, signalling and killing it.

psutil is imported only here and only when a tree must actually be walked
(shutdown with processes left over), so a plain run pays nothing for it.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("gracerun")

_MAX_KILL_ROUNDS = 50


def descendants() -> list[int]:
    """PIDs of every live descendant of gracerun (zombies excluded)."""
    import psutil

    try:
        children = psutil.Process(os.getpid()).children(recursive=True)
    except psutil.Error:
        return []
    pids = []
    for proc in children:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def send(pids: list[int], signum: int) -> int:
    """Send signum to each PID that still exists; return how many got it."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, signum)
            sent += 1
        except (ProcessLookupError, PermissionError):
            continue
    return sent


def signal_group(pgid: int, signum: int) -> bool:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_all(service_pgid: int | None) -> int:
    """SIGKILL the service's group and every descendant, re-scanning for forks.

    Returns how many processes were sent SIGKILL.  Bounded in rounds: a fork
    bomb that outruns us is left to the kernel, which kills the namespace when
    PID 1 exits.
    """
    killed: set[int] = set(descendants())  # listed first, so the count is right
    if service_pgid is not None:
        signal_group(service_pgid, signal.SIGKILL)
    send(list(killed), signal.SIGKILL)
    for _ in range(_MAX_KILL_ROUNDS):
        # The group's members are listed too until the kernel has finished
        # them: counted once each, whichever round reached them.
        pids = [pid for pid in descendants() if pid not in killed]
        if not pids:
            break
        send(pids, signal.SIGKILL)
        killed.update(pids)
    return len(killed)
