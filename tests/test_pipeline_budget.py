"""The budget: whatever phase hangs, the stop signal comes at budget - stop_grace and
SIGKILL at the budget."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Harness, HookServer, harness

pytestmark = pytest.mark.timeout(60)

BUDGET = 3.0
STOP_GRACE = 1.0
SLACK = 1.0  # scheduling, uvloop's millisecond clock, Popen.wait's polling

HEAD = f"""
[shutdown]
budget = "{BUDGET:g}s"
stop_grace = "{STOP_GRACE:g}s"
"""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _hanging_phase(phase: str, hooks: HookServer) -> str:
    """A config table for `phase` that would run far past the budget."""
    hooks.route("/hang", hang=True)
    hooks.route("/counter", counter=True)  # a new number each read: never quiet
    hooks.route("/busy", body=b"1")  # in flight forever
    return {
        "notify": """
[[shutdown.notify.hooks]]
type = "exec"
command = ["sleep", "100"]
timeout = "100s"
""",
        "deregister": f"""
[[shutdown.deregister.hooks]]
type = "http"
url = "{hooks.url('/hang')}"
timeout = "100s"
""",
        "propagate": f"""
[shutdown.propagate]
quiet = "500ms"
max = "100s"
interval = "100ms"
[shutdown.propagate.probe]
type = "http"
url = "{hooks.url('/counter')}"
""",
        "drain": f"""
[shutdown.drain]
interval = "100ms"
timeout = "100s"
[shutdown.drain.probe]
type = "http"
url = "{hooks.url('/busy')}"
""",
    }[phase]


PHASES = ["notify", "deregister", "propagate", "drain"]


@pytest.mark.parametrize("phase", PHASES)
def test_hanging_phase_is_cut_for_the_stop_grace_then_killed(h: Harness, phase: str) -> None:
    """Steps:
    1. Budget 3 s, stop grace 1 s; `phase` would take 100 s (an exec hook
       `sleep 100`, an http hook to a server that never answers, an adaptive
       propagate whose counter never stops moving, a drain probe that always
       reads 1); the stop signal is SIGHUP, which the app records and ignores.
    2. SIGTERM to gracerun.
    3. The phase is cut at 2 s (budget - stop grace) and the app gets SIGHUP then.
    4. At 3 s gracerun SIGKILLs the app and exits 137; nothing is left running
       (not even the exec hook's `sleep 100`).
    """
    hooks = h.hook_server()
    run = h.start(HEAD + _hanging_phase(phase, hooks), "--stop-signal", "SIGHUP")
    run.signal()
    code = run.wait()
    elapsed = time.monotonic() - run.sigterm_at
    assert code == 137
    assert BUDGET - 0.05 <= elapsed <= BUDGET + SLACK, elapsed

    started, ended = run.phase_started(phase), run.phase_ended(phase)
    assert started is not None
    cut = BUDGET - STOP_GRACE
    assert cut - 0.05 <= started["at"] + ended["duration"] <= cut + 0.5, (started, ended)
    stop = run.phase_started("stop")
    assert stop is not None, run.phases()
    assert cut - 0.05 <= stop["at"] <= cut + 0.5, stop
    if phase in ("notify", "deregister"):
        assert ended["reason"] == "hook failed"
        hook, = run.hooks(phase)
        assert hook["outcome"] == "timeout"
    else:
        assert ended["reason"] == "deadline"
    assert run.phase_started("kill") is not None
    assert run.find("budget spent: SIGKILL sent to the whole tree")
    assert run.record_lines()[-1] == "signal SIGHUP"  # killed: no "exit" line
    complete, = run.find("shutdown complete")
    assert complete["killed"] is True and complete["exit_code"] == 137


def test_service_ignoring_its_stop_signal_is_killed_at_the_budget(h: Harness) -> None:
    """Steps:
    1. Budget 3 s; a short propagate sleep (200 ms); stop signal SIGHUP, which
       the app records and ignores.
    2. SIGTERM to gracerun.
    3. The app gets SIGHUP after 200 ms, keeps running; at 3 s it is SIGKILLed
       and gracerun exits 137.
    """
    run = h.start(HEAD + '[shutdown.propagate]\nsleep = "200ms"\n', "--stop-signal", "SIGHUP")
    run.signal()
    assert run.wait() == 137
    elapsed = time.monotonic() - run.sigterm_at
    assert BUDGET - 0.05 <= elapsed <= BUDGET + SLACK, elapsed
    stop = run.phase_started("stop")
    assert stop is not None and 0.19 <= stop["at"] <= 0.2 + SLACK, stop
    assert run.record_lines() == ["signal SIGHUP"]


def test_hanging_hook_leaves_the_service_its_stop_grace(h: Harness) -> None:
    """Steps:
    1. Budget 4 s, stop grace 2 s (the app needs about 0.5 s to stop); a
       deregister http hook to a server that never answers (timeout 100 s); the
       app stops normally on SIGTERM.
    2. SIGTERM to gracerun.
    3. The hook times out at 2 s; the app gets SIGTERM, exits 0 by itself inside
       its grace, and gracerun exits 0 before the budget, without a kill.
    """
    hooks = h.hook_server()
    run = h.start('[shutdown]\nbudget = "4s"\nstop_grace = "2s"\n'
                  + _hanging_phase("deregister", hooks))
    run.signal()
    assert run.wait() == 0
    elapsed = time.monotonic() - run.sigterm_at
    assert 2.0 - 0.05 <= elapsed < 4.0, elapsed
    stop = run.phase_started("stop")
    assert stop is not None and 1.95 <= stop["at"] <= 2.5, stop
    assert run.phase_started("kill") is None
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    hooks.wait_calls("/hang")
