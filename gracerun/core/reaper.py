"""The reaper: the only place in gracerun that calls waitpid.

Why one reaper.  As PID 1 (or a child subreaper) gracerun inherits every
orphan in the container and must collect them, which means `waitpid(-1)`.
Any other waitpid in the same process races with it: asyncio's subprocess
support and `subprocess.Popen.wait()` call waitpid on their own PID, and when
the global loop gets there first they report 255 (asyncio) or 0 (Popen) for a
child that really exited 1.  So nothing in gracerun launches with those APIs:
spawn.py returns a bare PID, whoever spawned it registers a callback here
with `watch(pid, ...)` in the same synchronous step (so the exit cannot be
collected before the watch exists), and every status flows out of `reap()`.

`reap()` runs on SIGCHLD (queued by signals.py, never inside the handler).
SIGCHLD is not queued by the kernel: one delivery may stand for many exits,
so each call loops on WNOHANG until nothing is left.

"Is the tree gone?" needs no polling either: as PID 1 or subreaper every
descendant is re-parented to us when its parent dies, so the tree is empty
exactly when we have no children left, and the last exit raises SIGCHLD.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from gracerun.core.log import DEBUG, WARNING, event

ExitCallback = Callable[[int, int], None]  # (pid, exit code as a shell shows it)
StopCallback = Callable[[int, int], None]  # (pid, the signal that stopped it)

# Bound one reap pass; a pass that hits it schedules another turn of the loop.
_MAX_REAPS_PER_PASS = 10_000


def exit_code(status: int) -> int:
    """A raw wait status as a shell reports it: the code, or 128+N for signal N."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 255


class Reaper:
    def __init__(self, warn_on_orphans: bool = False) -> None:
        self._watchers: dict[int, ExitCallback] = {}
        self._on_orphan: list[ExitCallback] = []
        self._warn = warn_on_orphans
        # Told when a child stops (job control): WUNTRACED reports it once.
        self.on_stopped: StopCallback | None = None
        self.reaped_total = 0
        self.orphans_reaped_total = 0

    def watch(self, pid: int, callback: ExitCallback) -> None:
        """Call `callback(pid, code)` when `pid` exits. Register right after spawn."""
        self._watchers[pid] = callback

    def on_orphan(self, callback: ExitCallback) -> None:
        """Call `callback(pid, code)` for every reaped process nobody watched."""
        self._on_orphan.append(callback)

    def reap(self) -> bool:
        """Collect every exited child; True when a further pass is needed."""
        for _ in range(_MAX_REAPS_PER_PASS):
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                return False
            except InterruptedError:
                continue
            if pid == 0:
                return False
            if os.WIFSTOPPED(status):
                if self.on_stopped is not None:
                    self.on_stopped(pid, os.WSTOPSIG(status))
                continue
            self._deliver(pid, exit_code(status))
        return True

    def has_children(self) -> bool:
        """True while any child (and so, as subreaper/PID 1, any descendant) exists."""
        try:
            # WNOWAIT: look without collecting, so reap() still sees the status.
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return True

    def _deliver(self, pid: int, code: int) -> None:
        self.reaped_total += 1
        callback = self._watchers.pop(pid, None)
        if callback is not None:
            callback(pid, code)
            return
        self.orphans_reaped_total += 1
        event(WARNING if self._warn else DEBUG, "reaped orphan", pid=pid, code=code)
        for cb in self._on_orphan:
            cb(pid, code)
