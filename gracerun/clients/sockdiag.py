"""TCP connections on the service's ports, as the kernel sees them (what ``ss -ti`` shows).

The drain phase waits until the service has no in-flight work and the propagate phase until
no new traffic arrives. Counting ESTABLISHED sockets cannot answer either question: a load
balancer keeps pooled keep-alive connections open for minutes, so the count never reaches
zero and drain would always run into its timeout. The kernel's socket diagnostics
(NETLINK_SOCK_DIAG with INET_DIAG_INFO, i.e. ``struct tcp_info``) say whether bytes are
still moving on each connection, without any change to the service.

The busy rule (:func:`is_busy`): a connection is busy when

1. ``rqueue > 0``: the peer sent bytes the service has not read yet; or
2. ``wqueue > 0``: the service wrote bytes the peer has not acknowledged yet; or
3. ``unacked > 0``: segments are in flight; or
4. the service owes a reply: the peer's last data is more recent than the service's
   (``last_data_recv_ms < last_data_sent_ms``, both ages); or, when both ages are equal
   (they tick in jiffies, 4 ms at HZ=250, so a fresh connection's request usually lands in
   the handshake's tick), the peer has sent bytes and the service none on this connection
   (``bytes_received > 0`` and ``bytes_acked == 0``); or
5. ``last_data_recv_ms < idle_ms`` or ``last_data_sent_ms < idle_ms``: data moved in
   either direction less than ``idle_ms`` milliseconds ago.

Otherwise it is idle. Rule 4 is what makes a request whose handler works for seconds
without a byte on the wire count as in flight (a slow query, an upload that stalls between
chunks, a request on a half-closed connection); rule 5 covers the moments around an
exchange. An idle keep-alive connection whose last word was the service's (its response)
is "not busy" once it has been quiet for ``idle_ms``. A tie is *not* busy when the service
has already sent on the connection: otherwise every keep-alive connection whose response
went out in the tick of its request would stay busy forever.

Limits of the rule, stated plainly:

* A stream where the service speaks last and then pauses (server-sent events, a long poll
  answered in parts, a download the service produces slowly) looks idle between its
  writes once ``idle_ms`` passes: set ``idle`` above the longest pause, or use an in-flight
  counter probe (the service's own metric or endpoint) instead of, or with, this one.
* HTTP/2 and gRPC multiplex many requests on one connection: after the service answers one
  stream, the connection reads as "service spoke last" even while other streams are still
  being processed. Use the service's own in-flight counter for those.
* Back-to-back reuse within one tick: a keep-alive client that sends its next request in
  the same jiffy as the previous response (bytes_acked > 0 already) reads as a tie and is
  not counted by rule 4, only by rule 5 for ``idle_ms``.
* Application-level keep-alives on a pooled connection (HTTP/2 PING, gRPC keepalive, health
  checks sent over the same connection) are data: a ping the service has not answered
  makes it busy, and any makes it busy for ``idle_ms``. Bare TCP keep-alive probes carry no
  data and do not.
* A peer's FIN counts as one byte in ``rqueue`` until the service reads end-of-file, and
  the service's own FIN as one byte in ``wqueue`` until it is acknowledged; a service that
  never reads a half-closed connection keeps it busy.
* SYN_RECV (handshake in progress) and TIME_WAIT entries carry no ``tcp_info`` and zero
  queues, so they are never busy. A new connection is evidence of traffic, not of work:
  the propagate phase should look at :func:`passive_opens` or new cookies instead.
* Only the caller's network namespace is visible (``/proc/net`` and netlink are both
  per-namespace); that is the container's, which is what gracerun runs in.

Cost: one query opens a netlink socket and makes one dump per address family, filtered in
the kernel by port, so unrelated sockets are never copied out or parsed. Each dump still
walks the kernel's whole established-socket hash table, which a container shares with its
host unless ``net.ipv4.tcp_child_ehash_entries`` is set: about 0.2 ms per walk for 262144
buckets. Parsing then costs about 5 us per matching socket. With 50 connections one call
measured 0.8 ms (median), so polling every 100 ms costs under 1% of a CPU.
:func:`tcp_sockets` blocks for that long, and for up to 2 s per family when the kernel
is slow to answer; on an event loop use :func:`tcp_sockets_async`, which reads the
netlink socket only when the loop says it is readable, so nothing else on the loop
(gracerun's signals, its budget timer) ever waits for a dump.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Iterable
from typing import Any

from gracerun.clients.inet_diag import (
    CONNECTED_STATES,
    MAX_BYTECODE_PORTS,
    NETLINK_SOCK_DIAG,
    RECV_BUFSIZE,
    TIMEOUT_S,
    Reply,
    SockDiagError,
    TcpSocket,
    TcpState,
    dump,
    port_filter,
    request,
)

__all__ = [
    "CONNECTED_STATES",
    "SockDiagError",
    "TcpSocket",
    "TcpState",
    "is_busy",
    "listening",
    "passive_opens",
    "tcp_sockets",
    "tcp_sockets_async",
]


def is_busy(sock: TcpSocket, idle_ms: int) -> bool:
    """Whether ``sock`` carries in-flight work, by the rule in the module docstring.

    ``idle_ms=0`` turns rule 5 off. Unknown (None) fields never make it busy.
    Meant for connections; on a listener it means "connections wait to be accepted".
    """
    if sock.rqueue > 0 or sock.wqueue > 0 or (sock.unacked or 0) > 0:
        return True
    if owes_reply(sock):
        return True
    return any(
        age is not None and age < idle_ms
        for age in (sock.last_data_recv_ms, sock.last_data_sent_ms)
    )


def owes_reply(sock: TcpSocket) -> bool:
    """Rule 4: the peer spoke last on this connection, so the service owes it a reply."""
    recv, sent = sock.last_data_recv_ms, sock.last_data_sent_ms
    if recv is None or sent is None:
        return False
    if recv < sent:
        return True
    if recv == sent:
        return (sock.bytes_received or 0) > 0 and sock.bytes_acked == 0
    return False


def tcp_sockets(
    ports: Collection[int], *, states: Collection[int] = CONNECTED_STATES
) -> list[TcpSocket]:
    """The IPv4 and IPv6 TCP sockets whose *local* port is in ``ports`` and state in ``states``.

    Ports must be in 1..65535 and states TcpState values (ValueError otherwise); empty
    ``ports`` or ``states`` return ``[]`` without asking the kernel. Raises
    :class:`SockDiagError` when socket diagnostics are unavailable or refused, or when a
    dump does not end within 2 s. Blocks while the kernel answers: on an event loop, use
    :func:`tcp_sockets_async`. Safe to call from any thread: each call has its own
    netlink socket.
    """
    query = _Query(ports, states)
    if query.empty:
        return []
    found: list[TcpSocket] = []
    with _open() as nl:
        nl.settimeout(TIMEOUT_S)
        for seq, family in enumerate(_FAMILIES, start=1):
            found += query.keep(dump(nl, seq, family, query.mask, query.bytecode))
    return found


async def tcp_sockets_async(
    ports: Collection[int],
    *,
    states: Collection[int] = CONNECTED_STATES,
    timeout: float = TIMEOUT_S,
) -> list[TcpSocket]:
    """:func:`tcp_sockets` for a coroutine: the loop keeps running while the kernel answers.

    The netlink socket is non-blocking and read only when the running loop says it is
    readable, so a dump the kernel is slow to answer (a huge socket table, a stuck
    namespace) cannot hold up anything else on the loop, such as gracerun's signal
    handling and its budget timer; the whole query (both families) has one deadline,
    ``timeout``, after which it raises :class:`SockDiagError`.
    """
    import asyncio

    query = _Query(ports, states)
    if query.empty:
        return []
    loop = asyncio.get_running_loop()
    found: list[TcpSocket] = []
    with _open() as nl:
        nl.setblocking(False)
        try:
            async with asyncio.timeout(timeout):
                for seq, family in enumerate(_FAMILIES, start=1):
                    reply = Reply(seq)
                    nl.send(request(seq, family, query.mask, query.bytecode))
                    while not reply.feed(*await _readable_recv(loop, nl)):
                        pass
                    found += query.keep(reply.sockets)
        except TimeoutError as e:
            raise SockDiagError(f"sock_diag did not answer within {timeout:g} s") from e
        except OSError as e:
            raise SockDiagError(f"sock_diag query failed: {e.strerror}", e.errno) from e
    return found


async def _readable_recv(loop: Any, nl: socket.socket) -> tuple[bytes, int]:
    """One datagram from the non-blocking ``nl``, waiting on the loop until there is one."""
    while True:
        try:
            data, _anc, flags, _addr = nl.recvmsg(RECV_BUFSIZE)
            return data, flags
        except BlockingIOError:
            pass
        ready = loop.create_future()
        loop.add_reader(nl.fileno(), _set_once, ready)
        try:
            await ready
        finally:
            loop.remove_reader(nl.fileno())


def _set_once(future: Any) -> None:
    if not future.done():
        future.set_result(None)


_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class _Query:
    """The validated arguments of one query: the kernel's state mask and port filter."""

    def __init__(self, ports: Collection[int], states: Collection[int]) -> None:
        self.ports = frozenset(ports)
        for port in self.ports:
            if not 0 < port < 65536:
                raise ValueError(f"port out of range: {port!r}")
        self.states = frozenset(int(s) for s in states)
        for state in self.states:
            if not 0 < state < 32:  # idiag_states is a 32-bit mask
                raise ValueError(f"not a TCP state: {state!r}")
        self.empty = not self.ports or not self.states
        self.mask = 0
        for state in self.states:
            self.mask |= 1 << state
        self.bytecode = (port_filter(sorted(self.ports))
                         if 0 < len(self.ports) <= MAX_BYTECODE_PORTS else b"")

    def keep(self, socks: Iterable[TcpSocket]) -> list[TcpSocket]:
        # The kernel filter already did this; checking again keeps the contract true
        # even on the no-bytecode path.
        return [s for s in socks if s.local[1] in self.ports and s.state in self.states]


def _open() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError as e:
        raise SockDiagError(f"netlink socket diagnostics unavailable: {e.strerror}", e.errno) from e


def listening(ports: Collection[int]) -> list[TcpSocket]:
    """The LISTEN sockets on ``ports``; ``rqueue`` is each one's accept-queue length."""
    return tcp_sockets(ports, states=(TcpState.LISTEN,))


def passive_opens(path: str = "/proc/net/snmp") -> int:
    """This network namespace's cumulative TCP PassiveOpens: connections accepted so far.

    A monotone counter, so two reads tell whether connections arrived in between, even
    ones that opened and closed between two polls. It counts every listener in the
    namespace, not only the service's ports: kubelet HTTP probes and gracerun's own
    endpoints count too.
    """
    try:
        with open(path, encoding="ascii") as f:
            lines = [line.split() for line in f if line.startswith("Tcp:")]
    except OSError as e:
        raise SockDiagError(f"cannot read {path}: {e.strerror}", e.errno) from e
    # Two "Tcp:" lines: the field names, then the values.
    if len(lines) == 2 and "PassiveOpens" in lines[0]:
        index = lines[0].index("PassiveOpens")
        if index < len(lines[1]) and lines[1][index].isdigit():
            return int(lines[1][index])
    raise SockDiagError(f"no TCP PassiveOpens counter in {path}")


