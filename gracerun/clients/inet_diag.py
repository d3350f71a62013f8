"""The netlink inet_diag wire format for sockdiag.py: the socket types, the request, the
reply's parsing (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h, linux/tcp.h).

sockdiag.py holds the busy rule and the queries; this module holds what the kernel's
structs look like, so neither file is a thousand lines of two concerns.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from gracerun.errors import GracerunError


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


# --- netlink wire format (linux/netlink.h, linux/sock_diag.h, linux/inet_diag.h) -----------

NETLINK_SOCK_DIAG = 4
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
RECV_BUFSIZE = 65536  # the kernel fills dump datagrams up to 32 KiB
_MAX_DATAGRAMS = 4096
_MAX_REPLY_BYTES = 64 * 1024 * 1024
TIMEOUT_S = 2.0
# The kernel filter takes 20 bytes and up to two comparisons per port for every socket, and
# its jump offsets are 16-bit (at most 3276 ports); past this many ports filter in Python.
MAX_BYTECODE_PORTS = 1024


def port_filter(ports: list[int]) -> bytes:
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


def request(seq: int, family: int, mask: int, bytecode: bytes) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request."""
    payload = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (_INET_DIAG_INFO - 1), mask)
    if bytecode:
        payload += _RTATTR.pack(_RTATTR.size + len(bytecode), _INET_DIAG_REQ_BYTECODE) + bytecode
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(payload), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, seq, 0
    )
    return header + payload


class Reply:
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


def dump(
    nl: socket.socket, seq: int, family: int, mask: int, bytecode: bytes
) -> list[TcpSocket]:
    """Send one dump request on the blocking ``nl`` and return the parsed replies."""
    reply = Reply(seq)
    # EINTR needs no loop here: Python retries interrupted send/recv itself (PEP 475).
    try:
        nl.send(request(seq, family, mask, bytecode))
        while True:
            data, _anc, flags, _addr = nl.recvmsg(RECV_BUFSIZE)
            if reply.feed(data, flags):
                return reply.sockets
    except TimeoutError as e:
        raise SockDiagError(f"sock_diag did not answer within {TIMEOUT_S:g} s") from e
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
