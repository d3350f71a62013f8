"""The lifecycle of one run: one state, changed in one place, seen by everyone.

    STARTING -> REGISTER -> READY -> NOTIFY -> DEREGISTER -> PROPAGATE -> DRAIN
    '--- start-up ----'              '------------- pre-stop phases -------------'
        -> STOP -> KILL -> DONE

Why one value and not flags.  The run used to keep `shutdown_started`,
`stopping`, `killed` and `exit_code` on the supervisor while metrics, the
endpoint and the control socket each derived their own idea of "which phase
are we in"; a new feature had to update all of them and the copies could
disagree.  Now `Lifecycle.state` is the only copy.  It is changed only by
`enter()`, which checks the transition and emits one typed `Transition`;
logs, metrics, `/ready`, the control socket, the state file and the report
read the state or subscribe to that event.

The rule is the one systemd's unit states and uvicorn's should_exit follow:
a run only ever moves forward.  Any state may be skipped (a bare wrapper goes
READY -> STOP; a service that exits on its own goes READY -> DEREGISTER ->
STOP; a second SIGTERM jumps from any pre-stop phase to STOP; the budget
jumps from anywhere to KILL), but none is entered twice or after a later
one, so "shutting down" and "stopping" are simple comparisons and can never
be undone by a late event.  An invalid transition is a bug: `enter()` raises.

Entering a state closes the timeline record of the one before it with the
transition's reason ("drained", "timeout", "second signal", ...): the reason a
phase ended and the reason the next began are the same fact, recorded once.

This module is core: no asyncio, no I/O, an injected clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from gracerun.core.timeline import HookRecord, PhaseRecord, Timeline
from gracerun.core.tuples import NamedTuple


class State(enum.IntEnum):
    """The run's states, in the only order they can be entered."""

    STARTING = 0  # the service is spawned; waiting until it is ready
    REGISTER = 1  # start-up: put it (back) into registries and load balancers
    READY = 2  # the service runs and takes work
    NOTIFY = 3  # pre-stop: tell the service to stop background work
    DEREGISTER = 4  # pre-stop: take it out of registries and load balancers
    PROPAGATE = 5  # pre-stop: wait until the world has noticed
    DRAIN = 6  # pre-stop: wait until nothing is in flight
    STOP = 7  # the stop signal is sent; waiting for the tree to go
    KILL = 8  # the budget is spent: SIGKILL to the whole tree
    DONE = 9  # the tree is gone; the exit code is known

    @property
    def label(self) -> str:
        """The name logs, metrics and the state file use: "drain", "stop", ..."""
        return self.name.lower()


STARTUP = (State.STARTING, State.REGISTER)
PRESTOP = (State.NOTIFY, State.DEREGISTER, State.PROPAGATE, State.DRAIN)
# States that are shutdown phases, with a timeline record each.
SHUTDOWN = (*PRESTOP, State.STOP, State.KILL)


class Transition(NamedTuple):
    """One change of state: the event every observer receives."""

    previous: State
    state: State
    reason: str  # why `previous` ended (the shutdown's trigger when it starts one)
    at: float  # the clock's time
    ended: PhaseRecord | None  # the timeline record `previous` closed, if it had one
    started: PhaseRecord | None  # the record `state` opened, if it is a phase


class ProbeReading(NamedTuple):
    """One probe reading during a phase (drain: in-flight work)."""

    phase: str
    value: float


Event = Transition | HookRecord | ProbeReading
Listener = Callable[[Event], None]


class InvalidTransition(RuntimeError):
    """A transition the lifecycle does not allow: a bug in the caller."""


class Lifecycle:
    """The current state, its history (the timeline), and who to tell."""

    def __init__(self, clock: Callable[[], float], budget: float) -> None:
        self._clock = clock
        self.state = State.STARTING
        self.timeline = Timeline(clock, budget)
        self.timeline.begin_startup(State.STARTING.label)
        self.exit_code: int | None = None  # gracerun's own, set when DONE is entered
        self._listeners: list[Listener] = []

    # ----------------------------------------------------------- reading

    @property
    def shutting_down(self) -> bool:
        """True from the shutdown's trigger on."""
        return self.state >= State.NOTIFY

    @property
    def stopping(self) -> bool:
        """True once the stop phase (or the kill, or the end) has begun."""
        return self.state >= State.STOP

    @property
    def killed(self) -> bool:
        """True once the budget ran out and the tree was sent SIGKILL."""
        return self.timeline.killed

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def can_enter(self, state: State) -> bool:
        return state > self.state

    # ----------------------------------------------------------- changing

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(event)` for every transition, hook run and probe reading."""
        self._listeners.append(listener)

    def enter(self, state: State, reason: str, *, exit_code: int | None = None) -> Transition:
        """Move to `state`; `reason` says why the current state ended.

        Raises InvalidTransition unless `state` comes after the current one.
        DONE takes gracerun's exit code.
        """
        previous = self.state
        if state <= previous:
            raise InvalidTransition(f"{previous.label} -> {state.label}: a run only moves "
                                    "forward")
        if (state is State.DONE) != (exit_code is not None):
            raise InvalidTransition("DONE, and only DONE, takes the exit code")
        timeline = self.timeline
        ended = started = None
        if previous in STARTUP:
            ended = timeline.end_startup(reason)
        if state is State.READY:
            timeline.ready_after = timeline.since_start()
        if state in SHUTDOWN and previous < State.NOTIFY:
            timeline.begin_shutdown(reason)
        ended = timeline.end(reason) or ended
        if state in STARTUP:
            started = timeline.begin_startup(state.label)
        elif state in SHUTDOWN:
            started = timeline.begin(state.label)
            if state is State.KILL:
                timeline.killed = True
        if state is State.DONE:
            assert exit_code is not None
            self.exit_code = exit_code
            timeline.exit_code = exit_code
        self.state = state
        transition = Transition(previous, state, reason, self._clock(), ended, started)
        self._emit(transition)
        return transition

    def note(self, **detail: object) -> None:
        """Add details to the current phase's record (shown when it ends)."""
        record = self.timeline.current
        if self.state in STARTUP:
            record = self.timeline.startup_current
        if record is not None:
            record.detail.update(detail)

    def hook(self, record: HookRecord) -> None:
        """A hook ran: a start-up hook (phase "register") or a shutdown one."""
        if record.phase == State.REGISTER.label:
            self.timeline.startup_hooks.append(record)
        else:
            self.timeline.hooks.append(record)
        self._emit(record)

    def probe(self, phase: str, value: float) -> None:
        if self.timeline.current is not None:
            self.timeline.current.detail["last_reading"] = value
        self._emit(ProbeReading(phase, value))

    def _emit(self, event: Event) -> None:
        for listener in self._listeners:
            listener(event)
