"""exec: run a command; exit 0 reads 0 (nothing in flight), anything else 1.

The command's output is discarded (a probe polled every few hundred
milliseconds would flood the log); its exit status comes from the one reaper.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gracerun.config.kinds import ExecProbe
from gracerun.core.spawn import Child, Redirect
from gracerun.errors import GracerunError
from gracerun.lifecycle.probes import ProbeError

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = ExecProbe  # the config record of this kind (see KINDS in __init__.py)


async def in_flight(probe: ExecProbe, service: Service) -> float:
    import asyncio
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        child = Child.start(probe.command, service.reaper, asyncio.get_running_loop(),
                            redirect=Redirect(devnull, devnull, devnull))
    except GracerunError as exc:
        raise ProbeError(str(exc)) from None
    finally:
        os.close(devnull)
    try:
        code = await asyncio.wait_for(child.wait(), probe.timeout)
    except TimeoutError:
        raise ProbeError(f"{probe.command[0]}: no answer within {probe.timeout:g}s") from None
    return 0.0 if code == 0 else 1.0
