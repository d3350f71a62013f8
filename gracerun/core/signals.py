"""Signal handling: handlers that only enqueue, and the names and rewrites.

Why this strategy.  A Python signal handler runs in the main thread between
two bytecodes, wherever the loop happens to be, so it must not touch loop or
supervisor state: it appends the signal number to a deque and writes one
byte to a pipe whose other end the loop watches.  The loop then drains
the deque and dispatches each signal in order, as ordinary code.

- The pipe is also installed with `signal.set_wakeup_fd`, so a signal
  that lands between Python's check for pending handlers and the epoll call
  still wakes the loop (the classic lost-wakeup race).
- uvloop replaces the wakeup fd with its own while it runs and then calls the
  Python handlers itself; the byte our handler writes wakes our reader there.
- `loop.add_signal_handler` is not used: uvloop refuses it for SIGCHLD, and
  one mechanism for every signal keeps their relative order.
- Some signals are about gracerun itself, not requests for the service, and
  are never forwarded (NOT_FORWARDED says why for each): SIGTTIN/SIGTTOU
  (with a terminal gracerun sits in a background group; ignoring SIGTTOU
  also lets it hand the terminal to the service), SIGPIPE/SIGXFSZ from its
  own writes, and the synchronous fault signals.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from gracerun.errors import UsageError

# Every catchable signal gracerun receives is forwarded, real-time ones
# included (left at their default they would kill gracerun when it is not
# PID 1, and be dropped when it is), except these:
NOT_FORWARDED = frozenset({
    signal.SIGKILL, signal.SIGSTOP,  # cannot be caught
    signal.SIGCHLD,                  # ours: the reaper's cue
    # Job control aimed at gracerun itself, in the background of a terminal
    # (see the module docstring): ignored.
    signal.SIGTTIN, signal.SIGTTOU,
    # Raised by gracerun's own writes (a preStop client or log reader that
    # hung up, a full disk): they describe gracerun's I/O, not a request for
    # the service.  Ignored, as Python does by default.
    signal.SIGPIPE, signal.SIGXFSZ,
    # Synchronous faults in gracerun itself: a handler that returns would
    # re-run the faulting instruction forever.  Left at their default action,
    # so a crash is a crash (as PID 1 the kernel keeps them from killing us
    # when sent by another process).
    signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
    signal.SIGSYS,
})
IGNORED = (signal.SIGTTIN, signal.SIGTTOU, signal.SIGPIPE, signal.SIGXFSZ)
# 1-31 and the real-time signals (34-64; glibc keeps 32 and 33 for itself).
HANDLED = (*(s for s in sorted(signal.valid_signals()) if s not in NOT_FORWARDED),
           signal.SIGCHLD)


def name(signum: int) -> str:
    """'SIGTERM' for 15; 'SIG37' for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIG{signum}"


def parse(text: str | int, *, allow_zero: bool = False) -> int:
    """A signal from 'TERM', 'SIGTERM', 'sigterm' or '15' (0 only when allowed).

    Raises UsageError with the accepted forms.
    """
    raw = str(text).strip()
    if raw.isascii() and raw.isdigit():
        if len(raw) > 4:
            raise UsageError(f"invalid signal number {raw[:20]!r}: expected 1-{signal.NSIG - 1}")
        num = int(raw)
        if num == 0 and allow_zero:
            return 0
        if 1 <= num < signal.NSIG:
            return num
        raise UsageError(f"invalid signal number {raw!r}: expected 1-{signal.NSIG - 1}")
    upper = raw.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    try:
        return int(signal.Signals[upper])
    except KeyError:
        raise UsageError(
            f"unknown signal {raw!r}: expected a name such as TERM or SIGTERM, or a number"
        ) from None


class SignalInbox:
    """Receives signals and hands them to `dispatch(signum)` on the loop."""

    def __init__(self, loop: Any, dispatch: Callable[[int], None]) -> None:
        self._loop = loop
        self._dispatch = dispatch
        self._pending: deque[int] = deque()
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def install(self) -> None:
        self._loop.add_reader(self._rfd, self._drain)
        signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        for signum in HANDLED:
            signal.signal(signum, self._enqueue)
        for signum in IGNORED:
            signal.signal(signum, signal.SIG_IGN)
        for signum in NOT_FORWARDED - set(IGNORED) - {signal.SIGKILL, signal.SIGSTOP,
                                                      signal.SIGCHLD}:
            signal.signal(signum, signal.SIG_DFL)
        # Undo a blocked mask inherited from whoever started us.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def _enqueue(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: NO LOGGING, no state changes, just queue and wake."""
        self._pending.append(signum)
        try:
            os.write(self._wfd, b"\0")
        except OSError:
            pass  # buffer full: the loop is already awake with work queued

    def _drain(self) -> None:
        try:
            for _ in range(64):  # the bytes only wake us; the deque says what came
                if not os.read(self._rfd, 4096):
                    break
        except (BlockingIOError, InterruptedError):
            pass
        # Bounded: a signal storm cannot keep us here past what was queued now.
        for _ in range(len(self._pending)):
            self._dispatch(self._pending.popleft())
