"""Helpers for the PID-1 tests: polling with a deadline, /proc, and started processes.

Synchronisation is by handshake and polling only: a child prints "ready", the
test waits for that line or polls a condition with `wait_for` against a
time.monotonic() deadline.  Nothing here sleeps to let something happen.

Every process a test starts carries a tag in its environment (TAG_VAR), which
its descendants inherit, so teardown can find them even after they leave the
process group with setsid (see Launcher.cleanup).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[1]
PROGS = Path(__file__).resolve().parent / "progs"
PY = sys.executable  # the interpreter itself: `python3` on PATH may be a shim that forks
TAG_VAR = "GRACERUN_TEST_TAG"

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
    """Poll predicate until it returns something truthy; return that value.

    Raises AssertionError naming `what` when the monotonic deadline passes.
    The short sleeps between polls are the polling interval, not synchronisation.
    """
    deadline = time.monotonic() + timeout
    interval = 0.001
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for "
                                 f"{what or getattr(predicate, '__name__', 'a condition')}")
        time.sleep(interval)
        interval = min(interval * 2, 0.02)


def run_checkout_python(code: str) -> str:
    """stdout of `code` in a fresh interpreter on this checkout (cwd too), with -S:
    an editable install's import hook (site) imports pathlib, and with it
    urllib.parse, before any of gracerun's code runs, which would hide what
    gracerun itself imports."""
    return subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                          check=True, timeout=30, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout


def prog(name: str, *args: object) -> list[str]:
    """argv running tests/progs/<name> with this interpreter."""
    return [PY, str(PROGS / name), *map(str, args)]


def gracerun(*opts: str, cmd: Sequence[str]) -> list[str]:
    """argv for `gracerun [OPTIONS] -- CMD...`."""
    return [PY, "-m", "gracerun", *opts, "--", *cmd]


def signame(num: int) -> str:
    return signal.Signals(num).name


# ------------------------------------------------------------------ /proc


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/PID/stat the tests need."""

    pid: int
    comm: str
    state: str  # R, S, D, T, Z, ...
    ppid: int
    pgid: int
    sid: int
    tpgid: int  # foreground process group of the controlling terminal, -1 if none


def stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm is in parentheses and may itself contain spaces and parentheses.
    head, _, tail = raw.rpartition(")")
    fields = tail.split()
    return Stat(pid=pid, comm=head.partition("(")[2], state=fields[0], ppid=int(fields[1]),
                pgid=int(fields[2]), sid=int(fields[3]), tpgid=int(fields[5]))


def all_stats() -> list[Stat]:
    stats = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = stat(int(entry))
            if st is not None:
                stats.append(st)
    return stats


def children(pid: int) -> list[Stat]:
    """Every child of pid, zombies included (this kernel has no /proc/PID/task/*/children)."""
    return [st for st in all_stats() if st.ppid == pid]


def zombies(pid: int) -> list[Stat]:
    return [st for st in children(pid) if st.state == "Z"]


def child_by_nspid(parent: int, nspid: int) -> int | None:
    """The child of parent whose PID in its own PID namespace is nspid (the PID
    it printed), as a PID seen from here.  Not by PID order: PIDs wrap."""
    for st in children(parent):
        try:
            if int(status(st.pid)["NSpid"].split()[-1]) == nspid:
                return st.pid
        except (OSError, KeyError):
            continue
    return None


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    st = stat(pid)
    return st is not None and st.state != "Z"


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict of field -> value."""
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.rstrip("\n").split(":\t", 1) for line in fh if ":\t" in line)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [arg.decode(errors="replace") for arg in fh.read().split(b"\0") if arg]
    except (FileNotFoundError, ProcessLookupError):
        return []


def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries TAG_VAR=tag (zombies have no environment)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def set_child_subreaper() -> None:
    """Make orphans of the processes we start re-parent to us, not to this machine's PID 1.

    The PID 1 of the machine these tests run on does not reap, so anything
    orphaned onto it would stay a zombie for good.  As our own subreaper we
    reap what teardown kills (Launcher.cleanup), by PID.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


# ----------------------------------------------------------------- output


class Lines:
    """Lines read from a pipe or a pty master by a background thread, for waiting on."""

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._lines: list[str] = []
        self._times: list[float] = []  # time.monotonic() when each line was read
        self._partial = b""
        self._cond = threading.Condition()
        self.closed = False
        self._thread = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:  # EIO: a pty master whose slave side is all closed
                data = b""
            with self._cond:
                if not data:
                    if self._partial:
                        self._lines.append(self._partial.decode(errors="replace"))
                    self.closed = True
                    self._cond.notify_all()
                    return
                self._partial += data
                *done, self._partial = self._partial.split(b"\n")
                self._lines.extend(line.rstrip(b"\r").decode(errors="replace") for line in done)
                self._times.extend([time.monotonic()] * len(done))
                self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    def matching(self, pattern: str) -> list[re.Match[str]]:
        regex = re.compile(pattern)
        return [m for m in map(regex.search, self.lines) if m]

    def wait(self, pattern: str, timeout: float = 10.0, count: int = 1) -> list[re.Match[str]]:
        """Wait until `count` lines match `pattern` (re.search); return the matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in map(regex.search, self._lines) if m]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(
                        f"{'output ended' if self.closed else f'timed out after {timeout:g}s'}"
                        f" with {len(found)} of {count} line(s) matching {pattern!r}; "
                        f"output so far:\n{''.join(x + chr(10) for x in self._lines[-40:])}")
                self._cond.wait(left)

    def arrival(self, pattern: str, timeout: float = 10.0, count: int = 1) -> float:
        """When (time.monotonic()) the count-th line matching pattern was read."""
        self.wait(pattern, timeout, count)
        regex = re.compile(pattern)
        with self._cond:
            found = [t for line, t in zip(self._lines, self._times, strict=True)
                     if regex.search(line)]
        return found[count - 1]

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


# --------------------------------------------------------------- processes


class Proc:
    """A process a test started in a new session (so its PID is also its group's)."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str], cwd: Path,
                 tty: bool = False) -> None:
        self.argv = list(argv)
        self.master: int | None = None
        if tty:
            self.master, slave = os.openpty()
            # No echo: a typed ^C would otherwise be echoed into the next output line.
            attrs = termios.tcgetattr(slave)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(slave, termios.TCSANOW, attrs)
            self.popen = subprocess.Popen(self.argv, stdin=slave, stdout=slave, stderr=slave,
                                          env=env, cwd=cwd, start_new_session=True)
            os.close(slave)
            self.out = self.err = Lines(self.master, "pty")
        else:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env, cwd=cwd, start_new_session=True)
            assert self.popen.stdout is not None and self.popen.stderr is not None
            self.out = Lines(self.popen.stdout.fileno(), "stdout")
            self.err = Lines(self.popen.stderr.fileno(), "stderr")
        self.pid = self.popen.pid
        self.killed_by_teardown = False

    def expect(self, pattern: str, timeout: float = 10.0, count: int = 1) -> re.Match[str]:
        """Wait for the count-th stdout line matching pattern; return its match."""
        return self.out.wait(pattern, timeout, count)[count - 1]

    def send(self, num: int) -> None:
        os.kill(self.pid, num)

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the exit; return the code as a shell shows it (128+N when signalled)."""
        rc = self.popen.wait(timeout)
        self.out.join(5)
        self.err.join(5)
        return rc if rc >= 0 else 128 - rc

    @property
    def stderr(self) -> str:
        return self.err.text

    def close(self) -> None:
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        if self.master is not None:
            os.close(self.master)
            self.master = None


class Launcher:
    """Starts processes for one test and guarantees none of them outlives it."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd  # not the repo: a ./gracerun.toml there would be picked up
        self.tag = uuid.uuid4().hex
        self.procs: list[Proc] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GRACERUN_", "PYTEST_", "COV_"))}
        env["PYTHONPATH"] = str(REPO)
        env[TAG_VAR] = self.tag
        return env

    def start(self, argv: Sequence[str], *, tty: bool = False) -> Proc:
        proc = Proc(argv, env=self.env(), cwd=self.cwd, tty=tty)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = 10.0) -> tuple[int, str, str]:
        """Start argv, wait for it; return (exit code, stdout, stderr)."""
        proc = self.start(argv)
        rc = proc.wait(timeout)
        return rc, proc.out.text, proc.err.text

    def alive(self) -> list[int]:
        """Live processes started by this test (or their descendants), by tag."""
        return tagged(self.tag)

    def cleanup(self) -> list[str]:
        """Kill and reap everything this test started; return what was left behind.

        1. Every started process still running is killed with its whole group
           (the group we created with start_new_session) and waited for.
        2. Descendants that left the group (setsid daemons, orphans) are found
           by their tag and killed by PID, in rounds until none is found.
        3. Whatever of theirs was orphaned onto us (we are a subreaper) is reaped.
        Returns descriptions of processes that outlived a process which exited
        by itself: for gracerun that means it exited before its tree was gone.
        """
        stragglers: list[str] = []
        sessions = {p.pid for p in self.procs}
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.killed_by_teardown = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait(10)
        all_exited_alone = not any(p.killed_by_teardown for p in self.procs)
        deadline = time.monotonic() + 10
        seen: set[int] = set()
        while pids := tagged(self.tag):
            seen.update(pids)
            for pid in pids:
                st = stat(pid)
                if st is not None:
                    sessions.add(st.sid)
                    if all_exited_alone:
                        stragglers.append(f"{pid} {' '.join(cmdline(pid))}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"cannot kill processes left by the test: {pids}")
            time.sleep(0.01)  # give the kernel a moment to finish the SIGKILLs
        # A killed process is re-parented (its children with it) once it is a zombie.
        wait_for(lambda: all(stat(pid) is None or stat(pid).state in "ZX"  # type: ignore[union-attr]
                             for pid in seen), what="killed processes to finish exiting")
        for st in children(os.getpid()):
            if st.state == "Z" and st.sid in sessions:
                try:
                    os.waitpid(st.pid, 0)
                except ChildProcessError:
                    pass
        for proc in self.procs:
            proc.out.join(5)
            proc.err.join(5)
            proc.close()
        return sorted(set(stragglers))


def start_in_pid_namespace(launcher: Launcher, argv: Sequence[str]) -> tuple[Proc, int]:
    """Run argv as PID 1 of a new PID namespace (we are root); return unshare's
    Proc and argv's PID as seen from here, once it has exec'd.

    unshare ignores SIGTERM/SIGINT and does not forward them: signal the returned
    PID.  --kill-child: if unshare dies, so does its child, and with that PID 1
    the kernel kills the whole namespace.
    """
    proc = launcher.start(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                           *argv])
    want = list(argv)
    pid = wait_for(lambda: [c.pid for c in children(proc.pid) if cmdline(c.pid) == want],
                   what="unshare's child to exec")[0]
    nspids = status(pid)["NSpid"].split()
    assert nspids[-1] == "1", f"not PID 1 in its namespace: NSpid {nspids}"
    return proc, pid


MODES = ["subreaper", "pid1"]


def start_gracerun(launcher: Launcher, mode: str, argv: Sequence[str]) -> tuple[Proc, int]:
    """Start argv (a gracerun command) as a subreaper (mode "subreaper": not PID 1,
    so gracerun registers itself) or as PID 1 of a new PID namespace ("pid1");
    return the started process and gracerun's PID as seen from here.

    Tests read /proc from outside the namespace: the same processes, host PIDs.
    """
    if mode == "pid1":
        return start_in_pid_namespace(launcher, argv)
    proc = launcher.start(argv)
    return proc, proc.pid
