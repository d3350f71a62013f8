"""Zombie reaping, as a real PID 1 (a new PID namespace) and as a child subreaper.

The orphans come from tests/progs/orphans.py: a double fork, so they are
re-parented to gracerun and nobody else can collect them.  The negative
control runs the same program under a subreaper that never waits and shows
the orphans do stay zombies there, so the reaping tests cannot pass vacuously.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers import (
    MODES,
    Launcher,
    child_by_nspid,
    children,
    gracerun,
    prog,
    start_gracerun,
    wait_for,
    zombies,
)

pytestmark = pytest.mark.timeout(90)

ORPHANS = 2000
@pytest.mark.parametrize("mode", MODES)
def test_no_zombie_is_left(launcher: Launcher, mode: str) -> None:
    """Steps:
    1. gracerun -w runs orphans.py, which double-forks 2,000 orphans that exit;
    2. when the service says 'done', poll /proc: within 20s gracerun has no child
       left but the service, so no zombie among its children;
    3. gracerun's stderr has 2,000 'reaped orphan' warnings (-w): each orphan
       really was gracerun's to reap;
    4. SIGTERM to gracerun: the service dies of it and gracerun exits 143.
    """
    proc, pid = start_gracerun(launcher, mode, gracerun("-w", cmd=prog("orphans.py", ORPHANS)))
    nspid = int(proc.expect(rf"^done orphans={ORPHANS} pid=(\d+)", timeout=30).group(1))
    service = wait_for(lambda: child_by_nspid(pid, nspid), what="the service")

    def only_the_service_left() -> bool:
        kids = children(pid)
        return [c.pid for c in kids] == [service]

    wait_for(only_the_service_left, timeout=20,
             what=f"gracerun's children to be only the service (zombies: {len(zombies(pid))})")
    proc.err.wait(r"warning: reaped orphan pid=\d+", count=ORPHANS, timeout=20)
    os.kill(pid, signal.SIGTERM)  # gracerun itself: unshare would not forward it
    assert proc.wait(20) == 143


def test_negative_control_orphans_stay_zombies_without_a_reaper(launcher: Launcher) -> None:
    """Steps: run orphans.py under nonreaper.py, a subreaper that never waits;
    all 2,000 orphans show up as zombies among its children and stay there until
    the test tells it (SIGTERM) to clean up and exit 0."""
    proc = launcher.start(prog("nonreaper.py", *prog("orphans.py", ORPHANS)))
    proc.expect(f"^done orphans={ORPHANS}", timeout=30)
    wait_for(lambda: len(zombies(proc.pid)) >= ORPHANS, timeout=20,
             what=f"{ORPHANS} zombies under the non-reaping parent")
    assert len(zombies(proc.pid)) == ORPHANS
    proc.send(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attempt", [1, 2])
def test_exit_code_survives_a_reaping_storm(launcher: Launcher, mode: str, attempt: int) -> None:
    """Exactly one reaper: the service's status is never lost to another waitpid.

    Steps:
    1. orphans.py 500 --together --exit 3: 500 orphans block on a pipe whose
       only write end the service holds;
    2. the service prints ready and exits 3: closing the pipe makes all 500
       orphans exit in the same instant as the service;
    3. gracerun exits 3 (not 0 or 255), having reaped all 500 (-w lines).
    """
    argv = gracerun("-w", cmd=prog("orphans.py", 500, "--together", "--exit", 3))
    proc, _ = start_gracerun(launcher, mode, argv)
    assert proc.wait(30) == 3
    assert len(proc.err.matching(r"warning: reaped orphan pid=\d+")) == 500
    assert "Traceback" not in proc.stderr
