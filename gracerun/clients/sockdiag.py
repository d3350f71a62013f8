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

import enum
import errno
import os
import socket
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gracerun.errors import GracerunError

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


class SockDiagError(GracerunError):
    """Socket diagnostics are not available here (no netlink, no tcp_diag, or not allowed)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code  # the OS or netlink errno behind it, when there is one


class TcpState(enum.IntEnum):
    """TCP states as numbered by the kernel (include/net/tcp_states.h)."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12  # kernel-internal request socket; reported to us as SYN_RECV


#: States of a connection to the service that is opening, open, or still flushing bytes.
#: FIN_WAIT2 and TIME_WAIT are left out: the service has closed and its data is acknowledged.
CONNECTED_STATES: frozenset[int] = frozenset(
    {
        TcpState.ESTABLISHED,
        TcpState.SYN_RECV,
        TcpState.FIN_WAIT1,
        TcpState.CLOSE_WAIT,
        TcpState.LAST_ACK,
        TcpState.CLOSING,
    }
)


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One TCP socket. Queues are in bytes, times in milliseconds ago.

    For LISTEN sockets ``rqueue`` is the accept-queue length and ``wqueue`` the backlog
    limit; their ``tcp_info`` fields are None because the kernel reuses them for the
    backlog there. The ``tcp_info`` fields are also None for SYN_RECV and TIME_WAIT
    entries, and ``bytes_acked``/``bytes_received`` on kernels older than 4.1.
    IPv4 clients of a dual-stack IPv6 listener appear as AF_INET6 with ``::ffff:a.b.c.d``
    addresses.
    """

    family: int  # socket.AF_INET or socket.AF_INET6
    state: int  # a TcpState value
    state_name: str
    local: tuple[str, int]
    remote: tuple[str, int]
    rqueue: int
    wqueue: int
    inode: int
    uid: int
    cookie: int  # 64-bit, unique per socket while it lives: tells new connections from old
    last_data_sent_ms: int | None = None
    last_data_recv_ms: int | None = None
    last_ack_recv_ms: int | None = None
    unacked: int | None = None
    bytes_acked: int | None = None
    bytes_received: int | None = None


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


# --- netlink wire format (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h) -----------

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 0x01
_NLM_F_DUMP = 0x300
_NLMSG_NOOP, _NLMSG_ERROR, _NLMSG_DONE, _NLMSG_OVERRUN = 1, 2, 3, 4
_INET_DIAG_REQ_BYTECODE = 1
_INET_DIAG_INFO = 2
_INET_DIAG_BC_JMP, _INET_DIAG_BC_S_GE, _INET_DIAG_BC_S_LE = 1, 2, 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed 48-byte inet_diag_sockid.
_REQ_V2 = struct.Struct("=BBBxI48x")
# inet_diag_msg: family, state, timer, retrans; sockid (ports and addresses in network order,
# if and cookie in host order); expires, rqueue, wqueue, uid, inode.
_DIAG_MSG = struct.Struct("=BBxx2s2s16s16s4xII4xIIII")
_RTATTR = struct.Struct("=HH")
_NLMSGERR = struct.Struct("=i")
_BC_OP = struct.Struct("=BBH")  # code, yes, no

# Fields of struct tcp_info (linux/tcp.h). The struct has grown over the years and the kernel
# sends what it has, so each group is read only if the reply is long enough. Offsets:
# unacked 24, last_data_sent 44, last_data_recv 52, last_ack_recv 56 (all since 2.6);
# bytes_acked 120 and bytes_received 128 (since Linux 4.1).
_TI_TIMES = struct.Struct("=24xI16xI4xII")
_TI_BYTES = struct.Struct("=120xQQ")
_NO_TIMES: tuple[None, ...] = (None,) * 4
_NO_BYTES: tuple[None, ...] = (None,) * 2
_STATE_NAMES = {s.value: s.name for s in TcpState}

# Bounds, so a misbehaving kernel or a namespace with a huge socket table cannot make one
# probe call spin or eat memory. Far beyond what one service's ports produce.
_RECV_BUFSIZE = 65536  # the kernel fills dump datagrams up to 32 KiB
_MAX_DATAGRAMS = 4096
_MAX_REPLY_BYTES = 64 * 1024 * 1024
_TIMEOUT_S = 2.0
# The kernel filter takes 20 bytes and up to two comparisons per port for every socket, and
# its jump offsets are 16-bit (at most 3276 ports); past this many ports filter in Python.
_MAX_BYTECODE_PORTS = 1024


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
        nl.settimeout(_TIMEOUT_S)
        for seq, family in enumerate(_FAMILIES, start=1):
            found += query.keep(_dump(nl, seq, family, query.mask, query.bytecode))
    return found


async def tcp_sockets_async(
    ports: Collection[int],
    *,
    states: Collection[int] = CONNECTED_STATES,
    timeout: float = _TIMEOUT_S,
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
                    reply = _Reply(seq)
                    nl.send(_request(seq, family, query.mask, query.bytecode))
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
            data, _anc, flags, _addr = nl.recvmsg(_RECV_BUFSIZE)
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
        self.bytecode = (_port_filter(sorted(self.ports))
                         if 0 < len(self.ports) <= _MAX_BYTECODE_PORTS else b"")

    def keep(self, socks: Iterable[TcpSocket]) -> list[TcpSocket]:
        # The kernel filter already did this; checking again keeps the contract true
        # even on the no-bytecode path.
        return [s for s in socks if s.local[1] in self.ports and s.state in self.states]


def _open() -> socket.socket:
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
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


def _port_filter(ports: list[int]) -> bytes:
    """inet_diag bytecode accepting a socket whose local port is any of ``ports``.

    Each port is ``sport >= p && sport <= p`` (old kernels lack the S_EQ op), followed
    by a JMP to "accept" for all but the last port. A failed test jumps to the next port's
    block; after the last one to "reject" (4 bytes past the end). The kernel's audit
    requires every jump target to lie on the chain of "yes" steps, hence the JMP op, whose
    "yes" step is never taken at run time but links the blocks for the audit.
    """
    block = 20  # GE op + port, LE op + port, JMP op
    total = block * (len(ports) - 1) + 16
    out = bytearray()
    for i, port in enumerate(ports):
        start = i * block
        last = i == len(ports) - 1
        to_next = block if not last else total - start + 4  # next block, or reject
        out += _BC_OP.pack(_INET_DIAG_BC_S_GE, 8, to_next)
        out += _BC_OP.pack(0, 0, port)
        out += _BC_OP.pack(_INET_DIAG_BC_S_LE, 8, to_next - 8)
        out += _BC_OP.pack(0, 0, port)
        if not last:
            out += _BC_OP.pack(_INET_DIAG_BC_JMP, 4, total - (start + 16))  # to accept
    return bytes(out)


def _request(seq: int, family: int, mask: int, bytecode: bytes) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request."""
    payload = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1), mask)
    if bytecode:
        payload += _RTATTR.pack(_RTATTR.size + len(bytecode), _INET_DIAG_REQ_BYTECODE) + bytecode
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(payload), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0
    )
    return header + payload


class _Reply:
    """The datagrams of one dump, parsed as they come (from a blocking or a loop read)."""

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.sockets: list[TcpSocket] = []
        self._bytes = 0
        self._datagrams = 0

    def feed(self, data: bytes, flags: int) -> bool:
        """Parse one datagram; True once the dump is complete.  Raises SockDiagError."""
        if flags & socket.MSG_TRUNC:
            raise SockDiagError("sock_diag reply truncated")
        self._bytes += len(data)
        self._datagrams += 1
        if self._bytes > _MAX_REPLY_BYTES:
            raise SockDiagError("sock_diag reply too large")
        if self._datagrams > _MAX_DATAGRAMS:
            raise SockDiagError(f"sock_diag reply exceeded {_MAX_DATAGRAMS} datagrams")
        done = False
        for msg_type, msg_seq, body in _messages(data):
            if msg_seq != self.seq or msg_type == _NLMSG_NOOP:
                continue  # not an answer to this request
            if msg_type == _NLMSG_DONE:
                done = True
            elif msg_type == _NLMSG_ERROR:
                _raise_nlmsgerr(body)
            elif msg_type == _NLMSG_OVERRUN:
                raise SockDiagError("sock_diag reply overrun")
            elif msg_type == _SOCK_DIAG_BY_FAMILY:
                parsed = _parse(body)
                if parsed is not None:
                    self.sockets.append(parsed)
        return done


def _dump(
    nl: socket.socket, seq: int, family: int, mask: int, bytecode: bytes
) -> list[TcpSocket]:
    """Send one dump request on the blocking ``nl`` and return the parsed replies."""
    reply = _Reply(seq)
    # EINTR needs no loop here: Python retries interrupted send/recv itself (PEP 475).
    try:
        nl.send(_request(seq, family, mask, bytecode))
        while True:
            data, _anc, flags, _addr = nl.recvmsg(_RECV_BUFSIZE)
            if reply.feed(data, flags):
                return reply.sockets
    except TimeoutError as e:
        raise SockDiagError(f"sock_diag did not answer within {_TIMEOUT_S:g} s") from e
    except OSError as e:
        raise SockDiagError(f"sock_diag query failed: {e.strerror}", e.errno) from e


def _messages(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """The (type, seq, body) of each netlink message in one datagram; raises on garbage."""
    view = memoryview(data)
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise SockDiagError("malformed sock_diag reply")
        yield msg_type, seq, view[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3  # NLMSG_ALIGN


def _raise_nlmsgerr(body: memoryview) -> None:
    code = -_NLMSGERR.unpack_from(body)[0] if len(body) >= _NLMSGERR.size else errno.EIO
    if code == 0:
        return  # an ACK, not an error
    reason = os.strerror(code)
    if code in (errno.EPERM, errno.EACCES):
        raise SockDiagError(f"sock_diag permission denied: {reason}", code)
    if code == errno.ENOENT:
        raise SockDiagError("sock_diag: kernel has no tcp_diag support (module not loaded)", code)
    raise SockDiagError(f"sock_diag error: {reason}", code)


def _parse(body: memoryview) -> TcpSocket | None:
    """One inet_diag_msg plus its attributes; None if too short to be one."""
    if len(body) < _DIAG_MSG.size:
        return None
    (family, state, sport, dport, src, dst, cookie_lo, cookie_hi, rqueue, wqueue, uid, inode) = (
        _DIAG_MSG.unpack_from(body)
    )
    addr_len = 4 if family == socket.AF_INET else 16
    info: memoryview | None = None
    offset = _DIAG_MSG.size
    while offset + _RTATTR.size <= len(body):
        rta_len, rta_type = _RTATTR.unpack_from(body, offset)
        if rta_len < _RTATTR.size or offset + rta_len > len(body):
            break
        if rta_type == _INET_DIAG_INFO:
            info = body[offset + _RTATTR.size : offset + rta_len]
        offset += (rta_len + 3) & ~3  # RTA_ALIGN
    times: tuple[int | None, ...] = _NO_TIMES
    counts: tuple[int | None, ...] = _NO_BYTES
    # Listeners are skipped: the kernel reuses unacked/sacked for their backlog there.
    if info is not None and state != TcpState.LISTEN:
        if len(info) >= _TI_TIMES.size:
            times = _TI_TIMES.unpack_from(info)
        if len(info) >= _TI_BYTES.size:
            counts = _TI_BYTES.unpack_from(info)
    unacked, last_data_sent, last_data_recv, last_ack_recv = times
    bytes_acked, bytes_received = counts
    return TcpSocket(
        family=family,
        state=state,
        state_name=_STATE_NAMES.get(state) or f"STATE_{state}",
        local=(socket.inet_ntop(family, src[:addr_len]), int.from_bytes(sport, "big")),
        remote=(socket.inet_ntop(family, dst[:addr_len]), int.from_bytes(dport, "big")),
        rqueue=rqueue,
        wqueue=wqueue,
        inode=inode,
        uid=uid,
        cookie=cookie_lo | cookie_hi << 32,
        last_data_sent_ms=last_data_sent,
        last_data_recv_ms=last_data_recv,
        last_ack_recv_ms=last_ack_recv,
        unacked=unacked,
        bytes_acked=bytes_acked,
        bytes_received=bytes_received,
    )
