"""Signals: a clean start for the service, forwarding, group mode, rewriting, the stop signal.

Absence is never asserted by sleeping.  To show that signal X did not reach a
process, the test then sends a signal with a higher number that does arrive:
a sender forwards in the order it receives, the kernel delivers a process's
pending standard signals lowest number first, and Python runs handlers in
that order too, so a forwarded X would always be recorded before the proof.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import (
    MODES,
    Launcher,
    Proc,
    Stat,
    children,
    cmdline,
    gracerun,
    prog,
    signame,
    start_gracerun,
    stat,
    status,
    wait_for,
)
from pid1_support import child_named, start_chain

pytestmark = pytest.mark.timeout(60)

# Not forwarded, by design (gracerun/core/signals.py): uncatchable, the
# reaper's SIGCHLD, and I/O signals about gracerun itself.  Job control
# (forwarded, then gracerun stops itself) is tested in test_pid1_tty.py.
# The fault signals are forwarded when another process sends them, as
# dumb-init does (a genuine fault still ends gracerun: test_pid1_faults.py).
NOT_FORWARDED = {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ}
JOB_CONTROL = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
FAULTS = [signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGTRAP,
          signal.SIGSYS, signal.SIGABRT]
# Every catchable signal but the stop trigger, which is tested on its own.
FORWARDED = [s for s in range(1, 32) if s not in NOT_FORWARDED | JOB_CONTROL | {signal.SIGTERM}]


def recorder(*args: object) -> list[str]:
    return prog("sigrecorder.py", *args)


def ready(proc: Proc) -> dict[str, list[int]]:
    """Wait for the recorder's ready line; return its pids by role."""
    m = proc.expect(r"^ready pid=(\d+) pgid=\d+ workers=([\d,]*) daemon=([\d,]*)")
    return {"main": [int(m.group(1))],
            "workers": [int(p) for p in m.group(2).split(",") if p],
            "daemon": [int(p) for p in m.group(3).split(",") if p]}


def lines_for(proc: Proc, sig: int, role: str = "main") -> int:
    return len(proc.out.matching(f"^signal {signame(sig)} role={role} "))


def prove_absent(proc: Proc, *absent: int, proof: int = signal.SIGWINCH) -> None:
    """Send `proof` to gracerun, wait until the service records it, then check that
    none of the `absent` signals was ever recorded (see the module docstring)."""
    assert all(proof > sig for sig in absent), "the proof signal must have the higher number"
    before = lines_for(proc, proof)
    proc.send(proof)
    proc.expect(f"^signal {signame(proof)} role=main ", count=before + 1)
    for sig in absent:
        assert lines_for(proc, sig) == 0, f"{signame(sig)} reached the service"


# ------------------------------------------------- the signal state passed on


GLIBC_INTERNAL = (1 << 31) | (1 << 32)  # SigIgn bits of signals 32 and 33
# gracerun launches by fork + exec with and without a terminal (see spawn.py for
# why not posix_spawn: glibc's leaves signals 32 and 33 ignored in the child).
LAUNCH_PATHS = [pytest.param(False, id="no-tty"), pytest.param(True, id="tty")]
RTMIN = int(signal.SIGRTMIN)


def mask(*signums: int) -> int:
    """A /proc/PID/status signal mask: bit N-1 for signal N."""
    return sum(1 << (s - 1) for s in set(signums))


def start_sleep_service(launcher: Launcher, tty: bool, *launch: str,
                        opts: tuple[str, ...] = ()) -> tuple[Proc, Stat]:
    """exec gracerun from launch.py, which prepares the signal state gracerun
    inherits (launch.py --dirty, --ignore, --block), running `sleep`, which changes
    no signal state of its own.  With a terminal as stdin (launch.py --ctty)
    gracerun also hands the terminal's foreground to the service.  Returns
    gracerun and its child once the child has exec'd sleep."""
    launch = ("--ctty", *launch) if tty else launch
    proc = launcher.start(prog("launch.py", *launch, "--",
                               *gracerun(*opts, cmd=["sleep", "1000"])), tty=tty)
    child = wait_for(lambda: [c for c in children(proc.pid) if c.comm == "sleep"],
                     what="gracerun's child to exec sleep")[0]
    return proc, child


@pytest.mark.parametrize("tty", LAUNCH_PATHS)
def test_service_starts_clean(launcher: Launcher, tty: bool) -> None:
    """Steps:
    1. start gracerun from a parent that ignores and blocks nothing (but for
       Python's own SIGPIPE/SIGXFSZ ignores, which exec passes on), running sleep;
    2. /proc/<sleep>/status: nothing blocked, caught or ignored, signals 32 and 33
       included (tini and dumb-init manage this: their services show SigIgn 0),
       and so neither what gracerun blocks and ignores for itself nor Python's
       SIGPIPE/SIGXFSZ ignores leaked through;
    3. sleep leads its own process group, not gracerun's;
    4. gracerun itself blocks SIGTTIN/SIGTTOU (as good as ignoring them for its
       own terminal I/O; it takes them to forward them);
    5. SIGTERM to gracerun stops it: 143.
    """
    proc, child = start_sleep_service(launcher, tty)
    fields = status(child.pid)
    assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    assert int(fields["SigCgt"], 16) == 0, fields["SigCgt"]
    assert int(fields["SigIgn"], 16) == 0, fields["SigIgn"]
    gracerun_stat = stat(proc.pid)
    assert gracerun_stat is not None
    assert child.pgid == child.pid
    assert child.pgid != gracerun_stat.pgid
    blocked = int(status(proc.pid)["SigBlk"], 16)
    assert blocked & mask(signal.SIGTTIN, signal.SIGTTOU) == mask(signal.SIGTTIN, signal.SIGTTOU)
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


@pytest.mark.parametrize("tty", LAUNCH_PATHS)
def test_service_inherits_what_the_parent_ignored_and_blocked(launcher: Launcher,
                                                              tty: bool) -> None:
    """What a parent ignored or blocked stays so, as exec would keep it (tini).

    Steps:
    1. start gracerun from a parent that leaves HUP, INT, PIPE, XFSZ, USR2 and
       RTMIN+2 ignored and USR1, ALRM and RTMIN+1 blocked (launch.py --dirty);
    2. the service's SigIgn is exactly HUP, INT, USR2, RTMIN+2: PIPE and XFSZ are
       at their default (Python ignores them itself at start-up, so gracerun
       cannot tell an inherited ignore from its own), and nothing else;
    3. its SigBlk is exactly USR1, ALRM, RTMIN+1;
    4. SIGTERM to gracerun stops it: 143.
    """
    proc, child = start_sleep_service(launcher, tty, "--dirty")
    fields = status(child.pid)
    assert int(fields["SigIgn"], 16) == mask(signal.SIGHUP, signal.SIGINT, signal.SIGUSR2,
                                             RTMIN + 2), fields["SigIgn"]
    assert int(fields["SigBlk"], 16) == mask(signal.SIGUSR1, signal.SIGALRM,
                                             RTMIN + 1), fields["SigBlk"]
    assert int(fields["SigCgt"], 16) == 0, fields["SigCgt"]
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


@pytest.mark.parametrize("mode", MODES)
def test_tini_inherited_state_and_triggers_still_arrive(launcher: Launcher, mode: str) -> None:
    """tini's own test of this: started with SIGTTOU, SIGSEGV and SIGINT ignored
    and SIGTTIN, SIGILL and SIGTERM blocked, the service's /proc/self/status shows
    exactly that; and gracerun still gets its SIGTERM trigger (it takes its
    signals for itself; only the service gets the inherited mask).

    Steps:
    1. launch.py sets that state and execs gracerun -v -t 1 -- sleep (as a
       subreaper, or as PID 1 of a new PID namespace);
    2. the service's SigIgn is exactly TTOU, SEGV, INT; SigBlk exactly TTIN,
       ILL, TERM;
    3. SIGTERM to gracerun starts the shutdown (logged); the service has SIGTERM
       blocked, so the budget's SIGKILL ends it: 137.
    """
    argv = gracerun("-v", "-t", "1", cmd=["sleep", "1000"])
    launch = prog("launch.py", "--ignore", "TTOU", "--ignore", "SEGV", "--ignore", "INT",
                  "--block", "TTIN", "--block", "ILL", "--block", "TERM", "--", *argv)
    proc, pid = start_chain(launcher, mode, launch, argv)
    fields = status(child_named(pid, "sleep"))
    assert int(fields["SigIgn"], 16) == mask(signal.SIGTTOU, signal.SIGSEGV,
                                             signal.SIGINT), fields["SigIgn"]
    assert int(fields["SigBlk"], 16) == mask(signal.SIGTTIN, signal.SIGILL,
                                             signal.SIGTERM), fields["SigBlk"]
    os.kill(pid, signal.SIGTERM)
    proc.err.wait("shutdown started")
    assert proc.wait() == 137


@pytest.mark.parametrize("mode", MODES)
def test_nohup_sighup_is_forwarded_and_the_service_survives(launcher: Launcher,
                                                            mode: str) -> None:
    """`nohup gracerun -- cmd`: SIGHUP is ignored for the service as it was for
    gracerun, so forwarding it (dumb-init and tini do) does not kill the service.

    Steps:
    1. launch.py ignores SIGHUP and execs gracerun -v -- sleep;
    2. the service shows SIGHUP ignored;
    3. SIGHUP to gracerun: gracerun logs that it forwarded it, and the service
       is still running after that;
    4. SIGTERM ends it: 143 (not 129).
    """
    argv = gracerun("-v", cmd=["sleep", "1000"])
    proc, pid = start_chain(launcher, mode, prog("launch.py", "--ignore", "HUP", "--", *argv),
                            argv)
    child = child_named(pid, "sleep")
    assert int(status(child)["SigIgn"], 16) == mask(signal.SIGHUP)
    os.kill(pid, signal.SIGHUP)
    proc.err.wait("forwarded signal signal=SIGHUP")
    st = stat(child)
    assert st is not None and st.state not in "ZX", "the service died of the forwarded SIGHUP"
    os.kill(pid, signal.SIGTERM)
    assert proc.wait() == 143


def nice_of(pid: int) -> int:
    """The nice value, field 19 of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[16])


def test_hooks_start_clean_and_nicer(launcher: Launcher, tmp_path: Path) -> None:
    """The service gets what gracerun inherited; gracerun's own helpers do not.

    Steps:
    1. gracerun, started with the dirty signal state (launch.py --dirty), runs
       `sleep 1000` with a notify-phase exec hook that becomes `sleep 999`;
    2. the service has the inherited state, and gracerun's own nice value (it
       raised its priority: we are root) did not leak into it: nice 0;
    3. SIGTERM starts the hook: its SigIgn and SigBlk are 0 (clean defaults), and
       its nice value becomes 10 (spawn.HELPER_NICE), so that busy hooks cannot
       starve gracerun's timers;
    4. a second SIGTERM skips to the stop phase (the hook is killed): 143.
    """
    config = tmp_path / "hooks.toml"
    config.write_text('[[shutdown.notify.hooks]]\ntype = "exec"\n'
                      'command = ["sh", "-c", "exec sleep 999"]\ntimeout = "60s"\n')
    proc, child = start_sleep_service(launcher, False, "--dirty",
                                      opts=("--config", str(config), "-t", "120"))
    assert int(status(child.pid)["SigBlk"], 16) == mask(signal.SIGUSR1, signal.SIGALRM, RTMIN + 1)
    assert nice_of(child.pid) == 0
    assert nice_of(proc.pid) < 0
    proc.send(signal.SIGTERM)
    hook = wait_for(lambda: [c.pid for c in children(proc.pid)
                             if cmdline(c.pid) == ["sleep", "999"]], what="the hook")[0]
    fields = status(hook)
    assert int(fields["SigIgn"], 16) == 0, fields["SigIgn"]
    assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    wait_for(lambda: nice_of(hook) == 10, what="the hook at nice 10")
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


# ----------------------------------------------------------------- forwarding


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("group", [False, True], ids=["child", "group"])
def test_every_catchable_signal_is_forwarded(launcher: Launcher, group: bool, mode: str) -> None:
    """Steps: run the recorder (gracerun as a subreaper, or as PID 1 of a PID
    namespace, where the kernel drops signals PID 1 does not handle); for each
    signal 1-31 except NOT_FORWARDED and TERM: send it to
    gracerun, wait for the service's line; then SIGTERM (the stop trigger) is
    forwarded as the stop signal: the service dies of it, 143."""
    opts = ["-g"] if group else []
    proc, pid = start_gracerun(launcher, mode, gracerun(*opts, cmd=recorder("--exit-on", "TERM")))
    ready(proc)
    for sig in FORWARDED:
        os.kill(pid, sig)
        proc.expect(f"^signal {signame(sig)} role=main ")
    os.kill(pid, signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    assert proc.wait() == 143


def test_chld_pipe_xfsz_are_not_forwarded(launcher: Launcher) -> None:
    """Steps: send SIGCHLD, SIGPIPE, SIGXFSZ to gracerun; prove
    with SIGWINCH that none reached the service; gracerun is neither stopped nor
    killed; SIGTERM ends it."""
    proc = launcher.start(gracerun(cmd=recorder("--exit-on", "TERM")))
    ready(proc)
    quiet = (signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ)
    for sig in quiet:
        proc.send(sig)
    prove_absent(proc, *quiet)
    st = stat(proc.pid)
    assert st is not None and st.state not in "Tt"
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


# ----------------------------------------------------------------- group mode


def test_group_mode_signals_the_whole_group(launcher: Launcher) -> None:
    """Steps: the service starts 2 workers in its process group; with -g, SIGUSR1
    sent to gracerun is recorded by the service and both workers; SIGTERM stops
    all three (the stop signal goes to the group too): 143, nothing left."""
    proc = launcher.start(gracerun("-g", cmd=recorder("--workers", 2, "--exit-on", "TERM")))
    pids = ready(proc)
    main = pids["main"][0]
    assert {stat(w).pgid for w in pids["workers"]} == {main}  # type: ignore[union-attr]
    proc.send(signal.SIGUSR1)
    for role in ("main", "worker1", "worker2"):
        proc.expect(f"^signal SIGUSR1 role={role} ")
    proc.send(signal.SIGTERM)
    for role in ("main", "worker1", "worker2"):
        proc.expect(f"^signal SIGTERM role={role} ")
    assert proc.wait() == 143


def test_child_only_by_default(launcher: Launcher) -> None:
    """Steps:
    1. the service starts 2 workers in its process group;
    2. without -g, SIGUSR1 to gracerun is recorded by the service;
    3. SIGUSR2 sent straight to each worker is recorded with no SIGUSR1 before it:
       the workers never got SIGUSR1 (gracerun had already signalled when the
       service printed, and USR1 < USR2);
    4. SIGTERM: the service dies of it, gracerun stops the leftover workers, 143.
    """
    proc = launcher.start(gracerun(cmd=recorder("--workers", 2, "--exit-on", "TERM")))
    pids = ready(proc)
    proc.send(signal.SIGUSR1)
    proc.expect("^signal SIGUSR1 role=main ")
    for worker in pids["workers"]:
        os.kill(worker, signal.SIGUSR2)
    for role in ("worker1", "worker2"):
        proc.expect(f"^signal SIGUSR2 role={role} ")
        assert lines_for(proc, signal.SIGUSR1, role) == 0
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143
    assert set(pids["workers"]) & set(launcher.alive()) == set()  # by tag: PIDs may be reused


# ------------------------------------------------------------------ rewriting


@pytest.mark.parametrize("rule", ["USR1:USR2", "10:12", "SIGUSR1:sigusr2"])
def test_rewrite_delivers_the_new_signal(launcher: Launcher, rule: str) -> None:
    """Steps: -r rule; SIGUSR1 to gracerun arrives as SIGUSR2; SIGUSR1 itself
    never arrives (proved with SIGWINCH); SIGTERM ends it."""
    proc = launcher.start(gracerun("-r", rule, cmd=recorder("--exit-on", "TERM")))
    ready(proc)
    proc.send(signal.SIGUSR1)
    proc.expect("^signal SIGUSR2 role=main ")
    prove_absent(proc, signal.SIGUSR1)
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


def test_rewrite_to_zero_drops_the_signal(launcher: Launcher) -> None:
    """Steps: -r USR1:0; send SIGUSR1 then SIGUSR2 to gracerun; the service records
    SIGUSR2 and no SIGUSR1 before it; SIGTERM ends it."""
    proc = launcher.start(gracerun("-r", "USR1:0", cmd=recorder("--exit-on", "TERM")))
    ready(proc)
    proc.send(signal.SIGUSR1)
    prove_absent(proc, signal.SIGUSR1, proof=signal.SIGUSR2)
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


def test_rewrite_of_the_trigger_changes_the_stop_signal(launcher: Launcher) -> None:
    """Steps: -r TERM:QUIT; SIGTERM to gracerun starts the shutdown and the service
    gets SIGQUIT, dies of it: 131; it never recorded SIGTERM."""
    proc = launcher.start(gracerun("-r", "TERM:QUIT", cmd=recorder("--exit-on", "QUIT")))
    ready(proc)
    proc.send(signal.SIGTERM)
    proc.expect("^signal SIGQUIT role=main ")
    assert proc.wait() == 131
    assert lines_for(proc, signal.SIGTERM) == 0


def test_several_rewrites_apply_together(launcher: Launcher) -> None:
    """Steps: -r HUP:USR1 -r USR2:0; SIGHUP arrives as SIGUSR1, SIGUSR2 is dropped
    (proved with SIGWINCH), SIGINT passes unchanged; SIGTERM ends it."""
    proc = launcher.start(gracerun("-r", "HUP:USR1", "-r", "USR2:0",
                                   cmd=recorder("--exit-on", "TERM")))
    ready(proc)
    proc.send(signal.SIGHUP)
    proc.expect("^signal SIGUSR1 role=main ")
    proc.send(signal.SIGUSR2)
    proc.send(signal.SIGINT)
    proc.expect("^signal SIGINT role=main ")
    prove_absent(proc, signal.SIGUSR2)
    assert lines_for(proc, signal.SIGHUP) == 0
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


def test_realtime_signal_is_forwarded_not_fatal(launcher: Launcher) -> None:
    """Beyond 1-31: tini, dumb-init and catatonit forward SIGRTMIN+3 (systemd's
    "halt"), their service dies of it, and they exit 165.

    Steps: gracerun (a subreaper, not PID 1) runs sleep; SIGRTMIN+3 to gracerun;
    gracerun exits 165 by itself (its raw status is not "killed by signal 37")
    and no service is left running.
    """
    proc = launcher.start(gracerun(cmd=["sleep", "1000"]))
    wait_for(lambda: [c for c in children(proc.pid) if c.comm == "sleep"],
             what="gracerun's child to exec sleep")
    proc.send(signal.SIGRTMIN + 3)
    proc.popen.wait(10)  # not proc.wait(): a leftover service keeps the output pipes open
    leftovers = launcher.alive()
    for pid in leftovers:  # do not leave an orphaned service running after the test
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not launcher.alive(), what="the orphaned service to die")
    assert proc.popen.returncode == 165, "gracerun was killed by the signal it should forward"
    assert leftovers == []
