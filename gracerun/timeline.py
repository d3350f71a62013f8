"""The record of one shutdown: phases, hooks, outcomes and timings.

The supervisor and the pipeline write into it; logs, metrics and the state
file read from it through listeners, so none of them needs to know another.
Times are monotonic (loop.time()) for durations, wall-clock only as labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HookRecord:
    phase: str
    name: str
    kind: str
    start: float  # seconds since the shutdown began
    duration: float
    outcome: str  # ok, failed, timeout
    detail: str = ""


@dataclass
class PhaseRecord:
    name: str
    start: float  # seconds since the shutdown began
    duration: float | None = None
    reason: str = ""  # why it ended: probe satisfied, timeout, service exited, ...
    detail: dict[str, Any] = field(default_factory=dict)


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
            "phases": [asdict(p) for p in self.phases],
            "hooks": [asdict(h) for h in self.hooks],
        }

    def summary(self) -> str:
        parts = [f"{p.name}={p.duration or 0.0:.3f}s" for p in self.phases]
        return " ".join(parts)
