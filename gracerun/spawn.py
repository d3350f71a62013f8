"""Launching a process clean: its own process group, default signal dispositions,
an empty signal mask, and (with a terminal) the terminal's foreground.

The exit status is never collected here: the reaper is the only caller of
waitpid, so this module only returns PIDs (see reaper.py for why).

Two launch paths:
- `os.posix_spawnp` (vfork + exec in glibc) is the fast default.  It resets
  every catchable signal to its default action (Python ignores SIGPIPE and
  SIGXFSZ, and we install handlers for the rest) and clears the mask, and it
  reports exec errors (ENOENT, EACCES, ENOEXEC) synchronously as OSError.
- fork + exec, only when posix_spawn cannot do what is asked: a working
  directory (no chdir file action in Python's posix_spawn) or taking the
  terminal's foreground, which must happen in the child between setpgid and
  exec, or the service could read from the terminal while still in the
  background and be stopped by SIGTTIN.  Exec errors come back through a
  close-on-exec pipe, as in subprocess.
"""

from __future__ import annotations

import errno
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gracerun.errors import LaunchError

# Every signal a process can catch or ignore.  SIGKILL and SIGSTOP cannot be
# changed; 32 and 33 belong to glibc's threading internals.
RESETTABLE_SIGNALS = frozenset(
    s for s in range(1, signal.NSIG) if s not in (signal.SIGKILL, signal.SIGSTOP, 32, 33)
)


@dataclass(frozen=True)
class Redirect:
    """File descriptors for the child's stdin/stdout/stderr (None: inherit)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    new_group: bool = True,
    tty_fd: int | None = None,
    redirect: Redirect = Redirect(),
) -> int:
    """Start argv[0] (searched on PATH) and return its PID.

    Raises LaunchError with exit code 127 (not found) or 126 (found but not
    executable).  When `tty_fd` is a terminal and `new_group` is true, the
    child's process group becomes the terminal's foreground group.
    """
    if not argv:
        raise LaunchError("no command given", 2)
    environ = dict(os.environ if env is None else env)
    if cwd is None and tty_fd is None:
        return _posix_spawn(argv, environ, new_group, redirect)
    return _fork_exec(argv, environ, cwd, new_group, tty_fd, redirect)


def _posix_spawn(
    argv: Sequence[str], env: dict[str, str], new_group: bool, redirect: Redirect
) -> int:
    actions = [
        (os.POSIX_SPAWN_DUP2, fd, target)
        for fd, target in ((redirect.stdin, 0), (redirect.stdout, 1), (redirect.stderr, 2))
        if fd is not None
    ]
    group: dict[str, int] = {"setpgroup": 0} if new_group else {}
    try:
        return os.posix_spawnp(
            argv[0],
            list(argv),
            env,
            file_actions=actions or None,
            setsigmask=(),
            setsigdef=RESETTABLE_SIGNALS,
            **group,  # type: ignore[arg-type]
        )
    except OSError as exc:
        raise _launch_error(argv[0], exc.errno or 0) from None


def _fork_exec(
    argv: Sequence[str],
    env: dict[str, str],
    cwd: str | None,
    new_group: bool,
    tty_fd: int | None,
    redirect: Redirect,
) -> int:
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # child: no Python-level locks, no logging, only syscalls until exec
        try:
            os.close(err_r)
            if new_group:
                os.setpgid(0, 0)
                if tty_fd is not None:
                    # SIGTTOU is still ignored here (inherited from gracerun),
                    # so a background group may take the foreground.
                    try:
                        os.tcsetpgrp(tty_fd, os.getpgrp())
                    except OSError:
                        pass  # not our controlling terminal: carry on without job control
            for fd, target in ((redirect.stdin, 0), (redirect.stdout, 1), (redirect.stderr, 2)):
                if fd is not None:
                    os.dup2(fd, target)
            if cwd is not None:
                os.chdir(cwd)
            for signum in RESETTABLE_SIGNALS:
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.execvpe(argv[0], list(argv), env)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
            os.write(err_w, code.to_bytes(4, "little") + (b"C" if cwd and code == errno.ENOENT
                                                          and not os.path.isdir(cwd) else b"E"))
        finally:
            os._exit(127)
    os.close(err_w)
    try:
        data = b""
        for _ in range(8):  # EOF arrives when exec succeeds (CLOEXEC) or the child exits
            chunk = os.read(err_r, 5 - len(data))
            if not chunk:
                break
            data += chunk
            if len(data) == 5:
                break
    finally:
        os.close(err_r)
    if not data:
        return pid
    # The child failed before exec and exits 127 at once; the reaper collects it.
    code = int.from_bytes(data[:4], "little")
    if data[4:5] == b"C":
        raise LaunchError(f"cannot change to working directory {cwd!r}: {os.strerror(code)}", 126)
    raise _launch_error(argv[0], code)


def _launch_error(command: str, err: int) -> LaunchError:
    reason = os.strerror(err) if err else "unknown error"
    if err == errno.ENOENT:
        return LaunchError(f"cannot run {command!r}: command not found", 127)
    if err in (errno.EACCES, errno.EPERM, errno.ENOEXEC, errno.EISDIR):
        return LaunchError(f"cannot run {command!r}: {reason} (not executable)", 126)
    return LaunchError(f"cannot run {command!r}: {reason}", 126)
