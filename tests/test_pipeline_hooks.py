"""Hooks that fail, time out, retry, or run in parallel."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest
from pipeline_support import Harness, HookServer, harness

pytestmark = pytest.mark.timeout(60)

HEAD = """
[shutdown]
budget = "10s"
stop_grace = "2s"
"""


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _http_hook(name: str, url: str, extra: str = "") -> str:
    return f"""
[[shutdown.deregister.hooks]]
name = "{name}"
type = "http"
url = "{url}"
{extra}
"""


def _failing_hook(kind: str, hooks: HookServer, extra: str = "") -> str:
    if kind == "refused":
        closed = HookServer()
        closed.close()  # its port now refuses connections
        return _http_hook("bad", closed.url("/deregister"), extra)
    if kind == "hanging":
        hooks.route("/hang", hang=True)
        return _http_hook("bad", hooks.url("/hang"), 'timeout = "500ms"\n' + extra)
    if kind == "exec-hanging":
        return f"""
[[shutdown.deregister.hooks]]
name = "bad"
type = "exec"
command = ["sleep", "100"]
timeout = "500ms"
{extra}
"""
    if kind == "not-found":
        return f"""
[[shutdown.deregister.hooks]]
name = "bad"
type = "exec"
command = ["no-such-command"]
{extra}
"""
    if kind == "status-500":
        hooks.route("/broken", status=500)
        return _http_hook("bad", hooks.url("/broken"), extra)
    raise AssertionError(kind)


FAILURES = [("refused", "failed"), ("hanging", "timeout"), ("exec-hanging", "timeout"),
            ("not-found", "failed"), ("status-500", "failed")]


@pytest.mark.parametrize(("kind", "outcome"), FAILURES)
def test_failed_hook_is_logged_and_the_pipeline_continues(h: Harness, kind: str,
                                                          outcome: str) -> None:
    """Steps:
    1. deregister: a hook that fails (`kind`: connection refused, a server that
       never answers with timeout 500 ms, exec `sleep 100` with timeout 500 ms,
       exec of a command that does not exist, HTTP 500), then a good http hook;
       on_failure is the default, continue.
    2. SIGTERM to gracerun.
    3. The bad hook is logged with its outcome (failed / timeout), within its
       timeout; the good hook is still called; the phase ends "hook failed";
       the app gets SIGTERM and gracerun exits 0.
    """
    hooks = h.hook_server()
    run = h.start(HEAD + _failing_hook(kind, hooks) + _http_hook("good", hooks.url("/good")))
    run.signal()
    assert run.wait() == 0

    bad, good = run.hooks("deregister")
    assert (good["hook"], good["outcome"]) == ("good", "ok")
    assert len(hooks.calls("/good")) == 1
    ended = run.phase_ended("deregister")
    assert (ended["reason"], ended["failed"]) == ("hook failed", "bad")
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    assert bad["hook"] == "bad" and bad["detail"]
    if kind in ("hanging", "exec-hanging"):
        assert 0.45 <= bad["duration"] <= 1.0, bad
    assert bad["outcome"] == outcome, bad


@pytest.mark.parametrize("kind", ["refused", "not-found"])
def test_on_failure_stop_skips_straight_to_stop(h: Harness, kind: str) -> None:
    """Steps:
    1. deregister: a failing hook with on_failure = "stop", then a good hook;
       then a 5 s propagate sleep and a drain that would never end.
    2. SIGTERM to gracerun.
    3. The good hook is never called; no propagate or drain phase runs; the stop
       phase starts at once, after "hook bad failed (on_failure = stop)"; gracerun
       exits 0 in well under the 5 s the propagate sleep alone would take.
    """
    hooks = h.hook_server()
    hooks.route("/busy", body=b"1")
    run = h.start(HEAD + _failing_hook(kind, hooks, 'on_failure = "stop"')
                  + _http_hook("good", hooks.url("/good")) + f"""
[shutdown.propagate]
sleep = "5s"
[shutdown.drain]
timeout = "5s"
[shutdown.drain.probe]
type = "http"
url = "{hooks.url('/busy')}"
""")
    run.signal()
    assert run.wait() == 0
    assert run.phases() == ["deregister", "stop"]
    assert [e["hook"] for e in run.hooks()] == ["bad"]
    assert hooks.calls("/good") == [] and hooks.calls("/busy") == []
    stop, = run.find("phase ended", phase="stop")
    assert stop["after"] == "hook bad failed (on_failure = stop)"
    started = run.phase_started("stop")
    assert started is not None and started["at"] < 1.0


@pytest.mark.parametrize(("retries", "outcome", "calls"), [(2, "ok", 3), (1, "failed", 2)])
def test_http_hook_retries_with_backoff(h: Harness, retries: int, outcome: str,
                                        calls: int) -> None:
    """Steps:
    1. deregister: an http hook to a server that answers 500, 500, then 200;
       backoff 200 ms (doubling).
    2. SIGTERM to gracerun.
    3. retries = 2: the hook succeeds on the third call; the calls are spaced by
       the backoff (>= 200 ms, then >= 400 ms).  Negative control, retries = 1:
       two calls, both 500, and the hook fails.
    """
    hooks = h.hook_server()
    hooks.route("/flaky", statuses=[500, 500, 200])
    run = h.start(HEAD + _http_hook("flaky", hooks.url("/flaky"),
                                    f'retries = {retries}\nbackoff = "200ms"'))
    run.signal()
    assert run.wait() == 0
    hook, = run.hooks("deregister")
    assert hook["outcome"] == outcome, hook
    seen = hooks.calls("/flaky")
    assert len(seen) == calls
    gaps = [b.t - a.replied for a, b in pairwise(seen) if a.replied is not None]
    assert len(gaps) == calls - 1
    for i, gap in enumerate(gaps):
        assert gap >= 0.2 * 2**i - 0.02, gaps
    if outcome == "ok":
        assert hook["detail"] == "HTTP 200 after 3 attempt(s)"


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_hooks_overlap(h: Harness, parallel: bool) -> None:
    """Steps:
    1. deregister: two http hooks to a server that answers each after 1 s;
       parallel = true (negative control: false).
    2. SIGTERM to gracerun.
    3. parallel: both calls arrive together and the phase takes ~1 s, not 2 s.
       sequential: the second call arrives after the first was answered, ~2 s.
    """
    hooks = h.hook_server()
    hooks.route("/a", delay=1.0)
    hooks.route("/b", delay=1.0)
    run = h.start(HEAD + f"[shutdown.deregister]\nparallel = {str(parallel).lower()}\n"
                  + _http_hook("a", hooks.url("/a")) + _http_hook("b", hooks.url("/b")))
    run.signal()
    assert run.wait() == 0
    a, = hooks.calls("/a")
    b, = hooks.calls("/b")
    phase = run.phase_ended("deregister")
    assert phase["reason"] == "done"
    if parallel:
        assert abs(a.t - b.t) < 0.3
        assert 1.0 - 0.01 <= phase["duration"] < 1.6, phase
    else:
        assert a.replied is not None and b.t >= a.replied
        assert phase["duration"] >= 2.0 - 0.01, phase


SPAWN_ERRORS = {
    # Valid configuration that spawn() refuses in the parent (LaunchError).  (An env key
    # with "=" or a NUL in an argument, which used to get this far, are now rejected at
    # load time: tests/test_config_errors.py.)
    "missing-cwd": """
[[shutdown.notify.hooks]]
name = "bad"
type = "exec"
command = ["true"]
cwd = "/nonexistent-gracerun-test-dir"
""",
    "missing-command": """
[[shutdown.notify.hooks]]
name = "bad"
type = "exec"
command = ["/nonexistent-gracerun-test-dir/hook"]
""",
}


@pytest.mark.parametrize("case", sorted(SPAWN_ERRORS))
def test_exec_hook_that_cannot_be_spawned_fails_and_the_pipeline_continues(
        h: Harness, case: str) -> None:
    """Steps:
    1. notify: an exec hook that passes config validation but cannot be spawned
       (a missing working directory or command); deregister: a
       good http hook.  Budget 4 s, stop grace 1 s.
    2. SIGTERM to gracerun.
    3. The bad hook is logged as failed and the pipeline continues: deregister is
       called, the app gets SIGTERM and exits 0, long before the budget.
    """
    hooks = h.hook_server()
    run = h.start('[shutdown]\nbudget = "4s"\nstop_grace = "1s"\n' + SPAWN_ERRORS[case]
                  + _http_hook("good", hooks.url("/good")))
    run.signal()
    code = run.wait()
    assert [(e["hook"], e["outcome"]) for e in run.hooks("notify")] == [("bad", "failed")], \
        run.err.read_text()
    assert len(hooks.calls("/good")) == 1
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    assert code == 0


def test_exec_probe_that_cannot_be_spawned_does_not_stop_the_pipeline(h: Harness) -> None:
    """Steps:
    1. drain: an exec probe whose command does not exist (passes validation,
       cannot be spawned), drain timeout 1 s; budget 4 s, stop grace 1 s.
    2. SIGTERM to gracerun.
    3. The probe never reads drained (a failed run or a failed reading), drain
       ends at its 1 s timeout, and the app gets SIGTERM and exits 0 before the
       budget.
    """
    run = h.start("""
[shutdown]
budget = "4s"
stop_grace = "1s"
[shutdown.drain]
timeout = "1s"
[shutdown.drain.probe]
type = "exec"
command = ["/nonexistent-gracerun-test-dir/probe"]
""")
    run.signal()
    code = run.wait()
    assert run.phase_ended("drain")["reason"] == "timeout", run.err.read_text()
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    assert code == 0


def test_probe_reading_that_is_not_a_float_does_not_stop_the_pipeline(h: Harness) -> None:
    """Steps:
    1. drain: an http probe reading JSON field "inflight", which the server
       answers with a 401-digit integer (float() raises OverflowError on it);
       drain timeout 1 s; budget 4 s, stop grace 1 s.
    2. SIGTERM to gracerun.
    3. Expected: a failed (or non-zero) reading; drain ends at its 1 s timeout;
       the app gets SIGTERM and exits 0 long before the budget, no SIGKILL.
    """
    hooks = h.hook_server()
    hooks.route("/stats", body=b'{"inflight": 1' + b"0" * 400 + b"}")
    run = h.start(f"""
[shutdown]
budget = "4s"
stop_grace = "1s"
[shutdown.drain]
timeout = "1s"
[shutdown.drain.probe]
type = "http"
url = "{hooks.url('/stats')}"
field = "inflight"
""")
    run.signal()
    code = run.wait()
    assert run.phase_ended("drain")["reason"] == "timeout", run.err.read_text()
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    assert code == 0


def test_chatty_exec_hook_is_not_killed_by_the_output_cap(h: Harness, tmp_path: Path) -> None:
    """Steps:
    1. deregister: an exec hook that prints 20,000 lines (far past the 1,000
       lines gracerun logs) and then touches a file.
    2. SIGTERM to gracerun.
    3. The hook succeeds (gracerun keeps reading past the cap and discards, so
       the hook never writes into a closed pipe), the file exists, the log
       says how many lines were dropped, and the app exits 0.
    """
    done = tmp_path / "dereg.done"
    run = h.start(HEAD + f"""
[[shutdown.deregister.hooks]]
name = "chatty"
type = "exec"
command = ["sh", "-c", "i=0; while [ $i -lt 20000 ]; do echo progress $i; i=$((i+1)); done; \
touch {done}"]
timeout = "8s"
""")
    run.signal()
    code = run.wait()
    assert [(e["hook"], e["outcome"]) for e in run.hooks()] == [("chatty", "ok")], \
        run.err.read_text()
    assert done.exists()
    truncated = run.find("hook output truncated")
    assert truncated and truncated[0]["lines_dropped"] == 19_000
    assert code == 0
