"""The event loop gracerun runs on, and why there are two of them.

Why not always asyncio: a PID-1 wrapper is on the start-up path of every
container, and on the machines we measure `import asyncio` alone costs about
40 ms (it pulls in ssl, logging, concurrent.futures, ...), more than our whole
start-up target.  The core duties (forward signals, reap, enforce the budget)
need nothing but "call me when this fd is readable" and "call me at time T",
so they are written against that small subset of the asyncio loop API:

    add_reader, remove_reader, call_soon, call_later, time, run_forever, stop

`MiniLoop` implements exactly that subset on `selectors`.  When the
configuration asks for anything that needs real asyncio (pre-stop hooks and
probes, the HTTP endpoint, Pushgateway), `new_loop()` returns an asyncio loop
instead (the standard one, or uvloop's: process.event_loop), and the same core
code runs on it unchanged.

Nothing here wakes up periodically: with no timer armed, `run_forever` blocks
in epoll until a signal or an fd arrives.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class _Timer:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class MiniLoop:
    """A selectors-based loop with the subset of the asyncio API listed above."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._ready: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._stopping = False

    def time(self) -> float:
        return time.monotonic()

    def add_reader(self, fd: int, callback: Callable[..., Any], *args: Any) -> None:
        self._selector.register(fd, selectors.EVENT_READ, (callback, args))

    def remove_reader(self, fd: int) -> bool:
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            return False
        return True

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self._ready.append((callback, args))

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Timer:
        timer = _Timer(self.time() + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def stop(self) -> None:
        self._stopping = True

    def run_forever(self) -> None:
        self._stopping = False
        while not self._stopping:
            self._run_once()

    def close(self) -> None:
        self._selector.close()

    def _run_once(self) -> None:
        timeout: float | None
        if self._ready:
            timeout = 0.0
        elif self._timers:
            timeout = max(0.0, self._timers[0][0] - self.time())
        else:
            timeout = None  # block until an fd (or a signal's wakeup byte) arrives
        for key, _ in self._selector.select(timeout):
            callback, args = key.data
            self._ready.append((callback, args))
        now = self.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._ready.append((timer.callback, timer.args))
        # Run only what is ready now; callbacks queued meanwhile wait one turn,
        # so a callback that re-queues itself cannot starve the selector.
        for _ in range(len(self._ready)):
            if self._stopping:
                break
            callback, args = self._ready.popleft()
            callback(*args)


def new_loop(need_asyncio: bool, kind: str = "asyncio") -> Any:
    """A MiniLoop, or when the run needs asyncio the standard asyncio loop (or
    uvloop's, `kind == "uvloop"`: process.event_loop).

    Why the standard loop by default: gracerun's loop serves a signal pipe, a few
    timers, a handful of hook and probe requests and a scrape every few seconds,
    where uvloop's speed does not show (signal forwarding and scrapes measured the
    same), while running it costs about 2.5 MB more resident memory (libuv's
    structures, its io_uring ring, the pages of its code) in every container.
    uvloop stays a choice; when it is chosen but not installed the standard loop
    runs, with a warning, rather than failing a service that already runs.
    """
    if not need_asyncio:
        return MiniLoop()
    import asyncio

    from gracerun.core.log import adopt

    adopt("asyncio")  # its errors through gracerun's non-blocking log

    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            from gracerun.core.log import WARNING, event

            event(WARNING, "process.event_loop = \"uvloop\" but uvloop is not installed: "
                  "running on the standard asyncio loop")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
