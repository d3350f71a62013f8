"""haproxy: the server's row of HAProxy's `show stat`, from the load balancer itself.

Drain reads scur + qcur (requests HAProxy has in flight to this server, or
queued for it); propagate reads stot (every session it ever sent here), so
"quiet" means the load balancer stopped sending.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gracerun.clients import haproxy
from gracerun.config.kinds import HaproxyProbe
from gracerun.lifecycle.probes import ProbeError

if TYPE_CHECKING:
    from gracerun.core.service import Service

RECORD = HaproxyProbe  # the config record of this kind (see KINDS in __init__.py)


async def in_flight(probe: HaproxyProbe, service: Service) -> float:
    stats = await read(probe)
    return float(stats.scur + stats.qcur)


def traffic(probe: HaproxyProbe) -> Callable[[], Awaitable[float]]:
    async def read_total() -> float:
        return float((await read(probe)).stot)

    return read_total


async def read(probe: HaproxyProbe) -> haproxy.ServerStats:
    try:
        return await haproxy.server_stats(probe.target, probe.backend, probe.server,
                                          probe.timeout)
    except haproxy.HaproxyError as exc:
        raise ProbeError(str(exc)) from None
