"""Shared pieces of the PID-1 tests added for issue 10 (see helpers.py for the rest).

    start_chain    start argv, which execs into `final` (launch.py, env), as a
                   subreaper or as PID 1, and return gracerun's PID once it runs
    loop_args      how to put gracerun on each of its three loops
    child_named    wait for gracerun's child to exec a given program
    pids_cgroup    a cgroup with a pids limit (v1 or v2), removed afterwards
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from helpers import Launcher, Proc, children, cmdline, status, wait_for

# MiniLoop (no config), uvloop (a config that needs asyncio), standard asyncio.
LOOPS = ["mini", "uvloop", "asyncio"]


def loop_args(tmp_path: Path, loop: str) -> tuple[list[str], list[str]]:
    """(a prefix that sets gracerun's environment, gracerun options) for `loop`."""
    if loop == "mini":
        return [], []
    config = tmp_path / "loop.toml"
    # any pipeline needs asyncio
    config.write_text(f'[process]\nevent_loop = "{loop}"\n[shutdown.propagate]\nsleep = "0s"\n')
    return [], ["--config", str(config)]


def start_chain(launcher: Launcher, mode: str, argv: Sequence[str],
                final: Sequence[str]) -> tuple[Proc, int]:
    """Start argv, which ends up exec'ing `final` (gracerun's own argv), as a
    subreaper (mode "subreaper") or as PID 1 of a new PID namespace ("pid1");
    return the started process and gracerun's PID as seen from here, once its
    command line is `final`."""
    want = list(final)
    if mode == "pid1":
        proc = launcher.start(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                               *argv])
        pid = wait_for(lambda: [c.pid for c in children(proc.pid) if cmdline(c.pid) == want],
                       what="unshare's child to exec gracerun")[0]
        assert status(pid)["NSpid"].split()[-1] == "1"
        return proc, pid
    proc = launcher.start(argv)
    wait_for(lambda: cmdline(proc.pid) == want, what="the launcher to exec gracerun")
    return proc, proc.pid


def child_named(pid: int, comm: str, timeout: float = 10.0) -> int:
    """The PID of pid's child once it has exec'd `comm`."""
    return wait_for(lambda: [c.pid for c in children(pid) if c.comm == comm], timeout,
                    f"gracerun's child to exec {comm}")[0]


def _pids_hierarchy() -> Path | None:
    """Where a pids-limited cgroup can be made: the v1 pids hierarchy, or the v2
    root with the pids controller enabled for its children."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "cgroup.procs").exists():
        return v1
    v2 = Path("/sys/fs/cgroup")
    try:
        if "pids" not in (v2 / "cgroup.controllers").read_text().split():
            return None
        if "pids" not in (v2 / "cgroup.subtree_control").read_text().split():
            (v2 / "cgroup.subtree_control").write_text("+pids")
    except OSError:
        return None
    return v2


@contextlib.contextmanager
def pids_cgroup(limit: int) -> Iterator[Path]:
    """A new cgroup whose pids.max is `limit` (tasks: threads count); skips the
    test when this machine cannot make one.  Removed once its processes are gone
    (the caller waits for them)."""
    base = _pids_hierarchy()
    if base is None:
        pytest.skip("no pids cgroup controller to limit the number of tasks")
    path = base / f"gracerun-test-{uuid.uuid4().hex[:12]}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.skip(f"cannot create a cgroup: {exc}")
    try:
        (path / "pids.max").write_text(str(limit))
        yield path
    finally:
        def removed() -> bool:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                return True
            except OSError:
                return False  # EBUSY until the last task has been reaped
            return True

        wait_for(removed, what=f"cgroup {path} to be empty")
