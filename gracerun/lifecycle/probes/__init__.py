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

A probe that fails to read raises ProbeError; the phases treat a failed read
as "not yet" and keep polling until their deadline.
"""

from __future__ import annotations

import asyncio
import json
import re

from gracerun.clients import haproxy, sockdiag
from gracerun.clients import http as httpclient
from gracerun.config.plan import (
    ConnectionsProbe,
    ExecProbe,
    HaproxyProbe,
    HttpProbe,
    Probe,
    TcpProbe,
)
from gracerun.core.supervisor import Supervisor
from gracerun.errors import GracerunError
from gracerun.observe import redact

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")


class ProbeError(GracerunError):
    """The probe could not produce a reading."""


class InFlight:
    """Drain reading: how much work is still in flight."""

    def __init__(self, probe: Probe, sup: Supervisor) -> None:
        self.probe = probe
        self.sup = sup

    async def read(self) -> float:
        probe = self.probe
        if isinstance(probe, ConnectionsProbe):
            socks = await _tcp_sockets(probe.ports)
            idle_ms = int(probe.idle * 1000)
            return float(sum(1 for s in socks if sockdiag.is_busy(s, idle_ms)))
        if isinstance(probe, HttpProbe):
            return await read_http(probe)
        if isinstance(probe, ExecProbe):
            return await read_exec(probe, self.sup)
        if isinstance(probe, TcpProbe):
            return await read_tcp(probe)
        if isinstance(probe, HaproxyProbe):
            stats = await read_haproxy(probe)
            return float(stats.scur + stats.qcur)
        raise ProbeError(f"probe type {probe.kind!r} cannot measure in-flight work")


class TrafficCounter:
    """Propagate reading: a number that grows while new traffic still arrives."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._seen: set[int] = set()
        self._new = 0

    async def read(self) -> float:
        probe = self.probe
        if isinstance(probe, ConnectionsProbe):
            socks = await _tcp_sockets(probe.ports, (sockdiag.TcpState.ESTABLISHED,))
            fresh = {s.cookie for s in socks} - self._seen
            self._seen |= fresh
            self._new += len(fresh)
            return float(self._new)
        if isinstance(probe, HttpProbe):
            return await read_http(probe)
        if isinstance(probe, HaproxyProbe):
            return float((await read_haproxy(probe)).stot)
        raise ProbeError(f"probe type {probe.kind!r} cannot count new traffic")


async def _tcp_sockets(ports: tuple[int, ...], states: tuple[int, ...] = ()
                       ) -> list[sockdiag.TcpSocket]:
    try:
        # Two netlink dumps (IPv4, IPv6): about 0.7 ms, cheap enough to run inline.
        if states:
            return sockdiag.tcp_sockets(ports, states=states)
        return sockdiag.tcp_sockets(ports)
    except sockdiag.SockDiagError as exc:
        raise ProbeError(str(exc)) from None


async def read_http(probe: HttpProbe) -> float:
    try:
        resp = await httpclient.request("GET", probe.url, timeout=probe.timeout)
    except httpclient.HttpError as exc:
        raise ProbeError(str(exc)) from None
    if probe.value == "status":
        return 0.0 if resp.status in probe.ok_status else 1.0
    if resp.status not in probe.ok_status:
        raise ProbeError(f"GET {redact.url(probe.url)}: status {resp.status}")
    if probe.field:
        try:
            value = json.loads(resp.body)[probe.field]
            return float(value)
        except (ValueError, KeyError, TypeError, OverflowError):
            raise ProbeError(f"GET {redact.url(probe.url)}: no number in JSON field "
                             f"{probe.field!r}") from None
    m = _NUMBER.search(resp.body[:4096])
    if m is None:
        raise ProbeError(f"GET {redact.url(probe.url)}: expected a number in the body")
    try:
        return float(m.group())
    except OverflowError:
        raise ProbeError(f"GET {redact.url(probe.url)}: number out of range") from None


async def read_exec(probe: ExecProbe, sup: Supervisor) -> float:
    from gracerun.config.plan import ExecHook
    from gracerun.lifecycle.hooks import HookFailed
    from gracerun.lifecycle.hooks.exec import run

    hook = ExecHook(name="probe", command=probe.command, timeout=probe.timeout)
    try:
        await asyncio.wait_for(run(hook, sup), probe.timeout)
    except HookFailed:
        return 1.0
    except TimeoutError:
        raise ProbeError(f"{probe.command[0]}: no answer within {probe.timeout:g}s") from None
    except GracerunError as exc:
        raise ProbeError(str(exc)) from None
    return 0.0


async def read_haproxy(probe: HaproxyProbe) -> haproxy.ServerStats:
    try:
        return await haproxy.server_stats(probe.target, probe.backend, probe.server,
                                          probe.timeout)
    except haproxy.HaproxyError as exc:
        raise ProbeError(str(exc)) from None


async def read_tcp(probe: TcpProbe) -> float:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(probe.host, probe.port),
                                           probe.timeout)
    except (OSError, TimeoutError):
        return 1.0
    writer.close()
    return 0.0
