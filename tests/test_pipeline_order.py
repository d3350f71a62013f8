"""The order of the shutdown pipeline: notify, then deregister, then the stop signal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import Harness, harness, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def test_notify_then_deregister_then_stop_signal(h: Harness) -> None:
    """Steps:
    1. notify = a SIGUSR1 signal hook; deregister = two http hooks, POST /lb then
       POST /registry, each answered after 300 ms; the hook server and the app
       append to one ordering log (the app's record file).
    2. /registry holds its answer until the app has recorded SIGUSR1 (up to 5 s):
       if gracerun sent SIGUSR1 only after deregister, it would show up after.
    3. SIGTERM to gracerun.
    4. The log reads: SIGUSR1, both hooks called and answered in order, and only
       then SIGTERM; gracerun exits 0 with the app's own clean exit.
    """
    hooks = h.hook_server(order_log=True)
    hooks.route("/lb", delay=0.3)
    hooks.route("/registry", delay=0.3, before_reply=lambda: _wait_record(h, "signal SIGUSR1"))
    run = h.start(f"""
[shutdown]
budget = "10s"
[[shutdown.notify.hooks]]
type = "signal"
signal = "SIGUSR1"
[[shutdown.deregister.hooks]]
name = "lb"
type = "http"
method = "POST"
url = "{hooks.url('/lb')}"
headers = {{ X-Instance = "app-1" }}
body = '{{"instance": "app-1"}}'
[[shutdown.deregister.hooks]]
name = "registry"
type = "http"
method = "POST"
url = "{hooks.url('/registry')}"
""")
    run.signal()
    assert run.wait() == 0

    lines = run.record_lines()
    assert sorted(lines) == sorted([
        "signal SIGUSR1", "hook POST /lb", "hook-reply POST /lb 200",
        "hook POST /registry", "hook-reply POST /registry 200", "signal SIGTERM", "exit 0"])
    at = lines.index
    assert at("signal SIGUSR1") < at("hook-reply POST /registry 200"), lines
    assert at("hook-reply POST /lb 200") < at("hook POST /registry"), lines
    assert at("hook-reply POST /registry 200") < at("signal SIGTERM"), lines
    assert lines[-1] == "exit 0"

    lb, = hooks.calls("/lb")
    assert lb.headers["x-instance"] == "app-1"
    assert lb.body == b'{"instance": "app-1"}'
    assert run.phases() == ["notify", "deregister", "stop"]
    assert [(e["hook"], e["outcome"]) for e in run.hooks()] == [
        ("signal-1", "ok"), ("lb", "ok"), ("registry", "ok")]


def _wait_record(h: Harness, line: str) -> None:
    """Hold a hook's answer until the app recorded `line` (or 5 s passed)."""
    try:
        wait_for(lambda: h.record.exists() and line in h.record.read_text().splitlines(),
                 line, timeout=5)
    except BaseException:  # pytest.fail in the server thread: the assertions will tell
        pass
