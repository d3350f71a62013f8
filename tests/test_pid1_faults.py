"""Fault signals: forwarded when another process sends them, fatal when gracerun faults.

dumb-init forwards every signal 1-31 like any other; gracerun used to leave
SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP and SIGSYS at their default action,
so one sent with kill(2) killed it (when not PID 1) and orphaned the service.
Now they are blocked and taken one at a time (gracerun/core/signals.py): a
sent one is forwarded, while a fault of gracerun's own is delivered by the
kernel to the faulting thread, unblocked and at SIG_DFL, and still ends it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import MODES, Launcher, gracerun, prog, signame
from pid1_support import LOOPS, loop_args, start_chain

pytestmark = pytest.mark.timeout(60)

FAULTS = [signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
          signal.SIGSYS, signal.SIGABRT]


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", MODES)
def test_fault_signals_sent_with_kill_are_forwarded(launcher: Launcher, tmp_path: Path,
                                                    mode: str, loop: str) -> None:
    """Steps:
    1. gracerun (a subreaper, or PID 1; on MiniLoop, uvloop or asyncio) runs the
       signal recorder;
    2. each fault signal is sent to gracerun with kill(2); the service records
       each one (gracerun was neither killed nor did it drop them);
    3. SIGTERM: the service dies of it, gracerun exits 143.
    """
    prefix, opts = loop_args(tmp_path, loop)
    argv = gracerun(*opts, cmd=prog("sigrecorder.py", "--exit-on", "TERM"))
    proc, pid = start_chain(launcher, mode, [*prefix, *argv], argv)
    proc.expect(r"^ready pid=\d+")
    for sig in FAULTS:
        os.kill(pid, sig)
        proc.expect(f"^signal {signame(sig)} role=main ")
    os.kill(pid, signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    assert proc.wait() == 143


GENUINE = [("segv", signal.SIGSEGV), ("bus", signal.SIGBUS), ("ill", signal.SIGILL),
           ("trap", signal.SIGTRAP), ("fpe", signal.SIGFPE), ("abort", signal.SIGABRT)]


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the faults are x86-64 code")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loop", ["mini", "uvloop"])
@pytest.mark.parametrize(("kind", "sig"), GENUINE, ids=[k for k, _ in GENUINE])
def test_a_genuine_fault_still_ends_the_process(launcher: Launcher, kind: str, sig: int,
                                                loop: str, mode: str) -> None:
    """The same signal, sent or raised by the CPU, must be told apart.

    Steps:
    1. faulter.py sets up signals exactly as gracerun does (signals.hold() and a
       SignalInbox, whose thread waits in sigwaitinfo for this very signal);
    2. the signal sent with kill(2) is dispatched (the process lives on);
    3. SIGUSR1 makes the main thread commit the real fault (a NULL read, a
       truncated mmap, ud2, int3, a division by zero, abort(3)): the process dies
       of that signal (128+N) instead of dispatching it, and never prints that
       it survived.  As PID 1 too: the kernel lifts init's protection for a
       fault it forces.
    """
    argv = prog("faulter.py", kind, loop)
    proc, pid = start_chain(launcher, mode, argv, argv)
    proc.expect(r"^ready pid=\d+")
    os.kill(pid, sig)
    proc.expect(f"^dispatched {sig}$")
    os.kill(pid, signal.SIGUSR1)
    proc.expect(f"^dispatched {int(signal.SIGUSR1)}$")
    expected = {128 + sig}
    if kind == "abort" and mode == "pid1":
        # The kernel drops the SIGABRT that abort(3) raises at PID 1 (init ignores
        # what it leaves at SIG_DFL), so glibc ends with its abort instruction,
        # hlt, which faults: SIGSEGV, forced, fatal even to init.
        expected.add(128 + signal.SIGSEGV)
    assert proc.wait() in expected
    assert not proc.out.matching("survived")
