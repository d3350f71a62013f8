"""signal: send a signal to the service (e.g. SIGUSR1: stop MQ consumers)."""

from __future__ import annotations

import os

from gracerun.config.plan import SignalHook
from gracerun.core import signals
from gracerun.core.supervisor import Supervisor
from gracerun.lifecycle.hooks import HookFailed


async def run(hook: SignalHook, sup: Supervisor) -> str:
    pid = sup.service_pid
    if pid is None or sup.service_code is not None:
        raise HookFailed("the service is not running")
    try:
        if hook.group:
            os.killpg(pid, hook.signal)
        else:
            os.kill(pid, hook.signal)
    except ProcessLookupError:
        raise HookFailed("the service is not running") from None
    return f"sent {signals.name(hook.signal)} to pid {pid}{' (group)' if hook.group else ''}"
