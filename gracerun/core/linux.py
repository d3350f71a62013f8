"""Process set-up: what gracerun inherited that it must not lose, and the
Linux-only attributes it sets on itself.

What the service inherits.  A service under tini or dumb-init starts with
what the wrapper itself was given: a closed stdout stays closed, a nice value
stays.  gracerun needs some of these for itself (an fd 0-2 to log to, a
higher priority), so it records them here first and spawn.py gives the
service back the recorded state (signals.py does the same for signals).

prctl(2) goes through _ctypes, loaded only when one of those is needed (not
PID 1, or -p).
"""

from __future__ import annotations

import os
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

# How much gracerun raises its own priority (nice -5 relative to what it
# inherited): under CPU load its timers (the budget, the stop grace) are late
# by the time it waits for a CPU.  A weight about 3x a nice-0 process's.
_OWN_PRIORITY_BOOST = 5

_closed_stdio: frozenset[int] = frozenset()
_inherited_nice: int | None = None


def fill_closed_stdio() -> frozenset[int]:
    """Open /dev/null on each of fd 0, 1, 2 that is closed; return which were.

    Call first thing: with fd 1 closed, Python's sys.stdout is None (and the
    exit path raised AttributeError), and the first file gracerun or libuv
    opens would land on fd 0-2 (libuv aborts when it must close such an fd).
    """
    global _closed_stdio
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            # The lowest free descriptor: exactly fd, since the lower ones are open.
            os.open(os.devnull, os.O_RDWR)
            closed.append(fd)
    for fd in closed:
        name = ("stdin", "stdout", "stderr")[fd]
        if getattr(sys, name) is None:  # lives as long as the process: no `with`
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))  # noqa: SIM115
    _closed_stdio = frozenset(closed)
    return _closed_stdio


def closed_stdio() -> frozenset[int]:
    """The fds 0-2 gracerun found closed at start (the service gets them closed too)."""
    return _closed_stdio


def raise_own_priority() -> bool:
    """Lower gracerun's nice value a little (after recording the inherited one).

    Needs CAP_SYS_NICE or RLIMIT_NICE (root in a default Docker container has
    neither): returns False and changes nothing without them.
    """
    global _inherited_nice
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if _inherited_nice is None:
        _inherited_nice = current
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(-20, _inherited_nice - _OWN_PRIORITY_BOOST))
    except OSError:
        return False
    return True


def inherited_nice() -> int | None:
    """The nice value gracerun started with, when it changed its own (else None)."""
    return _inherited_nice


def _prctl(option: int, arg: int) -> None:
    """prctl(option, arg, 0, 0, 0), or OSError.

    Through `_ctypes`, the C half of ctypes, when it has call_function (CPython
    3.11-3.13 do): `import ctypes` builds its whole type system, 1.6 ms and
    190 kB more before the spawn, for this one call.  The C call leaves no
    errno behind, so a failure is repeated through ctypes for the reason (both
    options are idempotent).
    """
    try:
        import _ctypes

        call = _ctypes.call_function
        this = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # None: the process
        function = _ctypes.dlsym(this, "prctl")
    except (ImportError, AttributeError, OSError):
        pass
    else:
        if call(function, (option, arg, 0, 0, 0)) == 0:
            return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def become_subreaper() -> None:
    """Make orphaned descendants re-parent to us instead of to init (Linux >= 3.4)."""
    _prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send signum to us when our parent exits."""
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os.kill(os.getpid(), signum)
