"""gracerun never blocks on its own log.

Its stderr is shared with the service, and in a container it is a pipe to the
log driver; when the driver stops reading (Docker's default log mode blocks),
gracerun used to block in write(): no forwarding, no stop signal, no budget
kill, no reaping, and even after the budget's SIGKILL it hung writing its
warning.  Now its lines go through a bounded queue to a writer thread; when
the queue is full, lines are dropped, counted, and reported later.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from helpers import MODES, Launcher, Lines, children, cmdline, gracerun, prog, wait_for

pytestmark = pytest.mark.timeout(90)

RT = int(signal.SIGRTMIN) + 1


def stalled_pipe() -> tuple[int, int]:
    """A pipe whose buffer is already full and that nobody reads: (read, write) fds.

    O_NONBLOCK is set only while filling it, on the test's own description,
    and cleared before anyone else gets the write end.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    flags = fcntl.fcntl(w, fcntl.F_GETFL)
    fcntl.fcntl(w, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    for size in (65536, 4096, 256, 1):
        try:
            while True:
                os.write(w, b"x" * size)
        except BlockingIOError:
            pass
    fcntl.fcntl(w, fcntl.F_SETFL, flags)
    return r, w


class Run:
    """gracerun (a subreaper, or PID 1 of a new PID namespace) with stderr on a fd."""

    def __init__(self, launcher: Launcher, mode: str, argv: list[str], stderr: int) -> None:
        full = argv if mode == "subreaper" else [
            "unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *argv]
        self.popen = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=stderr, env=launcher.env(), cwd=launcher.cwd,
                                      start_new_session=True)
        assert self.popen.stdout is not None
        self.out = Lines(self.popen.stdout.fileno(), "stdout")
        if mode == "subreaper":
            self.pid = self.popen.pid
        else:
            self.pid = wait_for(lambda: [c.pid for c in children(self.popen.pid)
                                         if cmdline(c.pid) == argv], what="gracerun")[0]

    def wait(self, timeout: float) -> int:
        rc = self.popen.wait(timeout)
        return rc if rc >= 0 else 128 - rc

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(10)
        self.out.join(5)
        assert self.popen.stdout is not None
        self.popen.stdout.close()


@pytest.fixture
def runs(launcher: Launcher) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


@pytest.mark.parametrize("mode", MODES)
def test_stalled_log_forwarding_and_stop_go_on(launcher: Launcher, runs: list[Run],
                                               mode: str) -> None:
    """Steps:
    1. gracerun -v (a log line for every signal) runs the recorder with its
       stderr on a full pipe nobody reads;
    2. SIGUSR1 five times, each forwarded (the service records it) while every
       one of gracerun's log lines is stuck;
    3. SIGTERM: the service dies of it and gracerun exits 143 within 5 s.
    """
    r, w = stalled_pipe()
    try:
        run = Run(launcher, mode, gracerun("-v", cmd=prog("sigrecorder.py", "--exit-on", "TERM")),
                  w)
        runs.append(run)
        os.close(w)
        run.out.wait(r"^ready pid=")
        for n in range(1, 6):
            os.kill(run.pid, signal.SIGUSR1)
            run.out.wait("^signal SIGUSR1 role=main ", timeout=5, count=n)
        t0 = time.monotonic()
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait(10) == 143
        assert time.monotonic() - t0 < 5
    finally:
        os.close(r)


@pytest.mark.parametrize("mode", MODES)
def test_stalled_log_budget_kill_and_exit(launcher: Launcher, runs: list[Run],
                                          mode: str) -> None:
    """Steps:
    1. gracerun -t 1 (no -v: its only line is the budget warning) runs a service
       that ignores SIGTERM, with stderr on a full pipe nobody reads;
    2. SIGTERM: the budget runs out, gracerun SIGKILLs the service, logs its
       warning into the full pipe, and still exits 137 within 1 + 3 s.
    """
    r, w = stalled_pipe()
    try:
        run = Run(launcher, mode, gracerun("-t", "1", cmd=prog("sigrecorder.py", "--ignore",
                                                               "TERM")), w)
        runs.append(run)
        os.close(w)
        run.out.wait(r"^ready pid=")
        t0 = time.monotonic()
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait(10) == 137
        assert time.monotonic() - t0 < 4
    finally:
        os.close(r)


def test_lines_dropped_when_full_are_counted_and_reported(launcher: Launcher,
                                                          runs: list[Run]) -> None:
    """Steps:
    1. gracerun -v runs rtcount.py with stderr on a full pipe nobody reads;
    2. 3,000 SIGRTMIN+1: every one is forwarded (the service counts 3,000) while
       their 3,000 log lines (about 200 KB) overflow gracerun's queue;
    3. the test starts reading the pipe: gracerun's lines flow again, and it
       reports how many it dropped (lines=N, N > 0);
    4. SIGTERM: the service exits 0, so does gracerun.
    """
    r, w = stalled_pipe()
    run = Run(launcher, "subreaper", gracerun("-v", cmd=prog("rtcount.py", RT)), w)
    runs.append(run)
    os.close(w)
    run.out.wait(r"^ready pid=")
    for _ in range(3000):
        os.kill(run.pid, RT)
    run.out.wait("^count 3000$", timeout=30)
    text: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(r, 65536):
            text.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    wait_for(lambda: b"log lines dropped" in b"".join(text), 15, "the report of dropped lines")
    line = next(x for x in b"".join(text).split(b"\n") if b"log lines dropped" in x).decode()
    dropped = int(line.split("lines=")[1].split()[0])
    assert 0 < dropped < 3000, line
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait(10) == 0
    reader.join(10)
    os.close(r)
