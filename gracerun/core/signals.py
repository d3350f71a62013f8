"""Signal handling: every signal taken synchronously, one queued entry at a time.

Why this strategy.  gracerun blocks every signal it forwards (and SIGCHLD)
from the first lines of `cli.main()`, in the main thread and so in every
thread created after it, and a small thread takes them with sigwaitinfo(2),
appends each signal number to a deque and writes one byte to a pipe whose
other end the loop watches.  The loop then dispatches each signal, in the
order the kernel handed them out, as ordinary code.  Why not the others:

- Python signal handlers (what gracerun used before) lose signals.  Python's
  C-level handler only sets one "tripped" flag per signal number, so the
  10,000 queued SIGRTMIN+1 the kernel keeps for us collapse into the one
  call that happens to run: tini and dumb-init (sigtimedwait / signalfd)
  forwarded all 10,000, gracerun 1.  sigwaitinfo dequeues exactly one queued
  entry per call, so every one is forwarded, in the order it was queued.
- Fault signals.  With SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP and SIGSYS at
  their default action, one sent with kill(2) killed gracerun when it was not
  PID 1 and orphaned the service; a handler that returns would re-run a
  faulting instruction forever.  Blocked, they are both right: a signal sent
  with kill(2)/sigqueue(3) (SI_USER, SI_QUEUE, SI_TKILL) waits in the queue and
  is forwarded like any other, while the kernel delivers a genuine fault
  (force_sig_fault) to the faulting thread after unblocking it and resetting
  it to SIG_DFL (kernel/signal.c, force_sig_info_to_task), so gracerun still
  dies of it with a core-dump status, even as PID 1 (the kernel lifts init's
  protection for a fault it forces).  abort(3) unblocks SIGABRT and raises it
  at its own thread: fatal too (as PID 1 the kernel drops that SIGABRT and
  glibc's last resort, a faulting instruction, ends it with SIGSEGV).
  tests/test_pid1_faults.py shows all of it.
- Blocked signals are never discarded at generation time, whatever their
  disposition (kernel/signal.c, sig_ignored): a SIGHUP under `nohup` (SIG_IGN
  inherited) and, as PID 1, a signal left at SIG_DFL (which the kernel drops
  for init) both wait in the queue.  So gracerun need not touch the
  dispositions it inherited, and records them untouched for the service.
- Why block at the start of main().  Threads inherit the mask of the thread
  that creates them: blocked before any thread exists, no thread (uvloop's
  or asyncio's executors, the log writer) can ever take a signal by its
  default action.  And a signal that arrives while gracerun is still loading
  its configuration waits in the kernel instead of being lost.
- Why a thread and not signalfd(2).  Python has no signalfd; calling it
  through ctypes costs about 2 ms of start-up (import ctypes), paid by every
  container start.  The thread costs nothing while idle (it sleeps in the
  kernel), and one pipe byte wakes any loop: MiniLoop, uvloop and asyncio
  alike, with no `add_signal_handler` (uvloop refuses it for SIGCHLD) and
  no `set_wakeup_fd` (uvloop replaces ours while it runs).
- Job control works as under dumb-init (dumb-init.c, handle_signal: forward,
  then `kill(getpid(), SIGSTOP)` for SIGTSTP, SIGTTOU and SIGTTIN): each of
  the three is forwarded (with -g to the group as SIGSTOP unless -r rewrites
  it, since a group in a session of its own ignores them) and gracerun then
  stops itself, so the shell that started it sees the job stopped; SIGCONT
  is forwarded and wakes both (supervisor.py).  They are blocked, not
  ignored, and that is as good as ignoring them for gracerun's own terminal
  I/O: the kernel lets a background process that blocks SIGTTOU write and
  call tcsetpgrp without sending it anything (drivers/tty/tty_jobctrl.c,
  __tty_check_change), so gracerun in the background is never wedged.
- Some signals are about gracerun itself, not requests for the service, and
  are never forwarded (NOT_FORWARDED says why for each); SIGPIPE and SIGXFSZ,
  which gracerun's own writes raise at the writing thread, are not blocked
  but ignored (blocked, they would only pile up pending).
"""

from __future__ import annotations

import _thread
import os
import signal
from collections import deque
from collections.abc import Callable
from typing import Any

from gracerun.core.tuples import NamedTuple
from gracerun.errors import LaunchError, UsageError

# Never forwarded: every other signal gracerun receives is, real-time ones
# and the fault signals (when another process sends them) included.
NOT_FORWARDED = frozenset({
    signal.SIGKILL, signal.SIGSTOP,  # cannot be caught
    signal.SIGCHLD,                  # ours: the reaper's cue
    # Raised by gracerun's own writes (a preStop client or log reader that
    # hung up, a full disk): they describe gracerun's I/O, not a request for
    # the service.  Ignored, as Python does by default.
    signal.SIGPIPE, signal.SIGXFSZ,
})
# Synchronous fault signals: forwarded when another process sends one, fatal
# to gracerun when its own code faults (see the module docstring).
FAULTS = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL,
                    signal.SIGTRAP, signal.SIGSYS})
# Forwarded, and then gracerun stops itself, as dumb-init does (module docstring).
JOB_CONTROL = frozenset({signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
# A shutdown trigger must be a signal an operator sends on purpose.
NOT_TRIGGERS = NOT_FORWARDED | FAULTS | JOB_CONTROL | {signal.SIGCONT}
IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)
# Blocked and taken synchronously: 1-31 and the real-time signals 34-64 (glibc
# keeps 32 and 33 for itself), but for NOT_FORWARDED, plus the reaper's SIGCHLD.
TAKEN = frozenset({*(s for s in signal.valid_signals() if s not in NOT_FORWARDED),
                   signal.SIGCHLD})
# Python ignores these two before any of our code runs, so whether the parent
# did is unknowable: the service gets them at their default action.
_PYTHON_IGNORES = frozenset({signal.SIGPIPE, signal.SIGXFSZ})


class SignalState(NamedTuple):
    """A process's signal dispositions and mask, as exec(2) passes them on: the
    ignored signals stay ignored, the blocked ones stay blocked."""

    ignored: frozenset[int]
    blocked: frozenset[int]


CLEAN = SignalState(frozenset(), frozenset())
_inherited: SignalState | None = None


def hold() -> None:
    """Record the signal state gracerun inherited, then block every signal it takes.

    Call it first thing, before any thread exists (threads inherit the mask)
    and before anything slow: from here on no signal is lost, they wait in the
    kernel until `SignalInbox` takes them.  Idempotent.
    """
    global _inherited
    if _inherited is None:
        ignore, getsignal = signal.SIG_IGN, signal.getsignal
        ignored = frozenset(s for s in signal.valid_signals() if getsignal(s) is ignore)
        blocked = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ()))
        _inherited = SignalState(ignored - _PYTHON_IGNORES, blocked)
    # SETMASK, not BLOCK: what the parent blocked beyond TAKEN is
    # the service's business, not a reason for gracerun to miss it.
    signal.pthread_sigmask(signal.SIG_SETMASK, TAKEN)


def inherited() -> SignalState:
    """The state `hold()` recorded (CLEAN when it never ran: an in-process caller)."""
    return _inherited if _inherited is not None else CLEAN


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


_taker: tuple[deque[int], int, int] | None = None  # (taken signals, pipe read end, write end)


def start_taking() -> None:
    """Start the thread that takes the held signals, one siginfo at a time.

    Called before the service is spawned, so that under a task limit (a pids cgroup,
    RLIMIT_NPROC) the spawn fails rather than gracerun running a service it cannot
    supervise.  What the thread takes waits in a deque, and a byte in a pipe wakes
    the loop, once SignalInbox is installed.  Raises LaunchError (126).  Idempotent.
    """
    global _taker
    if _taker is not None:
        return
    pending: deque[int] = deque()
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _thread.start_new_thread(_take_forever, (pending, wfd))
    except RuntimeError as exc:  # EAGAIN: a pids cgroup limit or RLIMIT_NPROC
        os.close(rfd)
        os.close(wfd)
        raise LaunchError(f"cannot start the thread that takes signals: {exc} (a limit "
                          "on the number of processes or threads?)", 126) from None
    _taker = (pending, rfd, wfd)


def _take_forever(pending: deque[int], wfd: int) -> None:
    """The taker thread: sleeps in sigwaitinfo; NO LOGGING, just queue and wake."""
    wait, poll = signal.sigwaitinfo, signal.sigtimedwait
    while True:
        batch = [wait(TAKEN).si_signo]
        # Whatever else is queued already goes with it: one wake-up per burst.
        for _ in range(1023):
            info = poll(TAKEN, 0)
            if info is None:
                break
            batch.append(info.si_signo)
        pending.extend(batch)
        try:
            os.write(wfd, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop has a wake-up coming already


class SignalInbox:
    """Takes signals and hands them to `dispatch(signum)` on the loop, in order."""

    def __init__(self, loop: Any, dispatch: Callable[[int], None]) -> None:
        self._loop = loop
        self._dispatch = dispatch

    def install(self) -> None:
        hold()
        start_taking()
        assert _taker is not None
        self._pending, self._rfd, _ = _taker
        for signum in IGNORED:
            signal.signal(signum, signal.SIG_IGN)
        self._loop.add_reader(self._rfd, self._drain)
        if self._pending:  # taken before the loop existed: hand them over at once
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        try:
            for _ in range(64):  # the bytes only wake us; the deque says what came
                if not os.read(self._rfd, 4096):
                    break
        except (BlockingIOError, InterruptedError):
            pass
        # Bounded: a signal storm cannot keep us here past what was queued now.
        # Each byte is written after its batch is queued, so nothing is missed.
        for _ in range(len(self._pending)):
            self._dispatch(self._pending.popleft())

