"""signal: send a signal to the service (e.g. SIGUSR1: stop MQ consumers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gracerun.config.kinds import SignalHook
from gracerun.core import signals
from gracerun.lifecycle.hooks import HookFailed

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = SignalHook  # the config record of this kind (see KINDS in __init__.py)


async def run(hook: SignalHook, service: Service) -> str:
    if not service.signal(hook.signal, group=hook.group):
        raise HookFailed("the service is not running")
    return (f"sent {signals.name(hook.signal)} to pid {service.pid}"
            f"{' (group)' if hook.group else ''}")
