"""The connections probe's netlink dump never holds up the event loop.

`tcp_sockets` blocks until the kernel answers, up to 2 s per address family:
called on gracerun's loop, a stuck dump delayed the second-signal handling and
the budget timer.  `tcp_sockets_async` reads the netlink socket only when the
loop says it is readable, under one deadline.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from gracerun.clients import sockdiag
from gracerun.clients.sockdiag import SockDiagError, TcpState
from gracerun.core.loop import new_loop

pytestmark = pytest.mark.timeout(30)

LOOPS = ["uvloop", "asyncio"]


def run(loop_kind: str, coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = new_loop(True, loop_kind)
    try:
        return loop.run_until_complete(coro())
    finally:
        loop.close()


@pytest.fixture
def silent_kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """sockdiag's netlink socket replaced by a datagram socket nobody answers on."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    monkeypatch.setattr(sockdiag, "_open", lambda: ours)
    yield
    theirs.close()
    ours.close()


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_async_query_sees_what_the_blocking_one_sees(loop_kind: str) -> None:
    """Steps: a loopback listener with one accepted connection; both queries list
    the same LISTEN and ESTABLISHED sockets on its port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                states = (TcpState.LISTEN, TcpState.ESTABLISHED)
                blocking = sockdiag.tcp_sockets([port], states=states)

                async def query() -> list[sockdiag.TcpSocket]:
                    return await sockdiag.tcp_sockets_async([port], states=states)

                found = run(loop_kind, query)
                assert client.getsockname()[1] in {s.remote[1] for s in found}
    def key(s: sockdiag.TcpSocket) -> tuple[int, tuple[str, int], tuple[str, int]]:
        return s.state, s.local, s.remote

    assert sorted(map(key, found)) == sorted(map(key, blocking))
    assert {s.state for s in found} == {TcpState.LISTEN, TcpState.ESTABLISHED}


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_stuck_dump_does_not_block_the_loop(loop_kind: str, silent_kernel: None) -> None:
    """Steps: the kernel never answers; while the query waits, a timer set for
    50 ms (the stand-in for gracerun's budget timer) fires within 150 ms, and
    the query ends at its deadline with a SockDiagError."""
    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        fired = loop.create_future()
        loop.call_later(0.05, lambda: fired.set_result(time.monotonic() - t0))
        query = asyncio.ensure_future(sockdiag.tcp_sockets_async([80], timeout=0.5))
        timer_at = await fired
        with pytest.raises(SockDiagError, match=r"did not answer within 0\.5 s"):
            await query
        return timer_at, time.monotonic() - t0

    timer_at, ended_at = run(loop_kind, scenario)
    assert timer_at < 0.15, f"the timer fired {timer_at:.3f}s after being set for 0.05s"
    assert 0.45 < ended_at < 2.0


@pytest.mark.parametrize("loop_kind", ["asyncio"])
def test_negative_control_the_blocking_query_holds_the_loop(
        loop_kind: str, silent_kernel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same stuck dump through the blocking call (with a 0.3 s timeout):
    the 50 ms timer waits until the call gives up, so the test above can fail."""
    monkeypatch.setattr(sockdiag, "TIMEOUT_S", 0.3)

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        fired = loop.create_future()
        loop.call_later(0.05, lambda: fired.set_result(time.monotonic() - t0))
        await asyncio.sleep(0)
        with pytest.raises(SockDiagError):
            sockdiag.tcp_sockets([80])
        return float(await fired)

    assert run(loop_kind, scenario) >= 0.3
