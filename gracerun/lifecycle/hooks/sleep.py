"""sleep: wait a fixed time (the blind wait, for when nothing better can be probed)."""

from __future__ import annotations

import asyncio

from gracerun.config.plan import SleepHook
from gracerun.core.service import Service


async def run(hook: SleepHook, service: Service) -> str:
    await asyncio.sleep(hook.duration)
    return f"slept {hook.duration:g}s"
