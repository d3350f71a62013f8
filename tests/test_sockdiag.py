"""Socket diagnostics against real loopback sockets in the test process."""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gracerun.clients import inet_diag, sockdiag
from gracerun.clients.sockdiag import (
    SockDiagError,
    TcpSocket,
    TcpState,
    is_busy,
    listening,
    passive_opens,
    tcp_sockets,
)

pytestmark = pytest.mark.timeout(30)

T = TypeVar("T")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


FAMILIES = [
    pytest.param(socket.AF_INET, id="ipv4"),
    pytest.param(
        socket.AF_INET6,
        id="ipv6",
        marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback"),
    ),
]
LOOPBACK: dict[int, str] = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = 5.0) -> T:
    """Poll ``probe`` until it returns something other than None, against a monotonic deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Net:
    """Loopback listeners and connections; every socket is closed at teardown."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def _keep(self, s: socket.socket) -> socket.socket:
        self.sockets.append(s)
        return s

    def listener(self, family: int, backlog: int = 16) -> tuple[socket.socket, int]:
        s = self._keep(socket.socket(family, socket.SOCK_STREAM))
        s.bind((LOOPBACK[family], 0))
        s.listen(backlog)
        return s, s.getsockname()[1]

    def connect(self, family: int, port: int) -> socket.socket:
        return self._keep(socket.create_connection((LOOPBACK[family], port), timeout=5))

    def pair(self, family: int, listener: socket.socket) -> tuple[socket.socket, socket.socket]:
        """A connected (client, server side) pair through ``listener``."""
        client = self.connect(family, listener.getsockname()[1])
        server, _ = listener.accept()
        return client, self._keep(server)

    def close(self) -> None:
        for s in self.sockets:
            s.close()


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.close()


def server_side(
    port: int, client: socket.socket, where: Callable[[TcpSocket], bool] = lambda s: True
) -> TcpSocket | None:
    """The diag entry of the service's end of ``client``'s connection, if it satisfies ``where``."""
    peer = client.getsockname()[:2]
    for s in tcp_sockets([port]):
        if s.remote == peer and where(s):
            return s
    return None


@pytest.mark.parametrize("family", FAMILIES)
def test_unread_bytes_make_a_connection_busy(net: Net, family: int) -> None:
    """Bytes in the server's receive queue are in-flight work, however old they are.

    1. Connect and send 100 bytes that the server does not read.
    2. The server side shows rqueue == 100 and is busy even with idle_ms=0.
    3. Once the server reads them it still owes a reply (the peer spoke last): busy.
    4. Negative control: once it has answered, it is not busy at idle_ms=0.
    """
    listener, port = net.listener(family)
    client, server = net.pair(family, listener)
    client.sendall(b"x" * 100)

    sock = wait_for(lambda: server_side(port, client, lambda s: s.rqueue == 100), "rqueue 100")
    assert sock.family == family
    assert sock.state == TcpState.ESTABLISHED and sock.state_name == "ESTABLISHED"
    assert sock.local == (LOOPBACK[family], port)
    assert sock.bytes_received == 100
    assert sock.inode > 0 and sock.cookie > 0
    assert is_busy(sock, idle_ms=0)

    assert server.recv(100, socket.MSG_WAITALL) == b"x" * 100
    read = wait_for(lambda: server_side(port, client, lambda s: s.rqueue == 0), "queue read")
    assert is_busy(read, 0)
    server.sendall(b"y")
    assert client.recv(1) == b"y"
    wait_for(lambda: server_side(port, client, lambda s: not is_busy(s, 0)), "answered")


@pytest.mark.parametrize("family", FAMILIES)
def test_idle_keepalive_connection_becomes_not_busy(net: Net, family: int) -> None:
    """A pooled connection that served a request is busy for idle_ms, then idle.

    1. Request/response on one connection, which then stays open (keep-alive).
    2. Right after the exchange it is busy (data moved less than idle_ms ago).
    3. Polling, it becomes not busy, no earlier than idle_ms after the exchange.
    """
    idle_ms = 300
    listener, port = net.listener(family)
    client, server = net.pair(family, listener)
    request, response = b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"
    client.sendall(request)
    server.recv(100)
    server.sendall(response)
    client.recv(100)
    exchanged = time.monotonic()

    first = server_side(port, client)
    assert first is not None
    # Kernel ages have jiffy resolution; allow one jiffy (at most 10 ms) of rounding.
    if (time.monotonic() - exchanged) * 1000 + 10 < idle_ms:
        assert is_busy(first, idle_ms)

    idle = wait_for(lambda: server_side(port, client, lambda s: not is_busy(s, idle_ms)), "idle")
    assert (time.monotonic() - exchanged) * 1000 >= idle_ms - 10
    assert idle.rqueue == idle.wqueue == idle.unacked == 0
    assert idle.last_data_recv_ms is not None and idle.last_data_recv_ms >= idle_ms
    assert idle.last_data_sent_ms is not None and idle.last_data_sent_ms >= idle_ms
    assert idle.bytes_acked == len(response) and idle.bytes_received == len(request)


def test_tcp_keepalive_probes_do_not_make_a_connection_busy(net: Net) -> None:
    """A load balancer's TCP keep-alive probes are not data: the pool connection stays idle.

    1. The client (the load balancer) enables keep-alive probes after 1 s idle, every 1 s.
    2. Wait until the client has had a probe answered (its last ACK is newer than its last
       data): the negative control that probes really flow.
    3. The server side is not busy at idle_ms=500, though packets keep arriving.
    """
    listener, port = net.listener(socket.AF_INET)
    client, _ = net.pair(socket.AF_INET, listener)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    client_port = client.getsockname()[1]

    def probe_answered() -> TcpSocket | None:
        for s in tcp_sockets([client_port]):
            if (s.last_ack_recv_ms or 0) + 100 < (s.last_data_recv_ms or 0):
                return s
        return None

    wait_for(probe_answered, "an answered keep-alive probe")
    server = server_side(port, client)
    assert server is not None
    assert not is_busy(server, idle_ms=500)


@pytest.mark.parametrize("family", FAMILIES)
def test_listening_reports_accept_queue(net: Net, family: int) -> None:
    """LISTEN sockets are found, with the not-yet-accepted connections as rqueue.

    1. Three clients connect; the listener accepts none.
    2. listening() shows the listener with rqueue == 3 and its backlog as wqueue.
    3. The default states of tcp_sockets() leave the listener out.
    """
    _, port = net.listener(family, backlog=8)
    for _ in range(3):
        net.connect(family, port)

    def three_queued() -> list[TcpSocket] | None:
        found = listening([port])
        return found if [s.rqueue for s in found] == [3] else None

    [sock] = wait_for(three_queued, "3 connections in the accept queue")
    assert sock.state == TcpState.LISTEN and sock.state_name == "LISTEN"
    assert sock.local == (LOOPBACK[family], port)
    assert sock.wqueue == 8
    assert sock.unacked is None  # the kernel reuses it for the backlog on listeners
    assert all(s.state != TcpState.LISTEN for s in tcp_sockets([port]))


def test_ports_filter_excludes_other_ports(net: Net) -> None:
    """Only sockets whose local port is asked for come back, by either filter path.

    1. Two listeners A and B with one connection each.
    2. tcp_sockets([A]) has A's server side only: not B's, not the clients' ephemeral ports.
    3. With more ports than the kernel filter takes, the Python filter gives the same.
    4. Negative control: the kernel-side filter alone already excludes the clients.
    """
    la, port_a = net.listener(socket.AF_INET)
    lb, port_b = net.listener(socket.AF_INET)
    client_a, _ = net.pair(socket.AF_INET, la)
    client_b, _ = net.pair(socket.AF_INET, lb)

    only_a = tcp_sockets([port_a])
    assert [s.remote for s in only_a] == [client_a.getsockname()]
    assert [s.remote for s in tcp_sockets([port_b])] == [client_b.getsockname()]
    both = tcp_sockets([port_a, port_b])
    assert {s.local[1] for s in both} == {port_a, port_b}

    many = [port_a, *(p for p in range(1, 1 + inet_diag.MAX_BYTECODE_PORTS + 10) if p != port_b)]
    assert [s.cookie for s in tcp_sockets(many) if s.local[1] == port_a] == [only_a[0].cookie]
    assert port_b not in {s.local[1] for s in tcp_sockets(many)}

    all_states = sum(1 << s for s in TcpState)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, inet_diag.NETLINK_SOCK_DIAG) as nl:
        raw = list(
            inet_diag.dump(nl, 1, socket.AF_INET, all_states, inet_diag.port_filter([port_a]))
        )
    assert {s.local[1] for s in raw} == {port_a}
    assert {s.state for s in raw} == {TcpState.LISTEN, TcpState.ESTABLISHED}


def test_passive_opens_counts_accepted_connections(net: Net) -> None:
    """PassiveOpens grows by at least the connections accepted, even once they are closed."""
    listener, _ = net.listener(socket.AF_INET)
    before = passive_opens()
    for _ in range(3):
        client, server = net.pair(socket.AF_INET, listener)
        client.close()
        server.close()
    wait_for(lambda: True if passive_opens() >= before + 3 else None, "PassiveOpens + 3")


def test_passive_opens_errors(tmp_path: Path) -> None:
    with pytest.raises(SockDiagError, match="cannot read"):
        passive_opens(str(tmp_path / "missing"))
    garbled = tmp_path / "snmp"
    garbled.write_text("Tcp: RtoAlgorithm ActiveOpens\nTcp: 1 2\n")
    with pytest.raises(SockDiagError, match="no TCP PassiveOpens"):
        passive_opens(str(garbled))


def test_kernel_error_becomes_sockdiag_error() -> None:
    """An NLMSG_ERROR reply (here: an address family the kernel rejects) is a SockDiagError."""
    with (
        socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, inet_diag.NETLINK_SOCK_DIAG) as nl,
        pytest.raises(SockDiagError) as caught,
    ):
        list(inet_diag.dump(nl, 1, 255, 1 << TcpState.ESTABLISHED, b""))
    assert caught.value.errno == errno.EINVAL


def test_no_netlink_is_sockdiag_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(sockdiag.socket, "socket", refuse)
    with pytest.raises(SockDiagError, match="unavailable: Permission denied"):
        tcp_sockets([80])


def test_arguments() -> None:
    assert tcp_sockets([]) == []
    assert tcp_sockets([80], states=()) == []
    for bad in (0, 65536, -1):
        with pytest.raises(ValueError, match="port out of range"):
            tcp_sockets([bad])
    with pytest.raises(ValueError, match="not a TCP state"):
        tcp_sockets([80], states=[32])


def _conn(**fields: int | None) -> TcpSocket:
    base: dict[str, int | None] = dict(
        rqueue=0, wqueue=0, unacked=0, last_data_recv_ms=10_000, last_data_sent_ms=10_000
    )
    base.update(fields)
    return TcpSocket(
        family=socket.AF_INET,
        state=TcpState.ESTABLISHED,
        state_name="ESTABLISHED",
        local=("127.0.0.1", 80),
        remote=("127.0.0.1", 40000),
        inode=1,
        uid=0,
        cookie=1,
        **base,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("fields", "idle_ms", "busy"),
    [
        ({}, 1000, False),
        ({"rqueue": 1}, 0, True),
        ({"wqueue": 1}, 0, True),
        ({"unacked": 1}, 0, True),
        ({"last_data_recv_ms": 999}, 1000, True),
        ({"last_data_sent_ms": 999}, 1000, True),
        # exactly idle_ms ago is idle (the service answered after the request)
        ({"last_data_recv_ms": 1000, "last_data_sent_ms": 1000}, 1000, False),
        ({"last_data_recv_ms": 0, "last_data_sent_ms": 0}, 0, False),
        # rule 4: the peer spoke last, the service owes a reply, however long ago
        ({"last_data_recv_ms": 5000, "last_data_sent_ms": 9000}, 1000, True),
        ({"last_data_recv_ms": 9000, "last_data_sent_ms": 5000}, 1000, False),
        # a tie: busy only when the peer sent bytes and the service none (a fresh request)
        ({"last_data_recv_ms": 5000, "last_data_sent_ms": 5000, "bytes_received": 80,
          "bytes_acked": 0}, 1000, True),
        ({"last_data_recv_ms": 5000, "last_data_sent_ms": 5000, "bytes_received": 80,
          "bytes_acked": 120}, 1000, False),
        ({"last_data_recv_ms": 5000, "last_data_sent_ms": 5000, "bytes_received": 0,
          "bytes_acked": 0}, 1000, False),
        ({"last_data_recv_ms": 5000, "last_data_sent_ms": 5000, "bytes_received": None,
          "bytes_acked": None}, 1000, False),
        ({"unacked": None, "last_data_recv_ms": None, "last_data_sent_ms": None}, 1000, False),
    ],
)
def test_is_busy_rule(fields: dict[str, int | None], idle_ms: int, busy: bool) -> None:
    assert is_busy(_conn(**fields), idle_ms) is busy


_age = st.one_of(st.none(), st.integers(0, 2**32 - 1))


@given(
    rqueue=st.integers(0, 10),
    wqueue=st.integers(0, 10),
    unacked=st.one_of(st.none(), st.integers(0, 10)),
    recv=_age,
    sent=_age,
    idle_ms=st.integers(0, 10**6),
    more=st.integers(0, 10**6),
)
def test_is_busy_is_monotone_in_idle_ms(
    rqueue: int,
    wqueue: int,
    unacked: int | None,
    recv: int | None,
    sent: int | None,
    idle_ms: int,
    more: int,
) -> None:
    """A longer idle threshold never turns a busy connection idle; queues always win."""
    sock = _conn(
        rqueue=rqueue,
        wqueue=wqueue,
        unacked=unacked,
        last_data_recv_ms=recv,
        last_data_sent_ms=sent,
    )
    if is_busy(sock, idle_ms):
        assert is_busy(sock, idle_ms + more)
    if rqueue or wqueue or unacked:
        assert is_busy(sock, 0)
