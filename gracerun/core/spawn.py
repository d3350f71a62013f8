"""Launching a process clean: its own process group, default signal dispositions,
an empty signal mask, and (with a terminal) the terminal's foreground.

The exit status is never collected here: the reaper is the only caller of
waitpid, so this module only returns PIDs (see reaper.py for why).

Why fork + exec and not posix_spawn.  posix_spawn (vfork + exec in glibc) is
faster, but it cannot hand the child a clean signal state: glibc sets its two
internal signals (32 and 33) to SIG_IGN in the spawned child and refuses to
put them in `setsigdef`, and exec keeps SIG_IGN, so every service would start
with them ignored (tini, dumb-init and catatonit fork, and leave none).  It
also cannot chdir or take the terminal's foreground between setpgid and exec.
So the child is forked, and before exec it:

    setpgid(0, 0)                 its own process group
    tcsetpgrp(tty, its group)     with a terminal: the foreground (SIGTTOU is
                                  still ignored, inherited from gracerun)
    dup2 / chdir                  redirections and working directory
    SIG_DFL for every signal      handlers become SIG_DFL at exec anyway; this
                                  undoes SIG_IGN, which exec would keep
    empty signal mask             gracerun blocks everything around the fork

All signals are blocked in gracerun across the fork, so no Python handler can
run in the child (it would write to gracerun's own wakeup socket).  Exec
errors come back through a close-on-exec pipe, as in subprocess.  The cost is
about a millisecond per launch, paid once for the service.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from gracerun.errors import LaunchError

if TYPE_CHECKING:
    from gracerun.core.reaper import Reaper

# Every signal whose disposition can be changed (Python refuses glibc's
# internal 32 and 33, which fork + exec leave at their default anyway).
RESETTABLE_SIGNALS = tuple(
    s for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP)
)
_ALL_SIGNALS = signal.valid_signals()


class Redirect(NamedTuple):
    """File descriptors for the child's stdin/stdout/stderr (None: inherit)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


_NO_REDIRECT = Redirect()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    new_group: bool = True,
    tty_fd: int | None = None,
    redirect: Redirect = _NO_REDIRECT,
) -> int:
    """Start argv[0] (searched on PATH) and return its PID.

    Raises LaunchError with exit code 127 (not found) or 126 (found but not
    executable).  When `tty_fd` is a terminal and `new_group` is true, the
    child's process group becomes the terminal's foreground group.
    """
    if not argv:
        raise LaunchError("no command given", 2)
    command = list(argv)
    environ = dict(os.environ if env is None else env)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = -1
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _ALL_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _child(command, environ, cwd, new_group, tty_fd, redirect, err_w)  # never returns
    finally:
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(err_w)
    try:
        report = _read_report(err_r)
    finally:
        os.close(err_r)
    if not report:
        return pid
    # The child failed before exec and has exited 127; the reaper collects it.
    code, stage = int.from_bytes(report[:4], "little"), report[4:5]
    if stage == b"C":
        raise LaunchError(f"cannot change to working directory {cwd!r}: {os.strerror(code)}", 126)
    raise _launch_error(command[0], code, environ)


def _child(argv: list[str], env: dict[str, str], cwd: str | None, new_group: bool,
           tty_fd: int | None, redirect: Redirect, err_w: int) -> None:
    """In the forked child: only syscalls until exec; no logging, no imports."""
    stage = b"E"
    try:
        if new_group:
            os.setpgid(0, 0)
            if tty_fd is not None:
                try:
                    os.tcsetpgrp(tty_fd, os.getpgrp())
                except OSError:
                    pass  # not our controlling terminal: carry on without job control
        for fd, target in ((redirect.stdin, 0), (redirect.stdout, 1), (redirect.stderr, 2)):
            if fd is not None:
                os.dup2(fd, target)
        if cwd is not None:
            stage = b"C"
            os.chdir(cwd)
            stage = b"E"
        for signum in RESETTABLE_SIGNALS:
            try:
                signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        os.write(err_w, (exc.errno or errno.EINVAL).to_bytes(4, "little") + stage)
    finally:
        os._exit(127)


def _read_report(fd: int) -> bytes:
    """The child's 5-byte failure report; b"" when exec succeeded (EOF via CLOEXEC)."""
    data = b""
    for _ in range(8):
        try:
            chunk = os.read(fd, 5 - len(data))
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
        if len(data) == 5:
            break
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
        pid = spawn(argv, env=env, cwd=cwd, redirect=redirect)

        def exited(_pid: int, code: int) -> None:
            if not future.done():
                future.set_result(code)

        reaper.watch(pid, exited)
        return cls(pid, future)

    async def wait(self) -> int:
        """The exit code (128+N for signal N); kills the group if cancelled."""
        try:
            return int(await self._exit)
        except BaseException:  # CancelledError included: never leave it running
            self.kill()
            raise

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
