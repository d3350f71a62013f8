"""tcp: connect to host:port; a readiness gate that passes when it accepts."""

from __future__ import annotations

from gracerun.config.kinds import TcpProbe

RECORD = TcpProbe  # the config record of this kind (see KINDS in __init__.py)


async def ready(probe: TcpProbe) -> bool:
    import asyncio
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(probe.host, probe.port),
                                           probe.timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
