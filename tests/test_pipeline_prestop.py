"""`gracerun prestop`: the Kubernetes preStop hook over the control socket."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_support import DEADLINE, Background, Harness, harness, http_get, inflight, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    yield from harness(tmp_path)


def _config(h: Harness, deregister_url: str) -> str:
    return f"""
[shutdown]
budget = "15s"
stop_grace = "3s"
[[shutdown.deregister.hooks]]
type = "http"
url = "{deregister_url}"
[shutdown.propagate]
sleep = "500ms"
[control]
socket = "{h.socket}"
"""


def _prestop(h: Harness) -> tuple[int, str, float]:
    """Run `gracerun prestop` to the end: (exit code, stderr, when it returned)."""
    proc = h.client("prestop", "--socket", h.socket, "--timeout", "20s")
    _, err = proc.communicate(timeout=DEADLINE)
    return proc.returncode, err.decode(), time.monotonic()


def test_prestop_runs_the_pipeline_and_absorbs_the_following_sigterm(h: Harness) -> None:
    """Steps:
    1. Control socket configured; deregister an http hook, propagate 500 ms.
       The socket file is a socket with mode 0600.
    2. A slow request (/work?ms=2500) keeps the app busy after its SIGTERM, so
       gracerun is still running when the kubelet's SIGTERM comes.
    3. `gracerun prestop --socket PATH`: it returns 0 once the stop phase began,
       after the deregister hook was called; the app then records its SIGTERM.
    4. SIGTERM to gracerun (as the kubelet sends after preStop): absorbed, not
       forwarded; the app finishes the slow request and exits 0; the app saw
       exactly one SIGTERM, and the socket file is removed.
    """
    hooks = h.hook_server()
    run = h.start(_config(h, hooks.url("/deregister")))
    mode = os.stat(h.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(mode)
    slow = Background(lambda: http_get(run.url("/work?ms=2500")))
    wait_for(lambda: inflight(run) == 1, "the slow request in flight")

    code, err, returned = _prestop(h)
    assert code == 0, err
    assert "reached the stop phase" in err
    dereg, = hooks.calls("/deregister")
    assert dereg.t < returned
    assert run.find("phase started", phase="stop"), "prestop returned before the stop phase"
    assert run.find("shutdown started")[0]["trigger"] == "preStop hook"
    wait_for(lambda: "signal SIGTERM" in run.record_lines(), "the app's SIGTERM")

    assert run.proc.poll() is None, "gracerun exited before the kubelet's SIGTERM"
    run.signal()
    run.wait_log("absorbed stop signal after preStop")
    assert slow.result()[:2] == (200, "done 2500\n")
    assert run.wait() == 0
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]
    assert run.phases() == ["deregister", "propagate", "stop"]
    assert not os.path.exists(h.socket)


def test_two_concurrent_prestops_run_the_pipeline_once(h: Harness) -> None:
    """Steps:
    1. Control socket configured; the deregister hook is held behind a gate.
    2. First `gracerun prestop`; wait until the deregister hook is called.
    3. Second `gracerun prestop`; wait until gracerun logged both requests.
    4. Open the gate: both clients return 0, the deregister hook was called once,
       the shutdown started once, and the app got one SIGTERM.
    """
    hooks = h.hook_server()
    gate = threading.Event()
    hooks.route("/deregister", gate=gate)
    run = h.start(_config(h, hooks.url("/deregister")))
    first = Background(lambda: _prestop(h))
    hooks.wait_calls("/deregister")
    second = Background(lambda: _prestop(h))
    wait_for(lambda: len(run.find("preStop hook received")) == 2, "both preStop requests")
    assert first.is_alive() and second.is_alive(), "prestop returned before the stop phase"
    gate.set()
    for client in (first, second):
        code, err, _ = client.result()
        assert code == 0, err
    assert run.wait() == 0
    assert len(hooks.calls("/deregister")) == 1
    assert len(run.find("shutdown started")) == 1
    assert run.record_lines() == ["signal SIGTERM", "exit 0"]


def test_prestop_without_a_gracerun_fails(h: Harness) -> None:
    """Steps: `gracerun prestop` on a socket path nobody serves exits non-zero and
    says there is no control socket."""
    code, err, _ = _prestop(h)
    assert code != 0
    assert "no gracerun control socket" in err


def test_control_socket_in_use_is_refused(h: Harness) -> None:
    """Steps:
    1. A gracerun serving the control socket.
    2. A second gracerun configured with the same socket path exits 2 without
       starting its service, saying the socket is in use.
    3. The first still answers `gracerun prestop`.
    """
    hooks = h.hook_server()
    run = h.start(_config(h, hooks.url("/deregister")))
    other = h.client("--config", str(h.write_config(f'[control]\nsocket = "{h.socket}"\n',
                                                    "other.toml")), "--", "true")
    _, err = other.communicate(timeout=DEADLINE)
    assert other.returncode == 2
    assert "in use by another gracerun" in err.decode()
    code, err_text, _ = _prestop(h)
    assert code == 0, err_text
    assert run.wait() == 0
    assert len(hooks.calls("/deregister")) == 1


def test_control_socket_path_holding_a_regular_file_is_not_deleted(h: Harness) -> None:
    """Steps:
    1. A regular file (not a socket) sits at the configured control socket path.
    2. Start gracerun; if it runs, stop it with SIGTERM.
    3. The file is still there with its contents: only a stale socket may be
       replaced (refusing to start would do as well).
    """
    Path(h.socket).write_text("precious\n")
    run = h.start(_config(h, "http://127.0.0.1:9/"), ready=False)
    wait_for(lambda: run.proc.poll() is not None or "ready port=" in run.out.read_text(),
             "gracerun to start or refuse")
    if run.proc.poll() is None:
        run.signal()
    run.wait()
    assert os.path.isfile(h.socket), "gracerun deleted a regular file at its socket path"
    assert Path(h.socket).read_text() == "precious\n"


@pytest.mark.parametrize("trigger", ["sigterm", "prestop"])
def test_stop_signal_is_rewritten_whatever_the_trigger(h: Harness, trigger: str) -> None:
    """Steps:
    1. `--rewrite TERM:INT` (the service wants SIGINT to stop, as nginx wants
       SIGQUIT); control socket configured; deregister an http hook.
    2. Trigger the shutdown with SIGTERM, or with `gracerun prestop` followed by
       the kubelet's SIGTERM.
    3. Either way the app's stop signal is SIGINT, exactly once, and it exits 0.
    """
    hooks = h.hook_server()
    run = h.start(_config(h, hooks.url("/deregister")), "--rewrite", "TERM:INT")
    if trigger == "prestop":
        code, err, _ = _prestop(h)
        assert code == 0, err
        if run.proc.poll() is None:
            run.signal()
    else:
        run.signal()
    assert run.wait() == 0
    assert run.record_lines() == ["signal SIGINT", "exit 0"]
