"""Real-time signals: every queued one is forwarded.

The kernel queues real-time signals, one entry per send.  10,000 SIGRTMIN+1
sent to tini or dumb-init reach the service 10,000 times; gracerun, with
Python signal handlers, delivered 1 (MiniLoop) or 672 to 1,635 (uvloop),
because Python folds the sends that arrive before its handler runs into one
call.  It now takes them with sigwaitinfo, one entry at a time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from helpers import MODES, Launcher, Proc, gracerun, prog
from pid1_support import LOOPS, loop_args, start_chain

pytestmark = pytest.mark.timeout(90)

SENDS = 10_000
RT = int(signal.SIGRTMIN) + 1


def send_and_count(proc: Proc, pid: int) -> None:
    """Send SENDS SIGRTMIN+1 to pid in a tight loop; the service must count all."""
    proc.expect(r"^ready pid=\d+")
    for _ in range(SENDS):
        os.kill(pid, RT)
    try:
        proc.expect(f"^count {SENDS}$", timeout=30)
    except AssertionError:
        counts = proc.out.matching(r"^count (\d+)$")
        got = counts[-1].group(1) if counts else 0
        raise AssertionError(f"the service received {got} of {SENDS} SIGRTMIN+1") from None


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("mode", MODES)
def test_every_queued_realtime_signal_is_forwarded(launcher: Launcher, tmp_path: Path,
                                                   mode: str, loop: str) -> None:
    """Steps:
    1. gracerun (a subreaper, or PID 1; on each of its loops) runs rtcount.py,
       which takes SIGRTMIN+1 with sigtimedwait and counts every one;
    2. the test sends 10,000 SIGRTMIN+1 to gracerun as fast as it can;
    3. the service counts exactly 10,000 (no more arrive: "count" lines are
       printed after 50 ms without one);
    4. SIGTERM: the service prints its final count, still 10,000, and exits 0.
    """
    prefix, opts = loop_args(tmp_path, loop)
    argv = gracerun(*opts, cmd=prog("rtcount.py", RT))
    proc, pid = start_chain(launcher, mode, [*prefix, *argv], argv)
    send_and_count(proc, pid)
    os.kill(pid, signal.SIGTERM)
    assert proc.wait() == 0
    assert proc.out.matching(r"^final (\d+)$")[-1].group(1) == str(SENDS)
    assert all(int(m.group(1)) <= SENDS for m in proc.out.matching(r"^count (\d+)$"))


@pytest.mark.skipif(not shutil.which("tini"), reason="tini is not installed")
def test_the_count_is_reachable_with_tini(launcher: Launcher) -> None:
    """The positive control: under tini the same service counts all 10,000, so
    the sends and the counting are sound and a shortfall is the wrapper's."""
    proc = launcher.start(["tini", "-s", "--", *prog("rtcount.py", RT)])
    send_and_count(proc, proc.pid)
    proc.send(signal.SIGTERM)
    assert proc.wait() == 0
    assert re.fullmatch(rf"final {SENDS}", proc.out.lines[-1])
