"""Prometheus collectors for gracerun, on one registry passed in.

The current phase, the budget left and the service's exit code are read at
scrape time from the lifecycle and the service handle (never copied here);
counters and histograms are fed by events: the lifecycle's (transitions,
hook runs, probe readings) and the supervisor's observers (forwarded
signals, reaped orphans).  Nothing needs to wake up to keep them fresh.

Why a per-phase gauge *and* a histogram: the gauge shows one shutdown (the
one in progress, growing as it runs); the histogram is the shape Prometheus
aggregates across pods.  A process shuts down once, so each of its
histograms holds at most one observation per phase; the value is in summing
them over a fleet (and over pushes to a Pushgateway).

Why a gauge with a `phase` label rather than a StateSet: OpenMetrics requires
a StateSet's label to be named after the metric itself, and dashboards want
`phase`.  Exactly one phase reads 1 at any time.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gracerun import __version__
from gracerun.config.plan import Plan
from gracerun.core import log, signals
from gracerun.core.lifecycle import Event, Lifecycle, State, Transition
from gracerun.core.service import Service
from gracerun.core.timeline import HookRecord, Timeline

if TYPE_CHECKING:
    from gracerun.core.supervisor import Supervisor

PHASES = ("starting", "register", "running", "notify", "deregister", "propagate", "drain",
          "stop", "kill", "done")


def phase_label(state: State) -> str:
    """The `phase` label of a state; READY shows as "running", as it always has."""
    return "running" if state is State.READY else state.label
HOOK_OUTCOMES = ("ok", "failed", "timeout")
# Phases last from milliseconds (a notify signal) to minutes (a long drain).
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0,
                 300.0)


class ShutdownCollector(Collector):
    """Metrics read from the timeline at scrape time."""

    def __init__(self, lifecycle: Lifecycle, service: Service | None = None) -> None:
        self.lifecycle = lifecycle
        self.timeline = lifecycle.timeline
        self.service = service

    def collect(self) -> Iterable[Metric]:
        tl = self.timeline
        phase = GaugeMetricFamily("gracerun_shutdown_phase",
                                  "The phase gracerun is in: 1 for the current one.",
                                  labels=["phase"])
        current = phase_label(self.lifecycle.state)
        for name in PHASES:
            phase.add_metric([name], 1.0 if name == current else 0.0)
        yield phase

        in_progress = tl.started_at is not None and tl.exit_code is None
        yield GaugeMetricFamily("gracerun_shutdown_in_progress",
                                "1 from the shutdown trigger until the service tree is gone.",
                                value=1.0 if in_progress else 0.0)
        yield GaugeMetricFamily("gracerun_shutdown_budget_seconds",
                                "The shutdown budget: time from the trigger to SIGKILL.",
                                value=tl.budget)
        yield GaugeMetricFamily("gracerun_shutdown_budget_remaining_seconds",
                                "Budget left before SIGKILL (the whole budget before a "
                                "shutdown starts).", value=tl.remaining())
        yield GaugeMetricFamily("gracerun_shutdown_duration_seconds",
                                "Time since the shutdown started (its total once it ended); "
                                "0 before.", value=tl.elapsed())

        seconds = GaugeMetricFamily("gracerun_shutdown_phase_seconds",
                                    "Duration of each phase of this process's shutdown; the "
                                    "phase in progress counts up to the scrape.",
                                    labels=["phase"])
        for name, value in phase_durations(tl).items():
            seconds.add_metric([name], value)
        yield seconds

        yield CounterMetricFamily("gracerun_log_lines_dropped",
                                  "Log lines dropped because stderr did not take them (a "
                                  "stalled log reader); gracerun never blocks on its log.",
                                  value=float(log.dropped_lines()))
        code = self.service.exit_code if self.service is not None else None
        if code is not None:
            yield GaugeMetricFamily("gracerun_service_exit_code",
                                    "The service's exit code as a shell shows it (128+N for "
                                    "signal N); absent while it runs.", value=float(code))


def phase_durations(tl: Timeline) -> dict[str, float]:
    """Seconds per phase, an open phase counting up to now; repeats are summed."""
    out: dict[str, float] = {}
    now = tl.elapsed()
    for record in tl.phases:
        duration = record.duration if record.duration is not None else now - record.start
        out[record.name] = out.get(record.name, 0.0) + max(0.0, duration)
    return out


class Metrics:
    """gracerun's collectors, and the listeners that feed them."""

    def __init__(self, registry: CollectorRegistry, lifecycle: Lifecycle,
                 plan: Plan | None = None, service: Service | None = None) -> None:
        self.registry = registry
        self.shutdown = ShutdownCollector(lifecycle, service)
        registry.register(self.shutdown)
        self.phase_duration = Histogram(
            "gracerun_shutdown_phase_duration_seconds",
            "Duration of shutdown phases, observed as each phase ends.",
            ["phase"], buckets=PHASE_BUCKETS, registry=registry)
        self.hook_duration = Gauge(
            "gracerun_hook_duration_seconds", "How long the hook's last run took.",
            ["hook", "phase"], registry=registry)
        self.hook_runs = Counter(
            "gracerun_hook_runs_total", "Hook runs by outcome (ok, failed, timeout).",
            ["hook", "phase", "outcome"], registry=registry)
        self.drain_inflight = Gauge(
            "gracerun_drain_inflight", "The drain probe's last reading of in-flight work.",
            registry=registry)
        self.sigkill_escalations = Counter(
            "gracerun_sigkill_escalations_total", "Shutdowns that spent their budget and ended in "
            "SIGKILL of the whole tree.", registry=registry)
        self.signals_forwarded = Counter(
            "gracerun_signals_forwarded_total", "Signals sent on to the service (after rewriting).",
            ["signal"], registry=registry)
        self.zombies_reaped = Counter(
            "gracerun_zombies_reaped_total", "Orphaned processes reaped (not the service itself).",
            registry=registry)
        self.service_restarts = Counter(
            "gracerun_service_restarts_total", "Service restarts; always 0: gracerun does not "
            "restart the service.", registry=registry)
        build = Gauge("gracerun_build_info", "gracerun's version; always 1.",
                      ["version", "python_version"], registry=registry)
        build.labels(__version__, platform.python_version()).set(1)
        if plan is not None:
            self._declare_hooks(plan)

    def _declare_hooks(self, plan: Plan) -> None:
        """Start every configured hook's counters at 0, so a failure is a change."""
        for phase_name, phase in (("notify", plan.notify), ("deregister", plan.deregister)):
            for hook in phase.hooks:
                for outcome in HOOK_OUTCOMES:
                    self.hook_runs.labels(hook.name, phase_name, outcome)

    def attach(self, sup: Supervisor) -> None:
        """Listen to the supervisor's lifecycle, its forwarded signals and its reaper."""
        sup.lifecycle.subscribe(self.on_event)
        sup.on_forward.append(self.on_forward)
        sup.reaper.on_orphan(self.on_orphan)

    # ------------------------------------------------------------ listeners

    def on_event(self, event: Event) -> None:
        """A lifecycle event: a transition, a hook run or a probe reading."""
        if isinstance(event, Transition):
            if event.state is State.KILL:
                self.sigkill_escalations.inc()
            ended = event.ended
            if ended is not None and ended.duration is not None:
                self.phase_duration.labels(ended.name).observe(ended.duration)
        elif isinstance(event, HookRecord):
            self.hook_duration.labels(event.name, event.phase).set(event.duration)
            self.hook_runs.labels(event.name, event.phase, event.outcome).inc()
        elif event.phase == "drain":
            self.drain_inflight.set(event.value)

    def on_forward(self, signum: int) -> None:
        self.signals_forwarded.labels(signals.name(signum)).inc()

    def on_orphan(self, pid: int, code: int) -> None:
        self.zombies_reaped.inc()


class LastShutdownCollector(Collector):
    """The previous run's shutdown, read back from the state file (state.py)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.record = record

    def collect(self) -> Iterable[Metric]:
        r = self.record
        yield GaugeMetricFamily("gracerun_last_shutdown_timestamp_seconds",
                                "When the previous run's shutdown started (Unix time).",
                                value=float(r.get("started_at") or 0.0))
        yield GaugeMetricFamily("gracerun_last_shutdown_duration_seconds",
                                "How long the previous run's shutdown took.",
                                value=float(r["duration_seconds"]))
        yield GaugeMetricFamily("gracerun_last_shutdown_budget_seconds",
                                "The previous run's shutdown budget.",
                                value=float(r["budget_seconds"]))
        seconds = GaugeMetricFamily("gracerun_last_shutdown_phase_seconds",
                                    "Duration of each phase of the previous run's shutdown.",
                                    labels=["phase"])
        totals: dict[str, float] = {}
        for phase in r["phases"]:
            totals[phase["name"]] = totals.get(phase["name"], 0.0) + float(
                phase.get("duration") or 0.0)
        for name, value in totals.items():
            seconds.add_metric([name], value)
        yield seconds
        failed = sum(1 for h in r["hooks"] if h.get("outcome") != "ok")
        yield GaugeMetricFamily("gracerun_last_shutdown_hooks_failed",
                                "Hooks of the previous run's shutdown that failed or timed out.",
                                value=float(failed))
        yield GaugeMetricFamily("gracerun_last_shutdown_killed",
                                "1 when the previous run's shutdown ended in SIGKILL.",
                                value=1.0 if r["killed"] else 0.0)
        if r.get("service_exit_code") is not None:
            yield GaugeMetricFamily("gracerun_last_shutdown_exit_code",
                                    "The service's exit code in the previous run.",
                                    value=float(r["service_exit_code"]))
