"""gracerun on a terminal: the service in the foreground, ^C, job-control signals.

The terminal is a pty: launch.py --ctty makes the slave the controlling
terminal of a new session and execs gracerun as its leader, as a shell or
`docker run -t` would leave it; the test types on the master and reads the
service's lines from it.
"""

from __future__ import annotations

import os
import signal

import pytest
from helpers import Launcher, Proc, all_stats, gracerun, prog, signame, stat, wait_for

pytestmark = pytest.mark.timeout(60)


def start_on_tty(launcher: Launcher, *recorder_args: object) -> tuple[Proc, int]:
    """gracerun as the session leader of a pty, running the recorder; return it and
    the service's PID once the service is ready."""
    argv = prog("launch.py", "--ctty", "--",
                *gracerun(cmd=prog("sigrecorder.py", *recorder_args)))
    proc = launcher.start(argv, tty=True)
    service = int(proc.expect(r"^ready pid=(\d+)").group(1))
    return proc, service


def count(proc: Proc, sig: int) -> int:
    return len(proc.out.matching(f"^signal {signame(sig)} role=main "))


def test_service_owns_the_terminal_foreground(launcher: Launcher) -> None:
    """Steps:
    1. gracerun on a pty runs the recorder;
    2. /proc/<service>/stat: the terminal's foreground group (tpgid) is the
       service's own group, and gracerun's group is not the foreground;
    3. typing ^C on the master: the terminal sends SIGINT to the foreground group
       and the service records it exactly once (gracerun, in the background,
       got nothing to forward; checked after a SIGWINCH round trip);
    4. SIGTERM to gracerun: the service dies of it, 143.
    """
    proc, service = start_on_tty(launcher, "--exit-on", "TERM")
    st, gst = stat(service), stat(proc.pid)
    assert st is not None and gst is not None
    assert st.pgid == service
    assert st.tpgid == service
    assert gst.tpgid == service and gst.pgid != service
    assert proc.master is not None
    os.write(proc.master, b"\x03")
    proc.expect("^signal SIGINT role=main ")
    proc.send(signal.SIGWINCH)
    proc.expect("^signal SIGWINCH role=main ")
    assert count(proc, signal.SIGINT) == 1
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


@pytest.mark.parametrize("group", [False, True], ids=["child", "group"])
def test_job_control_signals_stop_gracerun_and_the_service(launcher: Launcher,
                                                           group: bool) -> None:
    """As dumb-init (dumb-init.c handle_signal; tests/shell_background_test.py).

    Steps, for each of SIGTSTP, SIGTTIN, SIGTTOU sent to gracerun's PID:
    1. gracerun forwards it (child mode: the signal itself, which the recorder
       records; -g: SIGSTOP to the group) and stops itself: both in state T
       (the recorder is stopped in -g mode; in child mode it only records);
    2. SIGCONT to gracerun: gracerun runs again and forwards SIGCONT (recorded);
    3. finally SIGTERM still stops the service: 143.
    """
    opts = ("-g",) if group else ()
    argv = prog("launch.py", "--ctty", "--",
                *gracerun(*opts, cmd=prog("sigrecorder.py", "--exit-on", "TERM")))
    proc = launcher.start(argv, tty=True)
    service = int(proc.expect(r"^ready pid=(\d+)").group(1))
    for n, sig in enumerate((signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU), 1):
        proc.send(sig)
        wait_for(lambda: state(proc.pid) == "T", what="gracerun stopped")
        if group:
            wait_for(lambda: state(service) == "T", what="the service stopped")
        else:
            proc.expect(f"^signal {signame(sig)} role=main ")
        proc.send(signal.SIGCONT)
        proc.expect("^signal SIGCONT role=main ", count=n)
        wait_for(lambda: state(proc.pid) not in "Tt" and state(service) not in "Tt",
                 what="both running again")
    proc.send(signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    assert proc.wait() == 143


def state(pid: int) -> str:
    st = stat(pid)
    return "gone" if st is None else st.state


def test_ctrl_z_fg_in_an_interactive_shell(launcher: Launcher) -> None:
    """Steps:
    1. an interactive bash on a pty (its controlling terminal, job control on)
       runs `gracerun -- sleep 300`;
    2. ^Z typed on the master: the terminal stops sleep (the foreground group);
       gracerun notices and stops itself, so bash prints "Stopped" and both
       are in state T;
    3. `fg`: bash continues gracerun, which hands the terminal back to sleep
       and continues it: both run again, sleep is the terminal's foreground;
    4. ^C: sleep dies of SIGINT, gracerun exits 130, which bash reports.
    """
    argv = prog("launch.py", "--ctty", "--", "bash", "--norc", "--noprofile", "-i")
    proc = launcher.start(argv, tty=True)
    assert proc.master is not None
    cmd = " ".join(gracerun(cmd=["sleep", "300"]))
    os.write(proc.master, f"{cmd}\n".encode())
    sleeper = wait_for(lambda: next((c for c in all_stats() if c.comm == "sleep"
                                     and stat(c.ppid) is not None
                                     and stat(c.ppid).sid == proc.pid), None),  # type: ignore[union-attr]
                       what="sleep under gracerun")
    grace = sleeper.ppid
    wait_for(lambda: (st := stat(sleeper.pid)) is not None and st.tpgid == sleeper.pid,
             what="sleep in the terminal's foreground")
    os.write(proc.master, b"\x1a")
    proc.out.wait("Stopped")
    wait_for(lambda: state(grace) == "T" and state(sleeper.pid) == "T", what="both stopped")
    os.write(proc.master, b"fg\n")
    wait_for(lambda: state(grace) not in "Tt" and state(sleeper.pid) not in "Tt",
             what="both running again")
    wait_for(lambda: (st := stat(sleeper.pid)) is not None and st.tpgid == sleeper.pid,
             what="sleep in the foreground again")
    os.write(proc.master, b"\x03")
    wait_for(lambda: state(grace) == "gone", what="gracerun gone")
    os.write(proc.master, b"echo rc=$?\n")
    proc.out.wait("^rc=130")
    os.write(proc.master, b"exit\n")
    assert proc.wait() == 130 or proc.wait() == 0


def test_gracerun_in_the_background_is_not_wedged(launcher: Launcher) -> None:
    """Steps: with TOSTOP set on the terminal, an interactive bash runs
    `gracerun -v -- sleep 300 &`; gracerun, in the background, writes its log
    lines and forwards SIGUSR1 (logged), without being stopped; SIGTERM ends it."""
    argv = prog("launch.py", "--ctty", "--", "bash", "--norc", "--noprofile", "-i")
    proc = launcher.start(argv, tty=True)
    assert proc.master is not None
    cmd = " ".join(gracerun("-v", cmd=["sleep", "300"]))
    os.write(proc.master, f"stty tostop; {cmd} &\n".encode())
    proc.out.wait("started service")
    sleeper = wait_for(lambda: next((c for c in all_stats() if c.comm == "sleep"
                                     and c.sid == proc.pid), None), what="sleep")
    grace = sleeper.ppid
    os.kill(grace, signal.SIGUSR1)
    proc.out.wait("forwarded signal.*SIGUSR1")
    assert state(grace) not in "Tt"
    os.kill(grace, signal.SIGTERM)
    wait_for(lambda: state(grace) == "gone", what="gracerun gone")
    os.write(proc.master, b"exit\n")
    proc.wait()


@pytest.mark.parametrize(("cmd", "code"), [
    (["no-such-command-gracerun-test"], 127),
    (["/"], 126),
])
def test_launch_failure_on_a_terminal(launcher: Launcher, cmd: list[str], code: int) -> None:
    """With a terminal gracerun launches by fork+exec, where exec errors come back
    through a pipe: still one line naming the command, 127 or 126, no traceback."""
    proc = launcher.start(prog("launch.py", "--ctty", "--", *gracerun(cmd=cmd)), tty=True)
    assert proc.wait() == code
    lines = [line for line in proc.out.lines if line]
    assert "Traceback" not in proc.out.text
    assert len(lines) == 1 and lines[0].startswith("gracerun: error: "), lines
    assert cmd[0] in lines[0]
