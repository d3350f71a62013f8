"""The lifecycle state machine, driven in-process: every trigger is a transition.

No process is spawned and no time passes: the supervisor runs on a fake loop
whose clock the test advances, with a fake reaper and a fake process table,
so each scenario runs in a millisecond.  The end-to-end tests
(test_pid1_*, test_pipeline_*) show the same transitions with real processes.
"""

from __future__ import annotations

import heapq
import itertools
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from helpers import run_checkout_python

from gracerun.config.load import build
from gracerun.core.lifecycle import (
    SHUTDOWN,
    Event,
    InvalidTransition,
    Lifecycle,
    ProbeReading,
    State,
    Transition,
)
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.core.supervisor import Processes, Supervisor
from gracerun.core.timeline import HookRecord

pytestmark = pytest.mark.timeout(10)

SERVICE_PID = 4242


class FakeLoop:
    """call_soon / call_later / time / stop, on a clock the test advances."""

    def __init__(self) -> None:
        self.now = 100.0
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()
        self.stopped = False

    def time(self) -> float:
        return self.now

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        return self.call_later(0.0, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def stop(self) -> None:
        self.stopped = True

    def advance(self, seconds: float) -> None:
        """Move the clock, firing every timer that falls due, in order."""
        end = self.now + seconds
        for _ in range(10_000):
            if not self._timers or self._timers[0][0] > end:
                break
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback(*timer.args)
        self.now = end


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeReaper(Reaper):
    """Children are what the test says; reap() delivers the exits it queued."""

    def __init__(self) -> None:
        super().__init__()
        self.children: set[int] = set()
        self.exits: list[tuple[int, int]] = []

    def reap(self) -> bool:
        while self.exits:
            pid, code = self.exits.pop(0)
            self.children.discard(pid)
            self._deliver(pid, code)
        return False

    def has_children(self) -> bool:
        return bool(self.children)


class FakeService(Service):
    """Records the signals sent to the service instead of sending them."""

    def __init__(self, reaper: Reaper) -> None:
        super().__init__(reaper, loop=None)
        self.received: list[int] = []

    def signal(self, signum: int, *, group: bool | None = None) -> bool:
        if not self.running:
            return False
        self.received.append(signum)
        return True


class FakeProcesses(Processes):
    def __init__(self, reaper: FakeReaper) -> None:
        self.reaper = reaper
        self.group_signals: list[int] = []
        self.killed = False
        self.continued = 0

    def spawn(self, argv: Sequence[str], tty_fd: int | None) -> int:
        self.reaper.children.add(SERVICE_PID)
        return SERVICE_PID

    def signal_group(self, pgid: int, signum: int) -> bool:
        self.group_signals.append(signum)
        return True

    def descendants(self) -> list[int]:
        return sorted(self.reaper.children)

    def send(self, pids: list[int], signum: int) -> int:
        return len(pids)

    def kill_all(self, service_pgid: int | None) -> int:
        self.killed = True
        return len(self.reaper.children)

    def continue_stopped(self, pgid: int | None, pids: Sequence[int] = ()) -> int:
        self.continued += 1
        return 0


class FakePreStop:
    """Stands for the pipeline: enters the first pre-stop state, as the real one does."""

    def __init__(self, sup: Supervisor, first: State = State.NOTIFY) -> None:
        self.sup = sup
        self.first = first
        self.started: list[tuple[str, bool]] = []
        self.cancelled = 0

    def start(self, trigger: str, service_exited: bool) -> None:
        self.started.append((trigger, service_exited))
        self.sup.lifecycle.enter(State.DEREGISTER if service_exited else self.first, trigger)

    def cancel(self) -> None:
        self.cancelled += 1


class World:
    def __init__(self, budget: str = "10s", pipeline: bool = False) -> None:
        self.cfg = build({"shutdown": {"budget": budget}})
        self.loop = FakeLoop()
        self.reaper = FakeReaper()
        self.service = FakeService(self.reaper)
        self.processes = FakeProcesses(self.reaper)
        self.sup = Supervisor(self.loop, self.cfg, self.reaper, service=self.service,
                              processes=self.processes)
        self.events: list[Event] = []
        self.sup.lifecycle.subscribe(self.events.append)
        self.prestop = FakePreStop(self.sup) if pipeline else None
        self.sup.prestop = self.prestop
        self.sup.start(["service"])

    @property
    def state(self) -> State:
        return self.sup.lifecycle.state

    def signal(self, signum: int) -> None:
        self.sup.on_signal(signum)

    def service_exits(self, code: int) -> None:
        self.reaper.exits.append((SERVICE_PID, code))
        self.sup.on_signal(signal.SIGCHLD)

    def transitions(self) -> list[tuple[str, str, str]]:
        return [(e.previous.label, e.state.label, e.reason) for e in self.events
                if isinstance(e, Transition)]


# ------------------------------------------------------------ the lifecycle


def test_a_run_only_moves_forward() -> None:
    lc = Lifecycle(lambda: 0.0, 10.0)
    lc.enter(State.READY, "started")
    lc.enter(State.DRAIN, "signal SIGTERM")  # skipping phases is allowed
    for backwards in (State.READY, State.NOTIFY, State.DRAIN):
        with pytest.raises(InvalidTransition):
            lc.enter(backwards, "late event")
    assert lc.state is State.DRAIN
    with pytest.raises(InvalidTransition):
        lc.enter(State.DONE, "no exit code")
    with pytest.raises(InvalidTransition):
        lc.enter(State.STOP, "an exit code", exit_code=0)
    lc.enter(State.DONE, "gone", exit_code=3)
    assert (lc.done, lc.exit_code, lc.timeline.exit_code) == (True, 3, 3)


def test_each_transition_closes_the_previous_phase_with_its_reason() -> None:
    now = [0.0]
    lc = Lifecycle(lambda: now[0], 30.0)
    seen: list[Event] = []
    lc.subscribe(seen.append)
    lc.enter(State.READY, "started")
    now[0] = 1.0
    first = lc.enter(State.NOTIFY, "signal SIGTERM")
    assert first.ended is None and first.started is not None
    assert lc.timeline.trigger == "signal SIGTERM"  # the first shutdown state starts it
    now[0] = 1.5
    lc.note(failed="mq")
    second = lc.enter(State.DRAIN, "hook failed")
    assert second.ended is not None
    assert (second.ended.name, second.ended.reason, second.ended.duration) == (
        "notify", "hook failed", 0.5)
    assert second.ended.detail == {"failed": "mq"}
    lc.probe("drain", 2.0)
    lc.hook(HookRecord(phase="drain", name="x", kind="sleep", start=0.5, duration=0.1,
                       outcome="ok"))
    assert [type(e) for e in seen] == [Transition, Transition, Transition, ProbeReading,
                                       HookRecord]
    assert [p.name for p in lc.timeline.phases] == ["notify", "drain"]


def test_shutdown_states_are_the_phases() -> None:
    assert [s.label for s in SHUTDOWN] == ["notify", "deregister", "propagate", "drain",
                                           "stop", "kill"]


# ------------------------------------------------------------ the triggers


def test_spawn_makes_the_run_ready() -> None:
    w = World()
    assert w.state is State.READY
    assert w.transitions() == [("starting", "ready", "service started")]


def test_signal_without_pipeline_goes_straight_to_stop_then_done() -> None:
    w = World()
    w.signal(signal.SIGTERM)
    assert w.state is State.STOP
    assert w.service.received == [signal.SIGTERM]
    w.service_exits(143)
    assert w.state is State.DONE and w.sup.lifecycle.exit_code == 143
    assert w.loop.stopped
    assert w.transitions() == [("starting", "ready", "service started"),
                               ("ready", "stop", "signal SIGTERM"),
                               ("stop", "done", "service tree gone")]


def test_signal_with_pipeline_enters_the_first_phase_at_once() -> None:
    w = World(pipeline=True)
    w.signal(signal.SIGTERM)
    assert w.state is State.NOTIFY  # before any loop turn: /ready is already 503
    assert w.prestop is not None and w.prestop.started == [("signal SIGTERM", False)]
    assert w.service.received == []  # the service keeps working during pre-stop


def test_second_signal_skips_to_stop_and_a_third_is_forwarded() -> None:
    w = World(pipeline=True)
    w.signal(signal.SIGTERM)
    w.signal(signal.SIGTERM)
    assert w.state is State.STOP
    assert w.transitions()[-1] == ("notify", "stop", "second signal")
    assert w.prestop is not None and w.prestop.cancelled >= 1
    assert w.service.received == [signal.SIGTERM]  # the stop signal
    w.signal(signal.SIGTERM)
    assert w.service.received == [signal.SIGTERM, signal.SIGTERM]  # forwarded at once
    assert w.state is State.STOP


def test_prestop_then_the_kubelets_sigterm_is_absorbed() -> None:
    w = World(pipeline=True)
    w.sup.begin_shutdown("preStop hook", from_prestop=True)
    assert w.state is State.NOTIFY
    w.signal(signal.SIGTERM)  # Kubernetes' SIGTERM after the hook: same shutdown
    assert w.state is State.NOTIFY and w.service.received == []
    w.signal(signal.SIGTERM)  # a real second signal
    assert w.state is State.STOP
    assert w.transitions()[-1] == ("notify", "stop", "second signal")


def test_a_second_prestop_does_not_restart_the_shutdown() -> None:
    w = World(pipeline=True)
    w.sup.begin_shutdown("preStop hook", from_prestop=True)
    w.sup.begin_shutdown("preStop hook", from_prestop=True)
    assert w.prestop is not None and len(w.prestop.started) == 1


def test_the_service_exiting_on_its_own_starts_the_shutdown() -> None:
    w = World(pipeline=True)
    w.service_exits(3)
    assert w.prestop is not None and w.prestop.started == [("service exited with 3", True)]
    assert w.state is State.DEREGISTER  # deregister still runs for a dead instance
    w.sup.begin_stop("done")
    assert w.state is State.DONE and w.sup.lifecycle.exit_code == 3
    assert w.service.received == []  # nothing to stop


def test_the_service_exiting_without_pipeline_ends_the_run() -> None:
    w = World()
    w.service_exits(0)
    assert [t[1] for t in w.transitions()] == ["ready", "stop", "done"]
    assert w.sup.lifecycle.exit_code == 0


def test_budget_expiry_kills_the_tree_whatever_phase_runs() -> None:
    w = World(budget="5s", pipeline=True)
    w.signal(signal.SIGTERM)
    w.loop.advance(4.9)
    assert w.state is State.NOTIFY and not w.processes.killed
    w.loop.advance(0.2)
    assert w.state is State.KILL and w.processes.killed
    assert w.transitions()[-1] == ("notify", "kill", "budget spent")
    w.service_exits(137)
    assert w.state is State.DONE and w.sup.lifecycle.exit_code == 137
    assert w.sup.lifecycle.killed


def test_a_tree_that_survives_sigkill_is_given_up_on() -> None:
    w = World(budget="1s")
    w.signal(signal.SIGTERM)
    w.loop.advance(1.0)
    assert w.state is State.KILL
    w.loop.advance(10.0)  # the settle timer: processes in uninterruptible sleep
    assert w.state is State.DONE and w.sup.lifecycle.exit_code == 137


def test_leftovers_keep_the_run_in_stop_until_they_are_gone() -> None:
    w = World()
    w.reaper.children.add(777)  # a process the service left behind
    w.service_exits(0)
    assert w.state is State.STOP
    assert signal.SIGTERM in w.processes.group_signals
    w.reaper.exits.append((777, 143))
    w.signal(signal.SIGCHLD)
    assert w.state is State.DONE and w.sup.lifecycle.exit_code == 0


def test_leftovers_get_the_stop_grace_not_the_budget() -> None:
    """The service exits 0 and leaves a process that ignores SIGTERM: it is killed at
    the stop grace (5 s of a 30 s budget), and the exit code stays the service's."""
    w = World(budget="30s")
    w.reaper.children.add(777)
    w.service_exits(0)
    w.loop.advance(4.9)
    assert w.state is State.STOP and not w.processes.killed
    w.loop.advance(0.2)
    assert w.state is State.KILL and w.processes.killed
    assert w.transitions()[-1][2] == "leftovers outlived the stop grace"
    w.reaper.exits.append((777, 137))
    w.signal(signal.SIGCHLD)
    assert w.state is State.DONE and w.sup.lifecycle.exit_code == 0


def test_a_signal_for_a_service_that_is_gone_is_not_counted() -> None:
    w = World(pipeline=True)
    forwarded: list[int] = []
    w.sup.on_forward.append(forwarded.append)
    w.signal(signal.SIGUSR1)
    assert forwarded == [signal.SIGUSR1] and w.service.received == [signal.SIGUSR1]
    w.service_exits(0)
    w.signal(signal.SIGUSR1)  # nothing left to send it to
    assert forwarded == [signal.SIGUSR1]


def test_success_codes_are_remapped_at_done() -> None:
    w = World()
    w.sup.cfg = build({"process": {"success_codes": [143]}})
    w.signal(signal.SIGTERM)
    w.service_exits(143)
    assert w.sup.lifecycle.exit_code == 0


def test_the_core_never_imports_asyncio() -> None:
    """The core modules must load without asyncio (start-up time: see core/loop.py)."""
    code = ("import sys; import gracerun.core.supervisor, gracerun.core.lifecycle, "
            "gracerun.core.loop, gracerun.core.signals, gracerun.core.reaper, "
            "gracerun.core.spawn, gracerun.core.tree, gracerun.core.service, "
            "gracerun.core.timeline, gracerun.core.log, gracerun.app; "
            "print('asyncio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert out.stdout.strip() == "False"


def test_validating_a_full_config_does_not_import_asyncio() -> None:
    """The config is validated before the service is spawned: asyncio (tens of ms),
    dataclasses and inspect (config/record.py replaces them), argparse, logging and
    threading (core/log.py), socket, ctypes and urllib.parse with ipaddress
    (clients/http.py's _split) must load only after the spawn, if at all.
    bench/full.toml has a hook, a probe and the endpoint; loading every registered
    kind must not pull in asyncio either."""
    slow = ("asyncio", "dataclasses", "inspect", "argparse", "logging", "threading", "socket",
            "ctypes", "urllib.parse", "ipaddress")
    code = (f"import sys; from gracerun.config import load, plan; "
            f"load.load('bench/full.toml'); "
            f"print(sorted(set({slow!r}) & set(sys.modules)));"
            f"list(plan.HOOKS.values()); list(plan.PROBES.values()); "
            f"print('asyncio' in sys.modules)")
    out = run_checkout_python(code)
    assert out.split("\n")[:2] == ["[]", "False"], out
