"""haproxy: take this instance out of an HAProxy backend, and put it back.

    shutdown   set server BACKEND/SERVER state drain|maint
    start-up   set server BACKEND/SERVER state ready      (restore)

then read `show stat` until the server's status shows it took effect.  HAProxy applies
a state change at its next scheduler pass, not inside the command, so the status is
polled (for a few milliseconds in practice) within the hook's timeout.  "drain" stops
new load-balanced traffic while the connections HAProxy holds finish; "maint" also
stops persistent (stick / cookie) traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gracerun.clients import haproxy
from gracerun.config.kinds import HaproxyHook
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = HaproxyHook  # the config record of this kind (see KINDS in __init__.py)

_POLL = 0.02


def took_effect(state: str, status: str) -> bool:
    """Does `show stat`'s status say the server gets no new traffic in `state`?

    maint shows as "MAINT" (or "MAINT (via b/s)" for a tracked server).  drain shows as
    "DRAIN" while the server is up; a server whose health check failed shows "DOWN" or
    "NOLB" whatever its admin state, and gets no new traffic either.  Only "UP" (with
    its "UP 2/3" form) and "no check" still take new traffic.
    """
    if state == "maint":
        return status.startswith("MAINT")
    return not status.startswith(("UP", "no check"))


def put_back(status: str) -> bool:
    """Does `show stat`'s status say the admin state is back to ready?

    "MAINT" and "DRAIN" are admin states; anything else (UP, DOWN from a failing
    health check, NOLB, no check) means HAProxy would send traffic once healthy.
    """
    return not status.startswith(("MAINT", "DRAIN"))


async def run(hook: HaproxyHook, service: Service) -> str:
    """Take the server out: drain or maint, verified by `show stat`."""
    return await _set(hook, hook.state, lambda status: took_effect(hook.state, status))


async def restore(hook: HaproxyHook, service: Service) -> str:
    """Put the server back: state ready, verified by `show stat`."""
    return await _set(hook, "ready", put_back)


async def _set(hook: HaproxyHook, state: str, done: Callable[[str], bool]) -> str:
    import asyncio
    loop = asyncio.get_running_loop()
    deadline = loop.time() + hook.timeout
    where = f"{hook.backend}/{hook.server}"

    def left() -> float:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise HookTimedOut(f"haproxy {hook.target}: timed out after {hook.timeout:g}s")
        return remaining

    try:
        before = await haproxy.server_stats(hook.target, hook.backend, hook.server, left())
        await haproxy.set_server_state(hook.target, hook.backend, hook.server, state, left())
        while True:
            now = await haproxy.server_stats(hook.target, hook.backend, hook.server, left())
            if done(now.status):
                break
            if deadline - loop.time() <= _POLL:
                raise HookFailed(f"haproxy {hook.target}: {where} still {now.status} after "
                                 f"'set server {where} state {state}'")
            await asyncio.sleep(_POLL)
    except haproxy.HaproxyTimeout:
        raise HookTimedOut(f"haproxy {hook.target}: timed out after {hook.timeout:g}s") \
            from None
    except haproxy.HaproxyError as exc:
        raise HookFailed(str(exc)) from None
    return f"{where}: {before.status} -> {now.status} ({now.scur} in flight)"
