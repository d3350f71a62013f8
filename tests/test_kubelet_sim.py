"""Kubernetes stopping a container, simulated faithfully, around real PID-1 processes.

What the kubelet does, from kubernetes/kubernetes at commit
fbba6b47ad9824012048624a5ef60669e8109517, pkg/kubelet/kuberuntime/:

- kuberuntime_container.go, killContainer: the grace period is the pod's
  terminationGracePeriodSeconds.  If the container has a preStop hook and the grace
  period is above 0, `gracePeriod = gracePeriod - m.executePreStopHook(...)`.
- executePreStopHook runs the hook in a goroutine and waits for it to return or for
  the grace period, whichever comes first (`select` on `done` and
  `time.After(gracePeriod)`); a hook still running then is left running.  It returns
  the time waited in whole seconds, rounded down
  (`int64(metav1.Now().Sub(start.Time).Seconds())`).
- "always give containers a minimal shutdown window to avoid unnecessary SIGKILLs":
  `if gracePeriod < minimumGracePeriodInSeconds` it becomes that minimum, 2
  (kuberuntime_manager.go).  This is the one-off 2 s extension a preStop hook that
  used up the grace period earns.
- `m.runtimeService.StopContainer(ctx, containerID.ID, gracePeriod)`: the runtime sends
  the stop signal (SIGTERM) to the container's PID 1 and SIGKILLs the container
  gracePeriod seconds later.

`Kubelet` below does exactly that to a "container": a process running as PID 1 of a
new PID namespace (`unshare --pid --fork --mount-proc`), with the preStop exec run
inside its PID and mount namespaces (`nsenter`), as the runtime's exec does.  Its
`second` scales the kubelet's second (grace period, rounding, the 2 s minimum) so
that the 35 s classic runs in 3.5 s.

The classic failure: a `sleep 35` preStop in a 35 s grace period.  The sleep uses it
all, the service gets SIGTERM at 35 s and SIGKILL at 37 s: 2 s to finish whatever it
was doing.  And the cure: gracerun's preStop (`gracerun prestop`), with a config that
`gracerun check --grace-period 35` accepts, ends with the service stopped cleanly,
long before the kubelet's SIGKILL.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PY, REPO, Launcher, Proc, gracerun, start_in_pid_namespace, wait_for
from pipeline_support import Background, free_port, http_get

APP = REPO / "examples" / "app.py"
TINI = shutil.which("tini") or "/usr/bin/tini"
NSENTER = shutil.which("nsenter") or "/usr/bin/nsenter"
MINIMUM_GRACE_PERIOD = 2  # minimumGracePeriodInSeconds, kuberuntime_manager.go

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for PID namespaces"),
]


def remaining_grace(grace_period: float, waited: float, second: float = 1.0) -> float:
    """Kubelet seconds left for StopContainer after a preStop hook waited `waited`
    real seconds: the grace period less the wait in whole (kubelet) seconds rounded
    down, and never below the 2 s minimum."""
    left = grace_period - math.floor(waited / second + 1e-9)
    return max(left, MINIMUM_GRACE_PERIOD)


@dataclass(frozen=True)
class Stopped:
    """What killContainer did; times in real seconds since it began."""

    prestop_returned: float | None  # None: still running when the grace period ran out
    prestop_code: int | None
    sigterm: float
    sigkill_due: float
    sigkill: float | None  # None: PID 1 exited before it was due
    exited: float
    exit_code: int  # unshare's: PID 1's exit code, or 1 when a signal killed PID 1


class Kubelet:
    """killContainer for one container, with a grace period in kubelet seconds."""

    def __init__(self, launcher: Launcher, grace_period: int, second: float = 1.0) -> None:
        self.launcher = launcher
        self.grace_period = grace_period
        self.second = second

    def kill_container(self, container: Proc, pid1: int,
                       prestop: list[str] | None) -> Stopped:
        start = time.monotonic()
        grace = float(self.grace_period)
        returned = code = None
        if prestop is not None and grace > 0:
            hook = self.launcher.start([NSENTER, f"--target={pid1}", "--pid", "--mount", "--",
                                        *prestop])
            try:
                code = hook.popen.wait(grace * self.second)
                returned = time.monotonic() - start
            except subprocess.TimeoutExpired:
                pass  # left running, as the kubelet leaves it
            grace = remaining_grace(grace, time.monotonic() - start, self.second)
        grace = max(grace, MINIMUM_GRACE_PERIOD)

        sigterm = time.monotonic()
        os.kill(pid1, signal.SIGTERM)
        due = sigterm + grace * self.second
        sigkill = None
        try:
            exit_code = container.wait(max(0.0, due - time.monotonic()))
        except subprocess.TimeoutExpired:
            sigkill = time.monotonic()
            os.kill(pid1, signal.SIGKILL)
            exit_code = container.wait(10)
        exited = time.monotonic()
        return Stopped(returned, code, sigterm - start, due - start,
                       None if sigkill is None else sigkill - start, exited - start, exit_code)


def start_app(launcher: Launcher, wrapper: list[str], tmp: Path) -> tuple[Proc, int, int]:
    """examples/app.py under `wrapper` as PID 1; (container, PID 1, the app's port)."""
    port = free_port()
    container, pid1 = start_in_pid_namespace(
        launcher, [*wrapper, PY, str(APP), "--port", str(port), "--record", str(tmp / "record")])
    container.expect(r"^ready port=", timeout=15)
    return container, pid1, port


def slow_request(port: int, ms: int) -> Background:
    """GET /work?ms=MS in a thread; returns once the app counts it in flight."""
    request = Background(lambda: http_get(f"http://127.0.0.1:{port}/work?ms={ms}", timeout=30))
    wait_for(lambda: http_get(f"http://127.0.0.1:{port}/inflight")[1] == "1", 10,
             "the slow request in flight")
    return request


def record(tmp: Path) -> list[str]:
    path = tmp / "record"
    return path.read_text().splitlines() if path.exists() else []


# The configuration `gracerun check --grace-period 35` accepts: budget 30 s, 5 s
# under the grace period (at least 1 s is needed for gracerun's final report), and
# every phase's worst case inside the budget.  Adaptive phases: a shutdown takes as
# long as the traffic needs, not as long as the worst case.
GRACERUN_CONFIG = """
[shutdown]
budget = "30s"
stop_grace = "5s"

[[shutdown.notify.hooks]]
type = "signal"
signal = "SIGUSR1"

[shutdown.propagate]
quiet = "1s"
max = "10s"
probe = {{ type = "connections", port = {port} }}

[shutdown.drain]
probe = {{ type = "http", url = "http://127.0.0.1:{port}/inflight" }}
interval = "100ms"
timeout = "10s"

[control]
socket = "{socket}"
"""

# The classic, as gracerun config: a 35 s sleep in a 35 s budget.
CLASSIC_CONFIG = """
[shutdown]
budget = "35s"

[[shutdown.notify.hooks]]
type = "sleep"
duration = "35s"
"""


def check(path: Path, grace_period: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gracerun", "check", "--config", str(path),
                           "--grace-period", grace_period],
                          capture_output=True, text=True, timeout=30, cwd=REPO)


# ------------------------------------------------------------------ the arithmetic


@pytest.mark.parametrize(("grace", "waited", "second", "left"), [
    (35, 0.0, 1.0, 35),     # no preStop time: all of it
    (35, 3.9, 1.0, 32),     # 3.9 s count as 3: the kubelet rounds down
    (35, 35.0, 1.0, 2),     # the preStop used it all: the 2 s minimum
    (35, 35.4, 1.0, 2),
    (10, 30.0, 1.0, 2),     # never below the minimum
    (35, 3.5, 0.1, 2),      # scaled ten times: 3.5 s is 35 kubelet seconds
    (15, 0.05, 0.1, 15),
])
def test_remaining_grace(grace: int, waited: float, second: float, left: float) -> None:
    assert remaining_grace(grace, waited, second) == left


# ------------------------------------------------------------ the harness itself


@pytest.mark.parametrize(("prestop", "grace", "sigterm", "sigkill"), [
    (["true"], 15, 0.0, 1.5),               # preStop returns at once: SIGKILL at the grace period
    (["sleep", "100"], 10, 1.0, 1.2),       # preStop overruns: SIGTERM at 1.0, +0.2 (2 scaled)
])
def test_kubelet_timings_against_a_pid1_that_ignores_sigterm(
        launcher: Launcher, prestop: list[str], grace: int, sigterm: float,
        sigkill: float) -> None:
    """Steps: `sleep 1000` as PID 1 (no handler: the kernel drops SIGTERM for it, so
    only SIGKILL ends it); killContainer at a tenth of real time.  SIGTERM comes when
    the preStop returns or the grace period ends; SIGKILL at the grace period, or 2
    (scaled) kubelet seconds after SIGTERM when the preStop used it all up."""
    container, pid1 = start_in_pid_namespace(launcher, ["sleep", "1000"])
    stopped = Kubelet(launcher, grace, second=0.1).kill_container(container, pid1, prestop)
    assert stopped.sigterm == pytest.approx(sigterm, abs=0.15), stopped
    assert stopped.sigkill is not None, stopped
    assert stopped.sigkill == pytest.approx(sigkill, abs=0.15), stopped
    assert stopped.exit_code == 1  # unshare's report of a PID 1 killed by a signal
    assert (stopped.prestop_returned is None) == (prestop[0] == "sleep")


# --------------------------------------------------- the classic failure, and the cure


def test_check_rejects_the_classic_and_accepts_the_gracerun_config(tmp_path: Path) -> None:
    """`gracerun check --grace-period 35`: the 35 s sleep in a 35 s budget does not fit
    (exit 1, both against the budget and against Kubernetes); the config the next test
    runs fits (exit 0)."""
    classic = tmp_path / "classic.toml"
    classic.write_text(CLASSIC_CONFIG)
    rejected = check(classic, "35")
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "DOES NOT FIT Kubernetes" in rejected.stdout
    fixed = tmp_path / "gracerun.toml"
    fixed.write_text(GRACERUN_CONFIG.format(port=8080, socket=tmp_path / "ctl.sock"))
    accepted = check(fixed, "35")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "fits Kubernetes" in accepted.stdout


@pytest.mark.skipif(not os.access(TINI, os.X_OK), reason="tini is not installed")
def test_classic_prestop_sleep_leaves_the_service_the_two_second_minimum(
        launcher: Launcher, tmp_path: Path) -> None:
    """The classic, at a tenth of real time: terminationGracePeriodSeconds 35 (3.5 s),
    preStop `sleep 35` (3.5 s), a plain wrapper (tini) as PID 1 of examples/app.py.

    Steps:
    1. A request that needs 4.2 s is in flight when the kubelet begins: the app is
       graceful and would finish it after SIGTERM, given 0.7 s.
    2. The sleep uses up the grace period: SIGTERM only at 3.5 s.
    3. The 2 s minimum (0.2 s here) is all the app gets: SIGKILL at 3.7 s, the app
       recorded its SIGTERM but never its exit, and the request is cut off.
    """
    container, pid1, port = start_app(launcher, [TINI, "--"], tmp_path)
    request = slow_request(port, 4200)
    stopped = Kubelet(launcher, 35, second=0.1).kill_container(
        container, pid1, ["sleep", "3.5"])

    assert stopped.sigterm == pytest.approx(3.5, abs=0.2), stopped
    assert stopped.sigkill is not None, f"the app was not SIGKILLed: {stopped}"
    assert stopped.sigkill - stopped.sigterm == pytest.approx(0.2, abs=0.05), stopped
    assert stopped.exit_code == 1  # unshare's report of a PID 1 killed by a signal
    assert record(tmp_path) == ["signal SIGTERM"]  # it had started its shutdown...
    with pytest.raises(OSError):  # ...and the request died with it
        request.result()


def test_gracerun_prestop_stops_the_service_cleanly_well_before_sigkill(
        launcher: Launcher, tmp_path: Path) -> None:
    """The cure, in real time: terminationGracePeriodSeconds 35, preStop `gracerun
    prestop`, gracerun as PID 1 with GRACERUN_CONFIG (accepted by `gracerun check
    --grace-period 35`, see the test above).

    Steps:
    1. A request that needs 2 s is in flight when the kubelet begins.
    2. preStop `gracerun prestop --socket S`, exec'd in the container's namespaces:
       gracerun notifies the app (SIGUSR1), waits until no new connection arrives,
       drains the request, sends the app its SIGTERM, and only then lets the preStop
       return, so the kubelet's SIGTERM comes after the drain.
    3. The kubelet's SIGTERM is absorbed: the app got one SIGTERM, from gracerun.
    4. The request is answered, the app and gracerun exit 0, some 2-3 s after the
       start, 30 s before the kubelet's SIGKILL was due.
    """
    socket_path = tmp_path / "ctl.sock"
    port = free_port()
    config = tmp_path / "gracerun.toml"
    config.write_text(GRACERUN_CONFIG.format(port=port, socket=socket_path))
    assert check(config, "35").returncode == 0
    container, pid1 = start_in_pid_namespace(
        launcher, gracerun("--config", str(config), "--log-format", "json",
                           cmd=[PY, str(APP), "--port", str(port),
                                "--record", str(tmp_path / "record")]))
    container.expect(r"^ready port=", timeout=15)
    wait_for(socket_path.exists, 10, "gracerun's control socket")
    request = slow_request(port, 2000)

    stopped = Kubelet(launcher, 35).kill_container(
        container, pid1, [PY, "-m", "gracerun", "prestop", "--socket", str(socket_path)])

    assert stopped.prestop_code == 0, (stopped, container.stderr)
    assert stopped.prestop_returned is not None and stopped.prestop_returned >= 1.5, stopped
    assert stopped.sigkill is None, f"SIGKILLed: {stopped}\n{container.stderr}"
    assert stopped.exit_code == 0, container.stderr
    assert stopped.exited < 10 and stopped.sigkill_due - stopped.exited > 25, stopped
    assert request.result()[:2] == (200, "done 2000\n")
    assert record(tmp_path) == ["signal SIGUSR1", "signal SIGTERM", "exit 0"]
    messages = [json.loads(line).get("msg") for line in container.err.lines
                if line.startswith("{")]
    assert "absorbed stop signal after preStop" in messages, container.stderr
    assert messages.index("shutdown started") < messages.index("absorbed stop signal after "
                                                               "preStop")
