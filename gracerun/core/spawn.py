"""Launching a process: its own process group, the signal state it should
have, and (with a terminal) the terminal's foreground.

Two launches, one function.  The service gets what gracerun itself was
given (`inherit=True`): the signal dispositions and mask of gracerun's
parent, recorded by signals.hold() before gracerun changed anything, its
closed fds 0-2 closed again, its nice value; exec(2) would have passed all
that on if gracerun were not in between, and tini and dumb-init do.  Only
what Python itself changed at start-up and gracerun cannot tell from an
inherited setting (SIGPIPE and SIGXFSZ ignored) is reset to the default.
Hooks and other helpers gracerun runs for itself (`inherit=False`) start
clean: every signal at its default action, an empty mask, gracerun's
priority lowered by `nice`.

The exit status is never collected here: the reaper is the only caller of
waitpid, so this module only returns PIDs (see reaper.py for why).

Why fork + exec and not posix_spawn.  posix_spawn (vfork + exec in glibc) is
faster, but it cannot hand the child an exact signal state: glibc sets its
two internal signals (32 and 33) to SIG_IGN in the spawned child and refuses
to put them in `setsigdef`, and exec keeps SIG_IGN, so every service would
start with them ignored (tini, dumb-init and catatonit fork, and leave none).
It also cannot chdir or take the terminal's foreground between setpgid and
exec.  So the child is forked, and before exec it:

    setpgid(0, 0)                 its own process group
    tcsetpgrp(tty, its group)     with a terminal: the foreground (SIGTTOU is
                                  still blocked, as in gracerun: allowed)
    dup2 / close / chdir          redirections, closed stdio, working directory
    SIG_IGN / SIG_DFL each signal handlers become SIG_DFL at exec anyway; this
                                  sets what exec keeps: SIG_IGN
    the signal mask               gracerun blocks everything around the fork
    setpriority                   the inherited nice value (a helper's `nice` is
                                  applied by gracerun once the exec is done)

All signals are blocked in gracerun across the fork, so nothing can run in
the child before its state is set.  Errors before exec come back through a
close-on-exec pipe, as in subprocess: an errno and a stage, or the text of
any other exception.  The cost is about a millisecond per launch, paid once
for the service.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gracerun.core import linux, signals
from gracerun.core.signals import SignalState
from gracerun.core.tuples import NamedTuple
from gracerun.errors import LaunchError

if TYPE_CHECKING:
    from gracerun.core.reaper import Reaper

# Every signal whose disposition can be changed (Python refuses glibc's
# internal 32 and 33, which fork + exec leave at their default anyway).
RESETTABLE_SIGNALS = tuple(
    s for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP)
)
_ALL_SIGNALS = signal.valid_signals()
# Helpers (hooks, probes: Child) run this much nicer than the service.
HELPER_NICE = 10


class Redirect(NamedTuple):
    """File descriptors for the child's stdin/stdout/stderr (None: inherit)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


_NO_REDIRECT = Redirect()


class _Plan:
    """Everything the forked child does before exec, decided in the parent.

    (A plain class: a NamedTuple class costs a tenth of a millisecond at start-up.)
    """

    __slots__ = ("argv", "close", "cwd", "env", "new_group", "priority", "redirect",
                 "signals", "tty_fd")

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None,
                 new_group: bool, tty_fd: int | None, redirect: Redirect,
                 close: frozenset[int], priority: int | None, signals: SignalState) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.new_group = new_group
        self.tty_fd = tty_fd
        self.redirect = redirect
        self.close = close  # fds 0-2 to close (gracerun found them closed)
        self.priority = priority  # the nice value to set before exec, None to keep gracerun's
        self.signals = signals


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    new_group: bool = True,
    tty_fd: int | None = None,
    redirect: Redirect = _NO_REDIRECT,
    inherit: bool = True,
    nice: int = 0,
) -> int:
    """Start argv[0] (searched on PATH) and return its PID.

    `inherit`: the process gets the signal state, closed stdio and nice value
    gracerun inherited (the service); False: default signal dispositions and
    an empty mask (hooks and helpers).  `nice` is added to the inherited nice
    value (e.g. 10 for hooks, so that they cannot starve gracerun's timers)
    and set on the child's group (its process, without `new_group`) once
    it has exec'd.

    Raises LaunchError with exit code 127 (not found, or an empty name) or
    126 (found but not executable, an argument or environment that cannot be
    passed to exec, or no process could be forked).  When `tty_fd` is a
    terminal and `new_group` is true, the child's process group becomes the
    terminal's foreground group.
    """
    pending = _fork(argv, env, cwd, new_group, tty_fd, redirect, inherit, nice, wait=True)
    try:
        report = _read_report(pending.err_r)
    finally:
        os.close(pending.err_r)
    return pending.conclude(report)


class _Pending:
    """A forked child whose exec report (the close-on-exec pipe) is still to be read."""

    __slots__ = ("argv", "cwd", "env", "err_r", "group", "nice_after", "pid")

    def __init__(self, pid: int, err_r: int, argv: list[str], env: dict[str, str],
                 cwd: str | None, group: bool, nice_after: int | None) -> None:
        self.pid = pid
        self.err_r = err_r
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.group = group
        self.nice_after = nice_after  # the nice value to set once it has exec'd

    def conclude(self, report: bytes) -> int:
        """The PID when the exec succeeded (empty report); LaunchError otherwise."""
        if not report:
            if self.nice_after is not None:
                # The whole group, so that what it forked meanwhile is included.
                _renice(os.PRIO_PGRP if self.group else os.PRIO_PROCESS, self.pid,
                        self.nice_after)
            return self.pid
        # The child failed before exec and has exited 127; the reaper collects it.
        code, stage = int.from_bytes(report[:4], "little"), report[4:5]
        if stage == b"C":
            raise LaunchError(f"cannot change to working directory {self.cwd!r}: "
                              f"{os.strerror(code)}", 126)
        if stage == b"X":
            detail = report[5:].decode(errors="replace")
            raise LaunchError(f"cannot run {self.argv[0]!r}: {detail}", 126)
        raise _launch_error(self.argv[0], code, self.env)


def _fork(argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None,
          new_group: bool, tty_fd: int | None, redirect: Redirect, inherit: bool,
          nice: int, *, wait: bool) -> _Pending:
    """Fork the child; it execs on its own.  `wait`: the caller blocks on the exec
    report, so the child keeps gracerun's priority until then and is reniced
    after (at a low priority among busy hooks, its way to exec took up to 100 ms
    per launch); a caller that does not block (Child.launch) has it reniced
    before its exec, so that nothing of it ever runs at gracerun's priority."""
    if not argv:
        raise LaunchError("no command given", 2)
    command = list(argv)
    environ = dict(os.environ if env is None else env)
    _check(command, environ, cwd)
    base = linux.inherited_nice()  # None: gracerun runs at the nice value it inherited
    target = None
    if nice:
        target = (os.getpriority(os.PRIO_PROCESS, 0) if base is None else base) + nice
    redirected = {t for t, fd in zip((0, 1, 2), redirect, strict=True) if fd is not None}
    plan = _Plan(command, environ, cwd, new_group, tty_fd, redirect,
                 linux.closed_stdio() - redirected if inherit else frozenset(),
                 base if not nice else (None if wait else target),
                 signals.inherited() if inherit else signals.CLEAN)
    try:
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        raise LaunchError(f"cannot run {command[0]!r}: {exc.strerror}", 126) from None
    pid = -1
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _child(plan, err_w)  # never returns
    except OSError as exc:
        os.close(err_r)
        os.close(err_w)
        # EAGAIN under a pids cgroup limit or RLIMIT_NPROC, ENOMEM.
        raise LaunchError(f"cannot run {command[0]!r}: cannot fork a process: "
                          f"{exc.strerror}", 126) from None
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(err_w)
    return _Pending(pid, err_r, command, environ, cwd, new_group, target if wait else None)


def _check(argv: list[str], env: Mapping[str, str], cwd: str | None) -> None:
    """What exec cannot take, refused in the parent with a reason (the child
    could only report it as a bare exception)."""
    if not argv[0]:
        raise LaunchError("cannot run '': the command name is empty", 127)
    for i, arg in enumerate(argv):
        if "\0" in arg:
            raise LaunchError(f"cannot run {argv[0]!r}: argument {i} contains a NUL byte", 126)
    for key, value in env.items():
        if not key or "=" in key or "\0" in key:
            raise LaunchError(f"cannot run {argv[0]!r}: invalid environment variable name "
                              f"{key!r}", 126)
        if "\0" in value:
            raise LaunchError(f"cannot run {argv[0]!r}: environment variable {key} "
                              f"contains a NUL byte", 126)
    if cwd is not None and "\0" in cwd:
        raise LaunchError(f"cannot change to working directory {cwd!r}: it contains a NUL "
                          f"byte", 126)


def _child(plan: _Plan, err_w: int) -> None:
    """In the forked child: only syscalls until exec; no logging, no imports."""
    stage = b"E"
    try:
        if plan.new_group:
            os.setpgid(0, 0)
            if plan.tty_fd is not None:
                try:
                    os.tcsetpgrp(plan.tty_fd, os.getpgrp())
                except OSError:
                    pass  # not our controlling terminal: carry on without job control
        for fd, target in zip(plan.redirect, (0, 1, 2), strict=True):
            if fd is not None:
                os.dup2(fd, target)
        for fd in plan.close:
            os.close(fd)
        if plan.cwd is not None:
            stage = b"C"
            os.chdir(plan.cwd)
            stage = b"E"
        ignored = plan.signals.ignored
        for signum in RESETTABLE_SIGNALS:
            try:
                signal.signal(signum, signal.SIG_IGN if signum in ignored else signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, plan.signals.blocked)
        if plan.priority is not None:
            _renice(os.PRIO_PROCESS, 0, plan.priority)
        os.execvpe(plan.argv[0], plan.argv, plan.env)
    except OSError as exc:
        os.write(err_w, (exc.errno or errno.EINVAL).to_bytes(4, "little") + stage)
    except BaseException as exc:
        text = f"{type(exc).__name__}: {exc}".encode(errors="replace")[:_MAX_DETAIL]
        os.write(err_w, bytes(4) + b"X" + text)
    finally:
        os._exit(127)


_MAX_DETAIL = 512


def _renice(which: int, who: int, value: int) -> None:
    try:
        os.setpriority(which, who, max(-20, min(19, value)))
    except OSError:
        pass  # gone already, or going back up is not allowed: it keeps gracerun's


def _read_report(fd: int) -> bytes:
    """The child's failure report; b"" when exec succeeded (EOF via CLOEXEC)."""
    data = b""
    while len(data) < 5 + _MAX_DETAIL:
        chunk = os.read(fd, 5 + _MAX_DETAIL - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _launch_error(command: str, err: int, env: Mapping[str, str]) -> LaunchError:
    reason = os.strerror(err) if err else "unknown error"
    if err == errno.ENOENT:
        if _find(command, env):
            return LaunchError(f"cannot run {command!r}: the file exists but its interpreter "
                               f"(#! line) was not found", 127)
        return LaunchError(f"cannot run {command!r}: command not found", 127)
    if err in (errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.EISDIR):
        return LaunchError(f"cannot run {command!r}: {reason} (not executable)", 126)
    return LaunchError(f"cannot run {command!r}: {reason}", 126)


def _find(command: str, env: Mapping[str, str]) -> bool:
    if "/" in command:
        return os.path.isfile(command)
    path = env.get("PATH", os.defpath)
    return any(os.path.isfile(os.path.join(d or ".", command)) for d in path.split(os.pathsep))


class Child:
    """A helper process (exec hook, exec probe) whose exit comes from the one reaper.

        child = Child.start(argv, reaper, loop, ...)   # spawned and watched at once
        code = await child.wait()                      # on the run's loop
        child.kill()                                   # SIGKILL its whole group

    No asyncio import here: the future comes from the loop passed in, so the
    core stays loadable without asyncio (see loop.py).  A wait that is
    cancelled (a hook's timeout) kills the child's group before it returns.

    Helpers are gracerun's own tools, not the service: they start clean (every
    signal at its default action, an empty mask, whatever gracerun inherited)
    and HELPER_NICE lower in priority than the service, so that a hundred
    CPU-heavy hooks cannot starve gracerun's timers (the budget, the stop grace).
    """

    def __init__(self, pid: int, future: Any) -> None:
        self.pid = pid
        self._exit = future

    @classmethod
    def start(cls, argv: Sequence[str], reaper: Reaper, loop: Any, *,
              env: Mapping[str, str] | None = None, cwd: str | None = None,
              redirect: Redirect = _NO_REDIRECT) -> Child:
        """Spawn in its own process group and register its exit in the same step.

        Raises LaunchError as spawn() does.
        """
        future = loop.create_future()
        pid = spawn(argv, env=env, cwd=cwd, redirect=redirect, inherit=False, nice=HELPER_NICE)

        def exited(_pid: int, code: int) -> None:
            if not future.done():
                future.set_result(code)

        reaper.watch(pid, exited)
        return cls(pid, future)

    @classmethod
    async def launch(cls, argv: Sequence[str], reaper: Reaper, loop: Any, *,
                     env: Mapping[str, str] | None = None, cwd: str | None = None,
                     redirect: Redirect = _NO_REDIRECT) -> Child:
        """start() that never blocks the loop: the exec report is awaited, not read.

        The pipeline starts all of a parallel phase's hooks in one loop turn;
        with start(), each waited for its child's exec, and a hundred children
        on a busy CPU held the loop for seconds, so the pre-stop deadline and
        the budget fired late.  Here the child is reniced before its exec (it
        never runs at gracerun's priority) and the loop keeps its timers while
        the children get there.  Raises LaunchError as spawn() does.
        """
        future = loop.create_future()
        pending = _fork(argv, env, cwd, True, None, redirect, False, HELPER_NICE, wait=False)

        def exited(_pid: int, code: int) -> None:
            if not future.done():
                future.set_result(code)

        reaper.watch(pending.pid, exited)  # before any await: the exit cannot be missed
        report = loop.create_future()

        def readable() -> None:
            loop.remove_reader(pending.err_r)
            try:
                # The child's report is one write of at most 517 bytes (atomic
                # under PIPE_BUF); an exec closes the pipe empty.
                data = os.read(pending.err_r, 5 + _MAX_DETAIL)
            except OSError:
                data = b""
            if not report.done():
                report.set_result(data)

        loop.add_reader(pending.err_r, readable)
        try:
            data = await report
        except BaseException:  # cancelled while the child was on its way to exec
            loop.remove_reader(pending.err_r)
            _kill_group(pending.pid)
            raise
        finally:
            os.close(pending.err_r)
        pending.conclude(data)
        return cls(pending.pid, future)

    async def wait(self) -> int:
        """The exit code (128+N for signal N); kills the group if cancelled."""
        try:
            return int(await self._exit)
        except BaseException:  # CancelledError included: never leave it running
            self.kill()
            raise

    def kill(self) -> None:
        _kill_group(self.pid)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def spawn_service(argv: Sequence[str]) -> int:
    """Launch the service (own group, inherited state, the terminal's foreground)."""
    return spawn(argv, new_group=True, tty_fd=foreground_tty())


def foreground_tty() -> int | None:
    """stdin, when it is a terminal whose foreground group is ours to hand over."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None
