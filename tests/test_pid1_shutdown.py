"""The stop sequence: the budget, SIGKILL of the whole tree, signals during the
wait, and processes the service leaves behind when it exits on its own.

Durations are measured with time.monotonic() from the moment the trigger
happened (a signal sent, or the arrival of the service's last line) and
checked against generous bounds: the point is "about the budget", not
scheduler precision.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from helpers import MODES, Launcher, Proc, gracerun, prog, start_gracerun, stat, wait_for

pytestmark = pytest.mark.timeout(60)


def recorder(*args: object) -> list[str]:
    return prog("sigrecorder.py", *args)


def ready_pids(proc: Proc) -> list[int]:
    """Wait for the recorder's ready line; return the PIDs of every role."""
    m = proc.expect(r"^ready pid=(\d+) pgid=\d+ workers=([\d,]*) daemon=([\d,]*)")
    return [int(p) for p in ",".join(m.groups()).split(",") if p]


# ----------------------------------------------------------------- the budget


@pytest.mark.parametrize("mode", MODES)
def test_budget_spent_kills_the_whole_tree(launcher: Launcher, mode: str) -> None:
    """Steps:
    1. gracerun -t 1s runs a service that ignores SIGTERM, with 2 workers in its
       group and a setsid daemon outside it, all ignoring SIGTERM too;
    2. SIGTERM to gracerun; nothing stops;
    3. when the budget runs out gracerun SIGKILLs the whole tree: it exits 137
       after about 1s (0.9s..5s; gracerun gives up 5s after a SIGKILL that does
       not finish the tree, so a missed process shows as a late exit), and
       every one of those processes is gone.
    """
    argv = gracerun("-t", "1s", cmd=recorder("--ignore", "TERM", "--workers", 2, "--daemon"))
    proc, pid = start_gracerun(launcher, mode, argv)
    assert len(ready_pids(proc)) == 4
    tree = [p for p in launcher.alive() if p not in (proc.pid, pid)]
    assert len(tree) == 4
    start = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    rc = proc.wait(10)
    elapsed = time.monotonic() - start
    assert rc == 137
    assert 0.9 <= elapsed <= 5.0, elapsed
    assert set(tree) & set(launcher.alive()) == set()  # by tag: PIDs may be reused
    assert launcher.alive() == []


def test_second_sigterm_and_sigint_are_forwarded_during_the_wait(launcher: Launcher) -> None:
    """Steps:
    1. gracerun -t 30s runs a service that records SIGTERM and carries on;
    2. SIGTERM to gracerun: the service records it (the stop signal);
    3. a second SIGTERM: recorded again, at once (well inside the budget);
    4. SIGINT: forwarded as well; the service dies of it and gracerun exits 130,
       long before the budget.
    """
    proc = launcher.start(gracerun("-t", "30s", cmd=recorder("--exit-on", "INT")))
    ready_pids(proc)
    start = time.monotonic()
    proc.send(signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    sent = time.monotonic()
    proc.send(signal.SIGTERM)
    assert proc.out.arrival("^signal SIGTERM role=main ", count=2) - sent < 2.0
    proc.send(signal.SIGINT)
    proc.expect("^signal SIGINT role=main ")
    assert proc.wait(10) == 130
    assert time.monotonic() - start < 10.0


def test_stopped_service_still_gets_the_stop_signal(launcher: Launcher) -> None:
    """Steps: SIGSTOP the service directly (as a terminal's ^Z would); SIGTERM to
    gracerun: gracerun also sends SIGCONT, so the service wakes, records SIGTERM
    and dies of it promptly: 143, well inside the 30s budget."""
    proc = launcher.start(gracerun("-t", "30s", cmd=recorder("--exit-on", "TERM")))
    service = ready_pids(proc)[0]
    os.kill(service, signal.SIGSTOP)
    wait_for(lambda: (st := stat(service)) is not None and st.state == "T",
             what="the service to stop")
    start = time.monotonic()
    proc.send(signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    assert proc.wait(10) == 143
    assert time.monotonic() - start < 5.0



def test_stopped_service_group_is_continued(launcher: Launcher) -> None:
    """Steps: the service (a shell) starts a worker in its group and, on SIGTERM,
    stops the worker and waits for it; the whole group is stopped (a
    terminal's ^Z stops the foreground group); SIGTERM to gracerun (child-only
    mode). gracerun continues the whole group, not only the shell, so the
    worker can receive the shell's SIGTERM: exit 0 promptly. (Continuing only
    the shell leaves the worker stopped and the shell waiting until the 30 s
    budget.)"""
    script = ('sleep 1000 & w=$!; trap \'kill $w; wait $w; exit 0\' TERM; '
              'echo "ready $$ $w"; wait')
    proc = launcher.start(gracerun("-t", "30s", cmd=["sh", "-c", script]))
    m = proc.expect(r"^ready (\d+) (\d+)")
    pids = [int(m.group(1)), int(m.group(2))]
    os.killpg(pids[0], signal.SIGSTOP)
    wait_for(lambda: all((st := stat(p)) is not None and st.state == "T" for p in pids),
             what="the group to stop")
    start = time.monotonic()
    proc.send(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert time.monotonic() - start < 10.0


# ------------------------------------------------- what the service leaves


def test_background_job_is_stopped_when_the_service_exits(launcher: Launcher) -> None:
    """Steps: the service is `sh -c 'sleep 1000 & exit 7'`; gracerun sends the
    leftover sleep SIGTERM and exits 7 promptly (the budget is 30s); nothing is
    left."""
    start = time.monotonic()
    proc = launcher.start(gracerun("-t", "30s", cmd=["sh", "-c", "sleep 1000 & exit 7"]))
    assert proc.wait(10) == 7
    assert time.monotonic() - start < 5.0
    assert launcher.alive() == []


@pytest.mark.parametrize("mode", MODES)
def test_daemon_is_stopped_when_the_service_exits(launcher: Launcher, mode: str) -> None:
    """Steps:
    1. the service starts a daemon (setsid + double fork: outside its group and
       re-parented to gracerun), prints ready and exits 7;
    2. gracerun sends the daemon SIGTERM (it records it and dies of it);
    3. gracerun exits 7 promptly (budget 30s); the daemon is gone.
    """
    argv = gracerun("-t", "30s", cmd=recorder("--daemon", "--exit-on", "TERM", "--exit", 7))
    proc, _ = start_gracerun(launcher, mode, argv)
    ready_pids(proc)
    start = proc.out.arrival("^ready")
    proc.expect("^signal SIGTERM role=daemon ")
    assert proc.wait(10) == 7
    assert time.monotonic() - start < 5.0
    assert launcher.alive() == []


@pytest.mark.parametrize("mode", MODES)
def test_daemon_ignoring_sigterm_is_killed_at_the_stop_grace(launcher: Launcher,
                                                             mode: str) -> None:
    """Steps:
    1. gracerun -t 4s --stop-grace 1s; the service starts a daemon that ignores
       SIGTERM, prints ready and exits 7;
    2. the shutdown starts with the service's exit; the leftover daemon gets the
       stop grace (not the budget): when it runs out gracerun SIGKILLs it;
    3. gracerun still exits 7 (the service's code, not 137), about 1s after the
       service exited; the daemon is gone.
    """
    argv = gracerun("-t", "4s", "--stop-grace", "1s",
                    cmd=recorder("--daemon", "--ignore", "TERM", "--exit", 7))
    proc, _ = start_gracerun(launcher, mode, argv)
    ready_pids(proc)
    started = launcher.alive()  # the daemon among them
    # The service exits right after writing ready, and the grace starts then:
    # the line's arrival is a little later, hence the lower bound of 0.8s.
    start = proc.out.arrival("^ready")
    assert proc.wait(10) == 7
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed <= 3.0, elapsed
    assert set(started) & set(launcher.alive()) == set()  # by tag: PIDs may be reused


def test_a_running_service_sees_only_the_stop_signal(launcher: Launcher) -> None:
    """Steps: a service that records every signal and its worker keep running after
    SIGTERM (only recording it); SIGTERM to gracerun; a marker signal (SIGUSR2)
    after it. Each process records SIGTERM then SIGUSR2 and nothing in between:
    no SIGCONT to processes that were not stopped (as with tini and dumb-init)."""
    proc = launcher.start(gracerun("-g", "-t", "30s",
                                   cmd=recorder("--workers", 1, "--exit-on", "USR2")))
    ready_pids(proc)
    proc.send(signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    proc.expect("^signal SIGTERM role=worker1 ")
    proc.send(signal.SIGUSR2)  # forwarded to the group: the end marker
    proc.expect("^signal SIGUSR2 role=main ")
    proc.wait(10)
    received = [line.split()[1:3] for line in proc.out.lines if line.startswith("signal ")]
    assert ["SIGCONT", "role=main"] not in received, received
    assert ["SIGCONT", "role=worker1"] not in received, received


def test_leftovers_get_the_stop_grace_not_the_budget(launcher: Launcher) -> None:
    """Steps: the service leaves a process that ignores SIGTERM and exits 7; with a
    30 s budget (stop grace 5 s), gracerun SIGKILLs the leftover at the stop grace
    and exits 7 after about 5 s, not 30 s."""
    start = time.monotonic()
    proc = launcher.start(gracerun("-t", "30s", cmd=[
        "sh", "-c", "(trap '' TERM; exec sleep 1000) & exit 7"]))
    assert proc.wait(20) == 7
    elapsed = time.monotonic() - start
    assert 4.5 < elapsed < 10.0, elapsed
