"""The record of one shutdown: phases, hooks, outcomes and timings.

The supervisor and the pipeline write into it; logs, metrics and the state
file read from it through listeners, so none of them needs to know another.
Times are monotonic (loop.time()) for durations, wall-clock only as labels.
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


Listener = Callable[[str, Any], None]  # (event, record): event is "phase-start", ...


class Timeline:
    def __init__(self, clock: Callable[[], float], budget: float) -> None:
        self._clock = clock
        self.budget = budget
        self.trigger = ""
        self.started_at: float | None = None  # monotonic
        self.started_wall: float | None = None
        self.phases: list[PhaseRecord] = []
        self.hooks: list[HookRecord] = []
        self.exit_code: int | None = None
        self.killed = False
        self.current: PhaseRecord | None = None
        self.listeners: list[Listener] = []

    def _emit(self, event: str, record: Any) -> None:
        for listener in self.listeners:
            listener(event, record)

    def elapsed(self) -> float:
        return 0.0 if self.started_at is None else self._clock() - self.started_at

    def remaining(self) -> float:
        return max(0.0, self.budget - self.elapsed()) if self.started_at is not None \
            else self.budget

    def begin_shutdown(self, trigger: str) -> None:
        self.trigger = trigger
        self.started_at = self._clock()
        self.started_wall = time.time()
        self._emit("shutdown-start", self)

    def begin(self, name: str) -> PhaseRecord:
        """Start a phase, ending the current one if it is still open."""
        if self.current is not None:
            self.end("superseded by " + name)
        record = PhaseRecord(name=name, start=self.elapsed())
        self.phases.append(record)
        self.current = record
        self._emit("phase-start", record)
        return record

    def end(self, reason: str, **detail: Any) -> None:
        record = self.current
        if record is None:
            return
        record.duration = self.elapsed() - record.start
        record.reason = reason
        record.detail.update(detail)
        self.current = None
        self._emit("phase-end", record)

    def hook(self, record: HookRecord) -> None:
        self.hooks.append(record)
        self._emit("hook", record)

    def probe(self, phase: str, value: float) -> None:
        """A probe reading (drain: in-flight work) for live observers."""
        if self.current is not None:
            self.current.detail["last_reading"] = value
        self._emit("probe", {"phase": phase, "value": value})

    def finish(self, exit_code: int) -> None:
        if self.current is not None:
            self.end("service tree gone")
        self.exit_code = exit_code
        self._emit("shutdown-end", self)

    def to_dict(self) -> dict[str, Any]:
        return {
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
