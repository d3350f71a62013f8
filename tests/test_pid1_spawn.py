"""Launching: failures before exec are reported, in one line, and leak nothing.

- a fork that fails (EAGAIN under a pids limit) used to leak the error pipe's
  two descriptors and, at launch, end gracerun with a BlockingIOError traceback;
- an exception in the forked child other than OSError (a NUL in an argument,
  '=' in an environment variable's name) made it exit 127 with no reason, and
  spawn() returned as if the launch had worked;
- `gracerun -- ''` exited 127 with no message.
"""

from __future__ import annotations

import errno
import os
import time

import pytest
from helpers import Launcher, gracerun, prog
from pid1_support import pids_cgroup

from gracerun.core import spawn
from gracerun.errors import LaunchError

pytestmark = pytest.mark.timeout(60)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def one_error_line(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("gracerun: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def reap_one(timeout: float = 10.0) -> int:
    """Reap the child a failed launch left behind; return its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)
    raise AssertionError("no child exited")


def test_fork_failure_raises_and_leaks_no_descriptor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps: os.fork fails with EAGAIN (as under a pids limit); spawn raises a
    LaunchError (126) that says it could not fork, and the descriptors open
    afterwards are exactly those open before."""
    def no_fork() -> int:
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    monkeypatch.setattr(os, "fork", no_fork)
    before = open_fds()
    with pytest.raises(LaunchError, match="cannot fork") as err:
        spawn.spawn(["true"])
    assert err.value.exit_code == 126
    assert open_fds() == before


@pytest.mark.parametrize(("argv", "env", "reason"), [
    (["echo", "a\0b"], {}, "argument 1 contains a NUL byte"),
    (["ec\0ho"], {}, "argument 0 contains a NUL byte"),
    (["echo"], {"A=B": "1"}, "invalid environment variable name 'A=B'"),
    (["echo"], {"": "1"}, "invalid environment variable name ''"),
    (["echo"], {"A": "x\0y"}, "environment variable A contains a NUL byte"),
])
def test_what_exec_cannot_take_is_refused_with_its_reason(argv: list[str], env: dict[str, str],
                                                          reason: str) -> None:
    """Steps: spawn an argv/env exec(2) cannot take; a LaunchError (126) names
    the reason, and nothing was forked (no descriptor left either)."""
    before = open_fds()
    with pytest.raises(LaunchError, match="cannot run") as err:
        spawn.spawn(argv, env=env)
    assert reason in str(err.value)
    assert err.value.exit_code == 126
    assert open_fds() == before
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_any_exception_in_the_child_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps: make the child's exec raise something that is not an OSError
    (the forked child runs the patched function too); spawn raises a
    LaunchError (126) with the exception's type and text instead of returning
    a PID that exits 127 for no stated reason."""
    def broken_exec(*args: object) -> None:
        raise RuntimeError("exec went wrong")

    monkeypatch.setattr(os, "execvpe", broken_exec)
    with pytest.raises(LaunchError, match="RuntimeError: exec went wrong") as err:
        spawn.spawn(["true"])
    assert err.value.exit_code == 126
    assert reap_one() == 127


def test_empty_command_name_exits_127_with_a_message(launcher: Launcher) -> None:
    rc, _, stderr = launcher.run(gracerun(cmd=[""]))
    assert rc == 127
    one_error_line(stderr, "cannot run ''")


@pytest.mark.parametrize(("limit", "fragment"), [(2, "cannot fork"), (1, "thread")],
                         ids=["fork", "thread"])
def test_fork_failure_at_launch_is_one_line(launcher: Launcher, limit: int,
                                            fragment: str) -> None:
    """Under a pids limit (a cgroup with pids.max), gracerun cannot start the
    service: one error line, exit 126, no traceback.

    Steps: launch.py moves into a cgroup with pids.max=limit and execs
    `gracerun -- true`: with 2 tasks gracerun starts its signal thread but its
    fork fails; with 1 the thread cannot start.
    """
    with pids_cgroup(limit) as cgroup:
        rc, _, stderr = launcher.run(prog("launch.py", "--cgroup", cgroup, "--",
                                          *gracerun(cmd=["true"])))
    assert rc == 126, stderr
    one_error_line(stderr, fragment)
