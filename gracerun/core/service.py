"""The supervised service as the rest of gracerun sees it: a small handle.

Hooks and probes get this, not the supervisor: they may signal the service,
ask whether it still runs, and spawn helper processes whose exit status
comes from the one reaper.  They cannot start a shutdown, change the
lifecycle or touch the budget; that stays in supervisor.py.
"""

from __future__ import annotations

import os
from typing import Any

from gracerun.core.reaper import Reaper


class Service:
    def __init__(self, reaper: Reaper, loop: Any, *, group: bool = False) -> None:
        self.reaper = reaper
        self.loop = loop  # the run's loop: helper processes' exits are delivered on it
        self.group = group  # signals go to the service's process group (-g)
        self.pid: int | None = None
        self.exit_code: int | None = None  # as a shell shows it; None while it runs

    @property
    def running(self) -> bool:
        return self.pid is not None and self.exit_code is None

    def signal(self, signum: int, *, group: bool | None = None) -> bool:
        """Send `signum` to the running service (its group in -g mode); False if not sent."""
        pid = self.pid
        if pid is None or self.exit_code is not None:
            return False
        try:
            if self.group if group is None else group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True
