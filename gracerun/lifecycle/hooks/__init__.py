"""Hooks: one module per kind behind one small protocol.

    async def run(hook, ctx) -> str      # a short detail for the log on success

A hook raises HookFailed (or any GracerunError) when it did not do its job;
the caller (shutdown.run_hook) enforces the timeout by cancelling the task, so
each kind must clean up on CancelledError (kill its process, close its socket).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gracerun.errors import GracerunError

if TYPE_CHECKING:
    from gracerun.config.plan import Hook
    from gracerun.core.supervisor import Supervisor


class HookFailed(GracerunError):
    """The hook ran and reported failure (exit status, HTTP status, ...)."""


class HookTimedOut(HookFailed):
    """The hook's own timeout ran out (e.g. every HTTP attempt timed out)."""


def runner(hook: Hook) -> Callable[[Any, Supervisor], Awaitable[str]]:
    """The run() coroutine function for this hook's kind."""
    from gracerun.lifecycle.hooks import exec as exec_hook
    from gracerun.lifecycle.hooks import haproxy, http, signal, sleep

    kinds: dict[str, Callable[[Any, Supervisor], Awaitable[str]]] = {
        "exec": exec_hook.run, "http": http.run, "sleep": sleep.run, "signal": signal.run,
        "haproxy": haproxy.run}
    return kinds[hook.kind]
