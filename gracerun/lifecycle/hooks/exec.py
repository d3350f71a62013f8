"""exec: run a command; its output goes to gracerun's log, line by line.

The command is spawned through core/spawn.py's Child (own process group,
clean signals) and its exit status comes from the run's single reaper, never
from a waitpid of our own.  On timeout or cancellation its whole group is killed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from gracerun.config.kinds import ExecHook
from gracerun.core.log import INFO, event
from gracerun.core.spawn import Child, Redirect
from gracerun.lifecycle.hooks import HookFailed
from gracerun.observe import redact

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = ExecHook  # the config record of this kind (see KINDS in __init__.py)

_MAX_LINE = 4096
_MAX_LINES = 1000  # a chatty hook cannot flood the log


async def _pump_output(fd: int, hook_name: str) -> None:
    """Log the hook's output line by line; past the cap, read and discard it (closing
    the pipe early would kill a chatty hook with SIGPIPE)."""
    import asyncio
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_LINE * 4)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
    dropped = 0
    try:
        for _ in range(_MAX_LINES):
            try:
                line = await reader.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            text = redact.scrub(line[:_MAX_LINE].decode(errors="replace").rstrip())
            event(INFO, "hook output", hook=hook_name, line=text)
        while chunk := await reader.read(65536):  # ends at EOF; cancelled at hook end
            dropped += chunk.count(b"\n")
    finally:
        if dropped:
            event(INFO, "hook output truncated", hook=hook_name, lines_dropped=dropped)
        transport.close()


async def run(hook: ExecHook, service: Service) -> str:
    import asyncio
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    env = {**os.environ, **hook.env}
    try:
        # launch, not start: a hundred parallel hooks must not hold the loop
        # (and so the budget and the stop grace) while each one gets to its exec.
        child = await Child.launch(hook.command, service.reaper, asyncio.get_running_loop(),
                                   env=env, cwd=hook.cwd,
                                   redirect=Redirect(stdin=devnull, stdout=out_w, stderr=out_w))
    except BaseException:
        os.close(out_r)
        raise
    finally:
        os.close(out_w)
        os.close(devnull)
    pump = asyncio.ensure_future(_pump_output(out_r, hook.name))
    try:
        code = await child.wait()  # kills the child's group when the hook is cancelled
    except asyncio.CancelledError:
        pump.cancel()
        raise
    await asyncio.wait([pump], timeout=1.0)  # output of a child that left the pipe open
    pump.cancel()
    if code != 0:
        raise HookFailed(f"{hook.command[0]} exited with {code}")
    return f"{hook.command[0]} exited 0"
