"""gracerun's exit code, launch errors, bad flags and logging, run as real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from helpers import MODES, PY, Launcher, gracerun, prog, signame
from pid1_support import loop_args

pytestmark = pytest.mark.timeout(60)


def one_error_line(stderr: str, *fragments: str) -> str:
    """The single 'gracerun: error: ...' line in stderr, containing every fragment."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {stderr!r}"
    assert lines[0].startswith("gracerun: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# ---------------------------------------------------------------- exit codes


@pytest.mark.parametrize("code", [0, 1, 2, 3, 7, 42, 100, 125, 126, 127, 128, 129, 143, 200,
                                  254, 255])
def test_exits_with_the_service_exit_code(launcher: Launcher, code: int) -> None:
    rc, _, stderr = launcher.run(gracerun(cmd=["sh", "-c", f"exit {code}"]))
    assert rc == code
    assert stderr == ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGKILL,
                                 signal.SIGINT, signal.SIGUSR1], ids=signame)
def test_service_killed_by_signal_exits_128_plus_n(launcher: Launcher, sig: int) -> None:
    """The service kills itself with sig; gracerun reports 128+N (never re-raises: PID 1)."""
    rc, _, _ = launcher.run(gracerun(cmd=["sh", "-c", f"ulimit -c 0; kill -{sig} $$"]))
    assert rc == 128 + sig


def test_exit_code_of_a_service_killed_from_outside(launcher: Launcher) -> None:
    """Steps: start a service that records signals; SIGKILL it directly (not via
    gracerun); gracerun exits 137."""
    proc = launcher.start(gracerun(cmd=prog("sigrecorder.py")))
    pid = int(proc.expect(r"^ready pid=(\d+)").group(1))
    os.kill(pid, signal.SIGKILL)
    assert proc.wait() == 137


# ---------------------------------------------------------- closed stdio

# The service reports which of its fds 0-2 are closed, as 100 + a bit mask.
FDS_CLOSED = ("import os\nm = 0\nfor fd in (0, 1, 2):\n    try:\n        os.fstat(fd)\n"
              "    except OSError:\n        m |= 1 << fd\nos._exit(100 + m)\n")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loop", ["mini", "uvloop"])
@pytest.mark.parametrize("closed", [(1,), (2,), (0, 1, 2)], ids=["stdout", "stderr", "all"])
def test_closed_stdio_keeps_the_exit_code(launcher: Launcher, tmp_path: Path, mode: str,
                                          loop: str, closed: tuple[int, ...]) -> None:
    """`gracerun -- sh -c 'exit 7' >&-` exited 1 with a traceback (sys.stdout is
    None), and with 0, 1 and 2 closed uvloop aborted before the service ran.

    Steps: launch.py closes the fds, then execs gracerun (a subreaper, or PID 1
    of a new PID namespace; on MiniLoop or uvloop), whose service exits with
    100 + a mask of its closed fds: gracerun exits with exactly that, so it ran
    and it got its fds closed as gracerun got them (as under tini and dumb-init,
    not /dev/null).
    """
    _, opts = loop_args(tmp_path, loop)
    argv = prog("launch.py", *(a for fd in closed for a in ("--close", fd)), "--",
                *gracerun(*opts, cmd=[PY, "-c", FDS_CLOSED]))
    if mode == "pid1":
        argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *argv]
    rc, _, stderr = launcher.run(argv)
    assert rc == 100 + sum(1 << fd for fd in closed), stderr
    assert "Traceback" not in stderr


# ------------------------------------------------------------ -e (remap exit)


@pytest.mark.parametrize(("opts", "script", "expected"), [
    (["-e", "143"], "exit 143", 0),
    (["-e", "143"], "kill -TERM $$", 0),
    (["-e", "143"], "exit 1", 1),
    (["-e", "143"], "exit 0", 0),
    (["-e", "1", "-e", "2"], "exit 2", 0),
    (["--remap-exit", "3"], "exit 3", 0),
])
def test_remap_exit(launcher: Launcher, opts: list[str], script: str, expected: int) -> None:
    rc, _, stderr = launcher.run(gracerun(*opts, cmd=["sh", "-c", script]))
    assert rc == expected
    assert stderr == ""


# ------------------------------------------------------------ launch failures


def test_command_not_found_exits_127(launcher: Launcher) -> None:
    rc, _, stderr = launcher.run(gracerun(cmd=["no-such-command-gracerun-test", "arg"]))
    assert rc == 127
    one_error_line(stderr, "no-such-command-gracerun-test")


def test_path_not_found_exits_127(launcher: Launcher, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing" / "cmd")
    rc, _, stderr = launcher.run(gracerun(cmd=[missing]))
    assert rc == 127
    one_error_line(stderr, missing)


def test_script_with_a_missing_interpreter_exits_127(launcher: Launcher, tmp_path: Path) -> None:
    """execve says ENOENT for a missing #! interpreter; like bash, that is 127."""
    script = tmp_path / "script"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    rc, _, stderr = launcher.run(gracerun(cmd=[str(script)]))
    assert rc == 127
    one_error_line(stderr, str(script))


def test_not_executable_file_exits_126(launcher: Launcher, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("echo hi\n")
    plain.chmod(0o644)
    rc, _, stderr = launcher.run(gracerun(cmd=[str(plain)]))
    assert rc == 126
    one_error_line(stderr, str(plain))


def test_directory_exits_126(launcher: Launcher, tmp_path: Path) -> None:
    rc, _, stderr = launcher.run(gracerun(cmd=[str(tmp_path)]))
    assert rc == 126
    one_error_line(stderr, str(tmp_path))


def test_exec_format_error_exits_126(launcher: Launcher, tmp_path: Path) -> None:
    """An executable file that is neither ELF nor #! (here: empty) is ENOEXEC."""
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    empty.chmod(0o755)
    rc, _, stderr = launcher.run(gracerun(cmd=[str(empty)]))
    assert rc == 126
    one_error_line(stderr, str(empty))


def test_permission_denied_on_path_search_exits_126(launcher: Launcher, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A name found on PATH only as a non-executable file: EACCES after the search, 126."""
    (tmp_path / "gracerun-test-noexec").write_text("echo hi\n")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    rc, _, stderr = launcher.run(gracerun(cmd=["gracerun-test-noexec"]))
    assert rc == 126
    one_error_line(stderr, "gracerun-test-noexec")


@pytest.mark.parametrize("argv", [[], ["--"], ["-v"], ["-t", "1s", "--"]], ids=repr)
def test_no_command_exits_2(launcher: Launcher, argv: list[str]) -> None:
    proc = launcher.start([PY, "-m", "gracerun", *argv])
    assert proc.wait() == 2
    one_error_line(proc.stderr, "command")


@pytest.mark.parametrize(("opts", "flag"), [
    (["--budget", "-3"], "--budget"),
    (["-t", "abc"], "--budget"),
    (["-t", "0"], "--budget"),
    (["-t", "8d"], "--budget"),
    (["-t"], "-t"),
    (["-r", "FOO:BAR"], "--rewrite"),
    (["-r", "USR1"], "--rewrite"),
    (["-r", "KILL:TERM"], "--rewrite"),
    (["-r", "TERM:99"], "--rewrite"),
    (["-e", "300"], "--remap-exit"),
    (["-e", "-1"], "--remap-exit"),
    (["-e", "abc"], "--remap-exit"),
    (["-p", "FOO"], "--pdeathsig"),
    (["--trigger", "NOPE"], "--trigger"),
    (["--stop-signal", "NOPE"], "--stop-signal"),
    (["--log-format", "xml"], "--log-format"),
    (["--no-such-flag"], "--no-such-flag"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_flag_value_exits_2_with_one_line(launcher: Launcher, opts: list[str],
                                               flag: str, tmp_path: Path) -> None:
    """The service must not start either: it would create a file."""
    marker = tmp_path / "started"
    rc, _, stderr = launcher.run(gracerun(*opts, cmd=["touch", str(marker)]))
    assert rc == 2
    one_error_line(stderr, flag)
    assert not marker.exists()


# -------------------------------------------------------------------- logging


def test_quiet_by_default(launcher: Launcher) -> None:
    rc, stdout, stderr = launcher.run(gracerun(cmd=["true"]))
    assert (rc, stdout, stderr) == (0, "", "")


def test_verbose_logs_forwarded_signals(launcher: Launcher) -> None:
    """Steps: run the recorder under -v; send SIGUSR1 to gracerun; wait for the
    service's line; gracerun's stderr names the forwarded signal; stop with TERM."""
    proc = launcher.start(gracerun("-v", cmd=prog("sigrecorder.py", "--exit-on", "TERM")))
    proc.expect("^ready")
    proc.send(signal.SIGUSR1)
    proc.expect("^signal SIGUSR1 role=main")
    proc.err.wait(r"forwarded signal.*SIGUSR1")
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143
    assert "Traceback" not in proc.stderr


def test_verbose_logs_reaped_orphans(launcher: Launcher) -> None:
    """Steps: run a service that leaves 3 orphans under -v; wait for 3 'reaped
    orphan' lines on gracerun's stderr; stop with TERM."""
    proc = launcher.start(gracerun("-v", cmd=prog("orphans.py", 3)))
    proc.expect("^done orphans=3")
    proc.err.wait(r"reaped orphan pid=\d+", count=3)
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143
