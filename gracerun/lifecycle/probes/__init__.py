"""Probes: read one number from the service's world, for drain and propagate.

    drain      reading = in-flight work; the phase ends when it reaches 0
    propagate  reading = a traffic counter; the phase ends once it stopped moving

connections  the kernel's view of the service's TCP connections (sockdiag):
             drain counts connections with bytes moving or queued (an idle
             keep-alive connection from a load balancer is not in flight);
             propagate counts established connections never seen before
             (by socket cookie); a connection that opens and closes between
             two polls is missed, so keep the interval short or use an http
             probe on a request counter.  (The namespace-wide PassiveOpens
             counter is not used: kubelet probes and scrapes move it too.)
http         GET a URL: a number in the body (or a JSON field), or with
             value = "status", 0 when the status is ok and 1 otherwise.
exec         run a command: exit 0 reads 0, anything else 1.
tcp          connect: 0 when accepted, 1 when not (readiness gating).
haproxy      the server's row of HAProxy's `show stat`, from the load balancer
             itself: drain reads scur + qcur (requests HAProxy has in flight to
             this server, or queued for it), propagate reads stot (every
             session it ever sent here), so "quiet" means the LB stopped sending.

One module per kind, each offering what its kind can measure, any of:

    async def in_flight(probe, service) -> float     drain
    def traffic(probe) -> Callable[[], Awaitable[float]]   propagate (a counter; may keep state)
    async def ready(probe) -> bool                   a readiness gate (/ready, start-up)
    async def propagated(probe, service) -> bool     propagate ends when true (kubernetes)

and KINDS below names the module for each kind: a new kind is one new file
plus one line there.  A probe that fails to read raises ProbeError; the phases
treat a failed read as "not yet" and keep polling until their deadline.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import TYPE_CHECKING

from gracerun.config.kinds import Probe
from gracerun.errors import GracerunError

if TYPE_CHECKING:
    from gracerun.core.service import Service

# kind -> module in this package: RECORD (its config record) and the capabilities above.
# Importing one must stay cheap (no asyncio at the top): config loading reads RECORD and
# the capabilities before the service starts.
KINDS = {
    "connections": "connections",
    "http": "http",
    "exec": "exec",
    "tcp": "tcp",
    "haproxy": "haproxy",
    "kubernetes": "kubernetes",
}


class ProbeError(GracerunError):
    """The probe could not produce a reading."""


def _module(probe: Probe) -> ModuleType:
    try:
        name = KINDS[probe.kind]
    except KeyError:
        raise ProbeError(f"unknown probe type {probe.kind!r}") from None
    return importlib.import_module(f"{__name__}.{name}")


class InFlight:
    """Drain reading: how much work is still in flight."""

    def __init__(self, probe: Probe, service: Service) -> None:
        self.probe = probe
        self.service = service
        self._read = getattr(_module(probe), "in_flight", None)

    async def read(self) -> float:
        if self._read is None:
            raise ProbeError(f"probe type {self.probe.kind!r} cannot measure in-flight work")
        return float(await self._read(self.probe, self.service))


class TrafficCounter:
    """Propagate reading: a number that grows while new traffic still arrives."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        factory = getattr(_module(probe), "traffic", None)
        self._read: Callable[[], Awaitable[float]] | None = (
            factory(probe) if factory is not None else None)

    async def read(self) -> float:
        if self._read is None:
            raise ProbeError(f"probe type {self.probe.kind!r} cannot count new traffic")
        return float(await self._read())


def propagation(probe: Probe, service: Service) -> Callable[[], Awaitable[bool]] | None:
    """The kind's own "has the world noticed?" check, or None (then a traffic counter)."""
    check = getattr(_module(probe), "propagated", None)
    if check is None:
        return None
    return lambda: check(probe, service)


async def passes(probe: Probe) -> bool:
    """A readiness gate: does `probe` say the service is ready?  Never raises ProbeError."""
    check = getattr(_module(probe), "ready", None)
    if check is None:
        raise ProbeError(f"probe type {probe.kind!r} cannot gate readiness")
    try:
        return bool(await check(probe))
    except ProbeError:
        return False
