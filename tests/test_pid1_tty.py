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
from helpers import Launcher, Proc, gracerun, prog, signame, stat

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


def test_job_control_signals_do_not_wedge_gracerun(launcher: Launcher) -> None:
    """Steps:
    1. gracerun on a pty runs the recorder;
    2. SIGTSTP, SIGTTIN and SIGTTOU sent to gracerun's PID;
    3. SIGUSR1 round trip: gracerun still forwards, so it is not stopped, and
       its state in /proc is not T; SIGTSTP reached the service, SIGTTIN and
       SIGTTOU did not (they are gracerun's own business, and ignored);
    4. SIGTERM still stops the service: 143.
    """
    proc, _ = start_on_tty(launcher, "--exit-on", "TERM")
    for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        proc.send(sig)
    proc.send(signal.SIGWINCH)  # higher than all three: it arrives after any of them
    proc.expect("^signal SIGWINCH role=main ")
    st = stat(proc.pid)
    assert st is not None and st.state not in "Tt", st
    assert count(proc, signal.SIGTSTP) == 1
    assert count(proc, signal.SIGTTIN) == count(proc, signal.SIGTTOU) == 0
    proc.send(signal.SIGTERM)
    proc.expect("^signal SIGTERM role=main ")
    assert proc.wait() == 143


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
