"""The process tree below gracerun: listing, signalling and killing it.

Why /proc and not psutil.  Listing the descendants of one process means
reading the parent of every process on the system (this kernel, like many,
has no /proc/PID/task/TID/children), so the cost grows with the whole
machine, not with our tree.  psutil builds an object per process on top of
that and its import alone costs milliseconds; one pass of os.open/os.read
over /proc/PID/stat is the same system calls and nothing else.

Why the group first.  At the budget, the service's process group (the
service and everything it did not move elsewhere) is killed with a single
kill(2), before any scan (the service itself just before: signalling a
group of thousands takes the kernel a while, and the leader may come last):
a scan of a tree of 5,500 processes took about a second, during which the
service ran on past its budget.  The scan then only
has to find what left the group (setsid daemons, shells' job groups).
"""

from __future__ import annotations

import os
import signal

_MAX_KILL_ROUNDS = 50

# (ppid, pgid, state letter: R, S, D, T, Z, ...); a plain tuple, not a NamedTuple
# class, which costs a tenth of a millisecond at every start-up.
Proc = tuple[int, int, str]


def processes() -> dict[int, Proc]:
    """Every process in /proc (our PID namespace's view), by PID: (ppid, pgid, state)."""
    found: dict[int, Proc] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{entry}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # gone since listdir
        try:
            raw = os.read(fd, 1024)
        except OSError:
            continue
        finally:
            os.close(fd)
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = raw[raw.rfind(b")") + 2:].split(b" ", 4)
        if len(fields) < 4:
            continue
        found[int(entry)] = (int(fields[1]), int(fields[2]), fields[0].decode())
    return found


def _below(root: int, procs: dict[int, Proc]) -> list[int]:
    """PIDs of every descendant of root in `procs`, zombies included."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def descendants() -> list[int]:
    """PIDs of every live descendant of gracerun (zombies excluded)."""
    procs = processes()
    return [pid for pid in _below(os.getpid(), procs) if procs[pid][2] != "Z"]  # state


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
    """SIGKILL the service's group at once, then every descendant that left it.

    Returns how many processes were sent SIGKILL (the group's members counted
    from the first scan after its kill, while they are still exiting).
    Bounded in rounds: a fork bomb that outruns us is left to the kernel,
    which kills the namespace when PID 1 exits.
    """
    if service_pgid is not None:
        # The service itself first (it leads its group): killing a big group
        # takes the kernel a while, and the service may come last in it.
        send([service_pgid], signal.SIGKILL)
        signal_group(service_pgid, signal.SIGKILL)
    me = os.getpid()
    group = 0
    swept: set[int] = set()
    for round_ in range(_MAX_KILL_ROUNDS):
        procs = processes()
        pids = []
        for pid in _below(me, procs):
            _, pgid, state = procs[pid]
            if pgid == service_pgid:
                # Killed with the group: listed until the kernel has finished it.
                if round_ == 0:
                    group += 1
            elif state != "Z" and pid not in swept:  # a killed escapee stays until reaped
                pids.append(pid)
        if not pids:
            break
        send(pids, signal.SIGKILL)
        swept.update(pids)
    return group + len(swept)
