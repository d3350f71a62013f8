"""sleep: wait a fixed time (the blind wait, for when nothing better can be probed)."""

from __future__ import annotations

import asyncio

from gracerun.config.plan import SleepHook
from gracerun.core.supervisor import Supervisor


async def run(hook: SleepHook, sup: Supervisor) -> str:
    await asyncio.sleep(hook.duration)
    return f"slept {hook.duration:g}s"
