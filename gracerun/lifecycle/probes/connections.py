"""connections: the kernel's view of the service's TCP connections (sock_diag).

Drain counts connections with bytes moving or queued (an idle keep-alive
connection from a load balancer is not in flight); propagate counts
established connections never seen before, by socket cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gracerun.config.kinds import ConnectionsProbe
from gracerun.lifecycle.probes import ProbeError

if TYPE_CHECKING:
    from gracerun.clients.sockdiag import TcpSocket
    from gracerun.core.service import Service

# The wire (clients/sockdiag.py: socket, the netlink structures) is imported when the
# probe is first read, not when config validation imports this module for RECORD
# before the service is spawned (~9 ms).

RECORD = ConnectionsProbe  # the config record of this kind (see KINDS in __init__.py)


async def in_flight(probe: ConnectionsProbe, service: Service) -> float:
    from gracerun.clients import sockdiag

    socks = await _tcp_sockets(probe.ports, timeout=probe.timeout)
    idle_ms = int(probe.idle * 1000)
    return float(sum(1 for s in socks if sockdiag.is_busy(s, idle_ms)))


def traffic(probe: ConnectionsProbe) -> Callable[[], Awaitable[float]]:
    seen: set[int] = set()
    new = 0

    async def read() -> float:
        from gracerun.clients import sockdiag

        nonlocal new
        socks = await _tcp_sockets(probe.ports, (sockdiag.TcpState.ESTABLISHED,),
                                   timeout=probe.timeout)
        fresh = {s.cookie for s in socks} - seen
        seen.update(fresh)
        new += len(fresh)
        return float(new)

    return read


async def _tcp_sockets(ports: tuple[int, ...], states: tuple[int, ...] = (), *,
                       timeout: float) -> list[TcpSocket]:
    """Both dumps (IPv4, IPv6) under one deadline, read only when the loop says the netlink
    socket is readable: a slow kernel answer cannot hold up signals or the budget timer."""
    from gracerun.clients import sockdiag

    try:
        if states:
            return await sockdiag.tcp_sockets_async(ports, states=states, timeout=timeout)
        return await sockdiag.tcp_sockets_async(ports, timeout=timeout)
    except sockdiag.SockDiagError as exc:
        raise ProbeError(str(exc)) from None
