"""The record of one shutdown: phases, hooks, outcomes and timings.

Only the lifecycle (lifecycle.py) writes into it, as it changes state; the
state file, the report and the metrics read it.  Observers that want to know
*when* something happened subscribe to the lifecycle's events, not to this.
Times are monotonic (the loop's clock) for durations, wall-clock only as labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class HookRecord:
    """One hook run.  (Plain slotted classes, not dataclasses: see config.py.)"""

    __slots__ = ("detail", "duration", "kind", "name", "outcome", "phase", "start")

    def __init__(self, *, phase: str, name: str, kind: str, start: float, duration: float,
                 outcome: str, detail: str = "") -> None:
        self.phase = phase
        self.name = name
        self.kind = kind
        self.start = start  # seconds since the shutdown began
        self.duration = duration
        self.outcome = outcome  # ok, failed, timeout
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("phase", "name", "kind", "start", "duration",
                                              "outcome", "detail")}


class PhaseRecord:
    """One phase: open while `duration` is None."""

    __slots__ = ("detail", "duration", "name", "reason", "start")

    def __init__(self, *, name: str, start: float) -> None:
        self.name = name
        self.start = start  # seconds since the shutdown began
        self.duration: float | None = None
        self.reason = ""  # why it ended: probe satisfied, timeout, service exited, ...
        self.detail: dict[str, Any] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "duration": self.duration,
                "reason": self.reason, "detail": dict(self.detail)}


class Timeline:
    """The shutdown's phases (times from its trigger) and the start-up's (from the run's start)."""

    def __init__(self, clock: Callable[[], float], budget: float) -> None:
        self._clock = clock
        self.run_started_at = clock()
        self.startup: list[PhaseRecord] = []  # start-up phases, times from the run's start
        self.startup_hooks: list[HookRecord] = []
        self.ready_after: float | None = None  # seconds from the run's start to READY
        self.startup_current: PhaseRecord | None = None
        self.budget = budget
        self.trigger = ""
        self.started_at: float | None = None  # monotonic
        self.started_wall: float | None = None
        self.phases: list[PhaseRecord] = []
        self.hooks: list[HookRecord] = []
        self.exit_code: int | None = None
        self.killed = False
        self.current: PhaseRecord | None = None

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else self._clock() - self.started_at

    def remaining(self) -> float:
        return max(0.0, self.budget - self.elapsed()) if self.started_at is not None \
            else self.budget

    def begin_shutdown(self, trigger: str) -> None:
        self.trigger = trigger
        self.started_at = self._clock()
        self.started_wall = time.time()

    def begin(self, name: str) -> PhaseRecord:
        """Open a phase's record (the current one must have been ended)."""
        record = PhaseRecord(name=name, start=self.elapsed())
        self.phases.append(record)
        self.current = record
        return record

    def end(self, reason: str) -> PhaseRecord | None:
        """Close the open phase's record, if any, with why it ended."""
        record = self.current
        if record is None:
            return None
        record.duration = self.elapsed() - record.start
        record.reason = reason
        self.current = None
        return record

    # ------------------------------------------------------------ start-up

    def since_start(self) -> float:
        return self._clock() - self.run_started_at

    def begin_startup(self, name: str) -> PhaseRecord:
        record = PhaseRecord(name=name, start=self.since_start())
        self.startup.append(record)
        self.startup_current = record
        return record

    def end_startup(self, reason: str) -> PhaseRecord | None:
        record = self.startup_current
        if record is None:
            return None
        record.duration = self.since_start() - record.start
        record.reason = reason
        self.startup_current = None
        return record

    def to_dict(self) -> dict[str, Any]:
        return {
            "startup": {"ready_after": self.ready_after,
                        "phases": [p.to_dict() for p in self.startup],
                        "hooks": [h.to_dict() for h in self.startup_hooks]},
            "trigger": self.trigger,
            "started_at": self.started_wall,
            "budget_seconds": self.budget,
            "duration_seconds": self.elapsed(),
            "exit_code": self.exit_code,
            "killed": self.killed,
            "phases": [p.to_dict() for p in self.phases],
            "hooks": [h.to_dict() for h in self.hooks],
        }

    def summary(self) -> str:
        parts = [f"{p.name}={p.duration or 0.0:.3f}s" for p in self.phases]
        return " ".join(parts)
