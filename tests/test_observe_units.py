"""Metrics, state file, report and request parsing as plain functions (injected clock)."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from gracerun.config.kinds import SleepHook
from gracerun.config.plan import HookPhase, Plan
from gracerun.core import log
from gracerun.core.lifecycle import Lifecycle, State
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.core.timeline import HookRecord
from gracerun.errors import GracerunError, UsageError
from gracerun.observe import report, server, state
from gracerun.observe.metrics import PHASES, LastShutdownCollector, Metrics

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(budget: float = 30.0, plan: Plan | None = None
         ) -> tuple[Clock, Lifecycle, CollectorRegistry, Metrics, Service]:
    clock = Clock()
    lifecycle = Lifecycle(clock, budget)
    service = Service(Reaper(), loop=None)
    registry = CollectorRegistry()
    metrics = Metrics(registry, lifecycle, plan, service)
    lifecycle.subscribe(metrics.on_event)
    lifecycle.enter(State.READY, "service started")
    return clock, lifecycle, registry, metrics, service


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def current_phase(registry: CollectorRegistry) -> list[str]:
    return [p for p in PHASES if value(registry, "gracerun_shutdown_phase", phase=p) == 1.0]


# ------------------------------------------------------------------ metrics


def test_before_a_shutdown() -> None:
    _, _, registry, _, _ = make(budget=12.0)
    assert current_phase(registry) == ["running"]
    assert value(registry, "gracerun_shutdown_in_progress") == 0.0
    assert value(registry, "gracerun_shutdown_budget_remaining_seconds") == 12.0
    assert value(registry, "gracerun_service_exit_code") is None  # absent while it runs
    assert value(registry, "gracerun_service_restarts_total") == 0.0
    assert value(registry, "gracerun_sigkill_escalations_total") == 0.0
    assert value(registry, "gracerun_log_lines_dropped_total") == 0.0
    build = [s for m in registry.collect() if m.name == "gracerun_build_info" for s in m.samples]
    assert build[0].value == 1.0 and set(build[0].labels) == {"version", "python_version"}


def test_a_shutdown_phase_by_phase() -> None:
    """Phases, hooks and probe readings as the pipeline reports them, on a fake clock."""
    clock, lc, registry, _, service = make(budget=30.0)
    lc.enter(State.NOTIFY, "signal SIGTERM")
    assert value(registry, "gracerun_shutdown_in_progress") == 1.0
    clock.now += 0.5
    lc.hook(HookRecord(phase="notify", name="mq", kind="exec", start=0.0, duration=0.5,
                       outcome="failed", detail="exit 1"))
    assert current_phase(registry) == ["notify"]
    # The phase in progress counts up to the scrape; so does the budget.
    assert value(registry, "gracerun_shutdown_phase_seconds", phase="notify") == 0.5
    assert value(registry, "gracerun_shutdown_budget_remaining_seconds") == 29.5
    lc.enter(State.DRAIN, "done")  # ends notify
    lc.probe("drain", 3)
    assert value(registry, "gracerun_drain_inflight") == 3.0
    lc.probe("propagate", 99)  # not in-flight work
    assert value(registry, "gracerun_drain_inflight") == 3.0
    clock.now += 2.0
    lc.enter(State.STOP, "drained")
    clock.now += 1.0
    service.exit_code = 143
    lc.enter(State.DONE, "service tree gone", exit_code=143)

    assert current_phase(registry) == ["done"]
    assert value(registry, "gracerun_shutdown_in_progress") == 0.0
    assert value(registry, "gracerun_shutdown_duration_seconds") == 3.5
    assert value(registry, "gracerun_service_exit_code") == 143.0
    for phase, seconds in (("notify", 0.5), ("drain", 2.0), ("stop", 1.0)):
        assert value(registry, "gracerun_shutdown_phase_seconds", phase=phase) == seconds
        assert value(registry, "gracerun_shutdown_phase_duration_seconds_sum",
                     phase=phase) == seconds
        assert value(registry, "gracerun_shutdown_phase_duration_seconds_count",
                     phase=phase) == 1.0
    assert value(registry, "gracerun_hook_duration_seconds", hook="mq", phase="notify") == 0.5
    assert value(registry, "gracerun_hook_runs_total", hook="mq", phase="notify",
                 outcome="failed") == 1.0
    assert value(registry, "gracerun_sigkill_escalations_total") == 0.0


def test_kill_counts_an_escalation() -> None:
    clock, lc, registry, _, _ = make(budget=2.0)
    lc.enter(State.STOP, "signal SIGTERM")
    clock.now += 2.0
    lc.enter(State.KILL, "budget spent")
    assert current_phase(registry) == ["kill"]
    assert value(registry, "gracerun_shutdown_budget_remaining_seconds") == 0.0
    assert value(registry, "gracerun_sigkill_escalations_total") == 1.0


def test_configured_hooks_start_at_zero() -> None:
    """So that `increase(gracerun_hook_runs_total{outcome="failed"}[..])` sees the first failure."""
    plan = Plan(deregister=HookPhase(hooks=(SleepHook(name="lb", timeout=1, duration=0.1),)))
    _, _, registry, _, _ = make(plan=plan)
    for outcome in ("ok", "failed", "timeout"):
        assert value(registry, "gracerun_hook_runs_total", hook="lb", phase="deregister",
                     outcome=outcome) == 0.0


def test_supervisor_observers() -> None:
    _, _, registry, metrics, _ = make()
    metrics.on_forward(10)
    metrics.on_forward(10)
    metrics.on_forward(1)
    metrics.on_orphan(1234, 0)
    assert value(registry, "gracerun_signals_forwarded_total", signal="SIGUSR1") == 2.0
    assert value(registry, "gracerun_signals_forwarded_total", signal="SIGHUP") == 1.0
    assert value(registry, "gracerun_zombies_reaped_total") == 1.0


def test_every_state_is_exactly_one_phase() -> None:
    """The phase gauge reads the lifecycle: one label reads 1 in every state."""
    for target in State:
        if target <= State.READY:
            continue
        _, lc, registry, _, _ = make()
        lc.enter(target, "test", exit_code=0 if target is State.DONE else None)
        assert current_phase(registry) == [target.label]


def test_both_exposition_formats_parse() -> None:
    _, lc, registry, metrics, _ = make()
    registry.register(LastShutdownCollector(sample_record()))
    metrics.on_forward(10)
    lc.enter(State.STOP, "x")
    names = {f.name for f in parse_om(generate_openmetrics(registry).decode())}
    assert {"gracerun_shutdown_phase", "gracerun_signals_forwarded",
            "gracerun_last_shutdown_phase_seconds"} <= names
    assert b"gracerun_signals_forwarded_total" in generate_latest(registry)


# ---------------------------------------------------------------- state file


def sample_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": 1, "gracerun_version": "0.1.0", "trigger": "signal SIGTERM",
        "started_at": 1_700_000_000.0, "budget_seconds": 10.0, "duration_seconds": 10.01,
        "exit_code": 137, "killed": True, "service_exit_code": 137,
        "phases": [
            {"name": "notify", "start": 0.0, "duration": 0.2, "reason": "done", "detail": {}},
            {"name": "deregister", "start": 0.2, "duration": 1.0, "reason": "hook failed",
             "detail": {}},
            {"name": "propagate", "start": 1.2, "duration": 2.0, "reason": "slept", "detail": {}},
            {"name": "stop", "start": 3.2, "duration": 6.8, "reason": "superseded by kill",
             "detail": {}},
            {"name": "kill", "start": 10.0, "duration": 0.01, "reason": "service tree gone",
             "detail": {}},
        ],
        "hooks": [
            {"phase": "notify", "name": "mq", "kind": "signal", "start": 0.0, "duration": 0.2,
             "outcome": "ok", "detail": ""},
            {"phase": "deregister", "name": "consul", "kind": "http", "start": 0.2,
             "duration": 1.0, "outcome": "timeout", "detail": "no result within 1s"},
        ],
    }
    record.update(changes)
    return record


def test_last_shutdown_metrics() -> None:
    registry = CollectorRegistry()
    registry.register(LastShutdownCollector(sample_record()))
    assert value(registry, "gracerun_last_shutdown_duration_seconds") == 10.01
    assert value(registry, "gracerun_last_shutdown_phase_seconds", phase="propagate") == 2.0
    assert value(registry, "gracerun_last_shutdown_exit_code") == 137.0
    assert value(registry, "gracerun_last_shutdown_killed") == 1.0
    assert value(registry, "gracerun_last_shutdown_hooks_failed") == 1.0
    assert value(registry, "gracerun_last_shutdown_timestamp_seconds") == 1_700_000_000.0


def test_state_file_round_trip(tmp_path: Path) -> None:
    clock = Clock()
    lc = Lifecycle(clock, 5.0)
    lc.enter(State.STOP, "signal SIGTERM")
    clock.now += 1.25
    lc.enter(State.DONE, "service tree gone", exit_code=0)
    tl = lc.timeline
    path = tmp_path / "deep" / "er" / "last.json"  # parents are created
    state.save(str(path), tl, 143)
    data = state.load(str(path))
    assert data["schema"] == state.SCHEMA
    assert data["service_exit_code"] == 143 and data["exit_code"] == 0
    assert data["duration_seconds"] == 1.25
    assert [p["name"] for p in data["phases"]] == ["stop"]
    assert os.listdir(path.parent) == ["last.json"]  # no temporary file left behind


@pytest.mark.parametrize("content, problem", [
    (b"{", "not valid JSON"),
    (b"[]", "expected a JSON object"),
    (json.dumps(sample_record(schema=2)).encode(), "expected schema 1"),
    (json.dumps(sample_record(killed="yes")).encode(), "'killed'"),
    (json.dumps(sample_record(phases=[{"start": 0}])).encode(), "missing 'name'"),
    (json.dumps(sample_record(duration_seconds="long")).encode(), "'duration_seconds'"),
    (b"\xff\xfe", "not valid JSON"),
])
def test_corrupt_state_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "last.json"
    path.write_bytes(content)
    with pytest.raises(state.StateFileError, match=problem):
        state.load(str(path))


def test_read_previous_warns_once_and_ignores(tmp_path: Path) -> None:
    path = tmp_path / "last.json"
    assert state.read_previous(str(path)) is None  # absent: silently nothing
    path.write_text("garbage")
    with log.capture(log.WARNING) as logged:
        assert state.read_previous(str(path)) is None
    assert len(logged) == 1
    assert "ignoring the previous state file" in logged[0].message()


def test_push_timeout_arithmetic() -> None:
    assert state.push_timeout(2.0, 10.0) == 2.0  # the configured timeout
    assert state.push_timeout(2.0, 1.5) == 1.5  # bounded by the budget left
    assert state.push_timeout(2.0, 0.0) == state.MIN_PUSH_SECONDS  # after a SIGKILL
    assert state.MIN_PUSH_SECONDS < 0.5  # inside the 1s `gracerun check` leaves
    assert state.push_timeout(0.1, 0.0) == 0.1  # never more than configured


# -------------------------------------------------------------------- report


def test_text_report() -> None:
    text = report.render_text(report.Shutdown.from_record(sample_record()))
    lines = text.splitlines()
    assert lines[0] == "shutdown at 2023-11-14 22:13:20 UTC, trigger: signal SIGTERM"
    rows = [line.split()[0] for line in lines[4:] if line and line[0] != " "]
    assert rows[:5] == ["notify", "deregister", "propagate", "stop", "kill"]
    # hooks sit beneath their phase, indented, failures spelled out
    consul = lines.index(next(line for line in lines if "consul" in line))
    assert lines[consul - 1].startswith("deregister") and lines[consul].startswith("  consul")
    assert "TIMEOUT: no result within 1s" in lines[consul]
    assert "SIGKILL" in next(line for line in lines if line.startswith("kill"))
    assert "budget spent" in text and "exit code 137" in text
    # bars are proportional: propagate (2s of 10s) spans a fifth of 50 columns
    propagate = next(line for line in lines if line.startswith("propagate"))
    assert propagate.count("█") == 10


def test_svg_report_is_well_formed() -> None:
    svg = report.render_svg(report.Shutdown.from_record(sample_record()))
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    bars = root.findall(f"{ns}rect")[1:]  # the first is the background
    assert len(bars) == 7  # five phases, two hooks
    texts = " ".join(t.text or "" for t in root.iter(f"{ns}text"))
    assert "budget 10s" in texts and "SIGKILL" in texts and "timeout" in texts


def test_report_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "last.json"
    path.write_text(json.dumps(sample_record()))
    assert report.main([str(path)]) == 0
    assert "propagate" in capsys.readouterr().out
    out = tmp_path / "s.svg"
    assert report.main([str(path), "--format", "svg", "--output", str(out)]) == 0
    ET.parse(out)
    with pytest.raises(UsageError, match="no such file"):
        report.main([str(tmp_path / "missing.json")])
    with pytest.raises(UsageError, match="invalid choice"):
        report.main([str(path), "--format", "png"])
    path.write_text("{}")
    with pytest.raises(GracerunError, match="not a gracerun state file") as err:
        report.main([str(path)])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------- server


def test_parse_listen() -> None:
    assert server.parse_listen("127.0.0.1:9102") == ("127.0.0.1", 9102)
    assert server.parse_listen("[::1]:9102") == ("::1", 9102)
    assert server.parse_listen(":9102") == (None, 9102)


@pytest.mark.parametrize("head, expected", [
    (b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: text/plain", ("GET", "/metrics")),
    (b"HEAD /ready?x=1 HTTP/1.0", ("HEAD", "/ready")),
    (b"GET http://h:1/live HTTP/1.1\nHost: h", ("GET", "/live")),
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 0", 405),
    (b"GET /metrics", 400),
    (b"GET metrics HTTP/1.1", 400),
    (b"GET / HTTP/2", 400),
    (b"GET / HTTP/1.1\r\nno colon here", 400),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100, 431),
])
def test_parse_head(head: bytes, expected: tuple[str, str] | int) -> None:
    parsed = server.parse_head(head)
    if isinstance(expected, int):
        assert parsed == expected
    else:
        assert not isinstance(parsed, int)
        assert parsed[:2] == expected


def test_head_has_no_body() -> None:
    get = server._response("GET", 200, b"live\n")
    head = server._response("HEAD", 200, b"live\n")
    assert get.endswith(b"\r\n\r\nlive\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Length: 5" in head
