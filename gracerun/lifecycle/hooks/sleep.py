"""sleep: wait a fixed time (the blind wait, for when nothing better can be probed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gracerun.config.kinds import SleepHook

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = SleepHook  # the config record of this kind (see KINDS in __init__.py)


async def run(hook: SleepHook, service: Service) -> str:
    import asyncio
    await asyncio.sleep(hook.duration)
    return f"slept {hook.duration:g}s"
