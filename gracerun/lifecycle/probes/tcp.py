"""tcp: connect to host:port; 0 (or a passed gate) when it accepts, 1 when not."""

from __future__ import annotations

import asyncio

from gracerun.config.plan import TcpProbe
from gracerun.core.service import Service


async def in_flight(probe: TcpProbe, service: Service) -> float:
    return 0.0 if await ready(probe) else 1.0


async def ready(probe: TcpProbe) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(probe.host, probe.port),
                                           probe.timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
