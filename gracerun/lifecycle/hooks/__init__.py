"""Hooks: one module per kind behind one small protocol.

    async def run(hook, service) -> str   # a short detail for the log on success

`service` is the small handle of core/service.py (pid, running, signal,
reaper), never the supervisor.  A hook raises HookFailed (or any
GracerunError) when it did not do its job; the caller (Pipeline._run_hook in
shutdown.py) enforces the timeout by cancelling the task, so each kind must
clean up on CancelledError (kill its process, close its socket).

KINDS names the module of each kind: a new kind is one new file plus one line.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gracerun.errors import GracerunError

if TYPE_CHECKING:
    from gracerun.config.kinds import Hook
    from gracerun.core.service import Service


class HookFailed(GracerunError):
    """The hook ran and reported failure (exit status, HTTP status, ...)."""


class HookTimedOut(HookFailed):
    """The hook's own timeout ran out (e.g. every HTTP attempt timed out)."""


# kind -> module in this package.  Each module holds RECORD (its config record, whose
# fields are the table's keys), `async run(hook, service)` (the shutdown direction) and,
# for the kinds that can put an instance back, `async restore(hook, service)`.  Importing
# one must stay cheap (no asyncio at the top): config loading reads RECORD before the
# service starts.
KINDS = {
    "exec": "exec",
    "http": "http",
    "sleep": "sleep",
    "signal": "signal",
    "haproxy": "haproxy",
    "nacos": "nacos",
    "eureka": "eureka",
    "consul": "consul",
    "etcd": "etcd",
    "nginx": "nginx",
}


def runner(hook: Hook) -> Callable[[Any, Service], Awaitable[str]]:
    """The run() coroutine function for this hook's kind."""
    import importlib

    run: Callable[[Any, Service], Awaitable[str]] = importlib.import_module(
        f"{__name__}.{KINDS[hook.kind]}").run
    return run
