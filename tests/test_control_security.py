"""No one else can stop the service: the control socket against other users.

    server  answers only clients of its own uid or root (SO_PEERCRED)
    client  `gracerun prestop` talks only to a server of its own uid or root, and
            its --timeout bounds connect, send and receive together (> 0)
    default the socket lives in a 0700 directory of gracerun's user
            (/run/gracerun as root, /tmp/gracerun-UID without $XDG_RUNTIME_DIR);
            a directory someone else made first is refused

"Another user" is uid 65534 (nobody), and the non-root gracerun runs as uid
1000, both with setpriv.  Scenarios that need the default paths run in private
mount namespaces (tmpfs on /run and /tmp), so nothing is made on this machine.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, Launcher, Proc, children, cmdline, gracerun, prog, wait_for

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(os.geteuid() != 0, reason="plays other users: needs root")]

PY = sys.executable
OTHER = 65534  # nobody
USER = 1000  # a non-root gracerun
AS_OTHER = ["setpriv", f"--reuid={OTHER}", f"--regid={OTHER}", "--clear-groups", "--"]
AS_USER = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "--"]

# Answers "stopping" to every connection, as a gracerun would once the stop phase
# began, and records what each client sent (one line per connection).  With
# --trickle it sends the answer one byte every 0.4s instead.
IMPOSTOR = textwrap.dedent("""
    import os, socket, sys, threading, time
    record, trickle, paths = sys.argv[1], sys.argv[2] == "trickle", sys.argv[3:]

    def serve(listener):
        while True:
            conn, _ = listener.accept()
            conn.settimeout(0.5)
            try:
                got = conn.recv(64)
            except OSError:
                got = b""
            with open(record, "a") as fh:
                fh.write(repr(got) + "\\n")
            for i, byte in enumerate(b"stopping\\n"):
                if trickle:
                    time.sleep(0.4)  # the pace under test
                try:
                    conn.send(bytes([byte]) if trickle else b"stopping\\n")
                except OSError:
                    break
                if not trickle:
                    break
            conn.close()

    for path in paths:
        if not os.path.isdir(os.path.dirname(path)):
            os.mkdir(os.path.dirname(path))
            os.chmod(os.path.dirname(path), 0o777)
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        os.chmod(path, 0o777)
        listener.listen(16)
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
    print("planted", flush=True)
    time.sleep(120)
""")


def recorder(*args: object) -> list[str]:
    return prog("sigrecorder.py", *args)


@functools.cache
def python_for(user: tuple[str, ...]) -> str:
    """An interpreter `user` can run gracerun with: this one, unless it lives where
    other users cannot read (a pyenv under /root), then the system's."""
    for candidate in (PY, "/usr/bin/python3"):
        # Through env: exec by the user itself, as gracerun's spawn does.
        probe = subprocess.run([*user, "env", candidate, "-c",
                                "import json, socket, gracerun"],
                               env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/",
                               capture_output=True, timeout=30)
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter that {' '.join(user)} can run")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="gracerun-ctl-"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def impostor(launcher: Launcher, tmp: Path, *paths: str, user: list[str] = AS_OTHER,
             trickle: bool = False, wrap: list[str] | None = None,
             inside: str | None = None) -> tuple[Proc, Path]:
    """Start IMPOSTOR serving `paths`; (its process, its record file).  `tmp` is
    where its files go, named `inside` when it runs in another mount namespace."""
    script = tmp / "impostor.py"
    script.write_text(IMPOSTOR)
    script.chmod(0o644)
    record = tmp / "impostor.log"
    record.write_text("")
    record.chmod(0o666)
    where = Path(inside) if inside is not None else tmp
    proc = launcher.start([*(wrap or []), *user, python_for(tuple(user)),
                           str(where / "impostor.py"),
                           str(where / "impostor.log"), "trickle" if trickle else "plain",
                           *paths])
    proc.expect("^planted$")
    return proc, record


def prestop(launcher: Launcher, *args: str, wrap: list[str] | None = None,
            user: list[str] | None = None, timeout: float = 30) -> tuple[int, str, float]:
    """Run `gracerun prestop ARGS`: (exit code, stderr, seconds it took)."""
    started = time.monotonic()
    python = python_for(tuple(user)) if user else PY
    code, _, err = launcher.run([*(wrap or []), *(user or []), python, "-m", "gracerun",
                                 "prestop", *args], timeout=timeout)
    return code, err, time.monotonic() - started


# ------------------------------------------------------------------ the client


def test_prestop_refuses_a_socket_served_by_another_user(launcher: Launcher,
                                                         open_dir: Path) -> None:
    """Steps:
    1. uid 65534 serves a socket that answers "stopping" (what a gracerun says).
    2. root's `gracerun prestop --socket PATH`: exit 1, naming the uid, at once; the
       impostor received nothing.
    3. Negative control: the same impostor run by root is believed (exit 0), so the
       refusal in 2 is the uid check and nothing else.
    """
    path = str(open_dir / "ctl.sock")
    proc, record = impostor(launcher, open_dir, path)
    code, err, took = prestop(launcher, "--socket", path, "--timeout", "20s")
    assert code == 1, err
    assert err == (f"gracerun: error: the control socket {path} is not gracerun's: it is "
                   f"served by uid {OTHER} (expected uid 0 or root); not sending it "
                   f"anything\n")
    assert took < 5
    assert record.read_text() == "b''\n"  # it saw the connection, and not a word
    proc.send(signal.SIGKILL)
    proc.wait()

    os.unlink(path)
    proc, record = impostor(launcher, open_dir, path, user=[])
    code, err, _ = prestop(launcher, "--socket", path, "--timeout", "20s")
    assert code == 0, err
    assert record.read_text() == "b'prestop\\n'\n"


def test_the_timeout_bounds_a_trickling_answer(launcher: Launcher, open_dir: Path) -> None:
    """A server of our own uid that answers one byte every 0.4s: `prestop --timeout 1s`
    gives up at 1s (one deadline, not one per read)."""
    path = str(open_dir / "ctl.sock")
    impostor(launcher, open_dir, path, user=[], trickle=True)
    code, err, took = prestop(launcher, "--socket", path, "--timeout", "1s")
    assert code == 1
    assert "did not reach the stop phase within 1s" in err
    assert took < 1.0 + 1.0, f"prestop took {took:.2f}s"  # + interpreter start-up


def start(launcher: Launcher, sock: Path) -> Proc:
    proc = launcher.start(gracerun("--control-socket", str(sock), "--log-format", "json",
                                   cmd=recorder("--exit-on", "TERM")))
    proc.expect(r"^ready pid=")
    wait_for(sock.exists, 10, "control socket")
    return proc


def test_timeout_zero_is_a_usage_error_and_starts_nothing(launcher: Launcher,
                                                          tmp_path: Path) -> None:
    """`prestop --timeout 0` started the shutdown and then failed with "Resource
    temporarily unavailable".  Steps: it exits 2 with one line; gracerun never heard
    of it (its service is not signalled); SIGTERM still stops it normally."""
    sock = tmp_path / "ctl.sock"
    proc = start(launcher, sock)
    for value in ("0", "0s", "0ms"):
        code, err, _ = prestop(launcher, "--socket", str(sock), "--timeout", value)
        assert code == 2, err
        assert err == ("gracerun: error: argument --timeout: must be more than 0, got 0 "
                       "(see 'gracerun prestop --help')\n")
    assert "preStop hook received" not in proc.stderr
    assert not proc.out.matching("^signal ")
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


# ------------------------------------------------------------------ the server


def test_the_server_refuses_clients_of_another_user(launcher: Launcher, open_dir: Path
                                                    ) -> None:
    """Steps:
    1. gracerun serves its control socket in a directory everyone can reach; the test
       opens the socket's mode to 0666 (as a careless chmod would).
    2. uid 65534 connects and sends "prestop": it is answered "error permission
       denied", gracerun logs the refusal with the uid, and the service is not
       signalled (SIGWINCH proof: it records that, and nothing before it).
    3. root's `gracerun prestop` still works: exit 0, the service stops (143).
    """
    sock = open_dir / "ctl.sock"
    proc = start(launcher, sock)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    sock.chmod(0o666)
    client = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
              "s.sendall(b'prestop\\n'); print(s.recv(100))")
    code, out, err = launcher.run([*AS_OTHER, python_for(tuple(AS_OTHER)), "-c", client,
                                   str(sock)], timeout=20)
    assert (code, out) == (0, "b'error permission denied\\n'\n"), err
    wait_for(lambda: "refused a client of another user" in proc.stderr, 10, "the refusal")
    assert f'"uid": {OTHER}' in proc.stderr
    assert "preStop hook received" not in proc.stderr
    proc.send(signal.SIGWINCH)
    proc.expect("^signal SIGWINCH role=main ")
    assert len(proc.out.matching("^signal ")) == 1  # SIGWINCH, and nothing before it
    code, err, _ = prestop(launcher, "--socket", str(sock), "--timeout", "20s")
    assert code == 0, err
    assert proc.wait() == 143


def test_a_socket_of_another_user_is_not_replaced(launcher: Launcher, open_dir: Path) -> None:
    """A stale-looking socket at the configured path that belongs to someone else is
    not removed: gracerun refuses to start (exit 2), and the file stays."""
    path = open_dir / "ctl.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: "stale"
    os.chown(path, OTHER, OTHER)
    code, _, err = launcher.run(gracerun("--control-socket", str(path), cmd=["true"]))
    assert code == 2
    assert f"is a socket of uid {OTHER}, not ours; refusing to replace it" in err
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


# ------------------------------------------------------------- default paths


def namespaced(launcher: Launcher) -> tuple[Proc, list[str]]:
    """A private mount namespace (tmpfs on /run and /tmp, and /run/test for the test's
    files) held by a sleeping root process: (that process, the nsenter prefix that
    joins it).  The test reaches its files as /proc/PID/root/run/test."""
    # The checkout and its venv may live under /tmp (a CI clone): keep them visible
    # through the fresh /tmp, bound back from a copy of the mount kept under /run.
    keep = sorted({Path("/tmp", p.relative_to("/tmp").parts[0])
                   for p in (REPO, Path(PY).parent) if p.is_relative_to("/tmp")
                   and p != Path("/tmp")})
    save = "".join(f"mkdir -p /run/keep{i} && mount --bind {d} /run/keep{i} && "
                   for i, d in enumerate(keep))
    restore = "".join(f"mkdir -p {d} && mount --bind /run/keep{i} {d} && "
                      for i, d in enumerate(keep))
    holder = launcher.start(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             "mount -t tmpfs -o mode=0755 tmpfs /run && " + save +
                             "mount -t tmpfs -o mode=1777 tmpfs /tmp && " + restore +
                             "mkdir -m 0755 /run/test && echo ready && exec sleep 120"])
    holder.expect("^ready$")
    return holder, ["nsenter", f"--target={holder.pid}", "--mount", "--wd=/", "--"]


def pid1(launcher: Launcher, enter: list[str], user: list[str], *argv: str
         ) -> tuple[Proc, int]:
    """gracerun as PID 1 of a new PID namespace inside a namespaced() mount namespace;
    (the started process, gracerun's PID as seen from here)."""
    python = python_for(tuple(user)) if user else PY
    proc = launcher.start([*enter, "unshare", "--pid", "--fork", "--kill-child",
                           "--mount-proc", *user, python, "-m", "gracerun", *argv])

    def found() -> int | None:
        for pid in _descendants(proc.pid):
            if cmdline(pid)[1:3] == ["-m", "gracerun"]:
                return pid
        return None

    return proc, wait_for(found, 10, "gracerun as PID 1")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = [c.pid for c in children(todo.pop())]
        out += kids
        todo += kids
    return out


def test_the_default_socket_is_private_and_serves_prestop(launcher: Launcher) -> None:
    """Steps:
    1. root's gracerun as PID 1 with no configuration, /run a fresh tmpfs.
    2. /run/gracerun is a directory of root's with mode 0700; control.sock in it is
       a socket with mode 0600.
    3. `gracerun prestop` in the same mount namespace (no --socket: the default
       path) returns 0 and the service stops with 143.
    """
    _, enter = namespaced(launcher)
    proc, pid = pid1(launcher, enter, [], "--", *recorder("--exit-on", "TERM"))
    proc.expect("^ready pid=")
    root = Path(f"/proc/{pid}/root/run/gracerun")
    wait_for(lambda: (root / "control.sock").exists(), 10, "the default control socket")
    st = root.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
    sock = (root / "control.sock").lstat()
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    code, err, _ = prestop(launcher, "--timeout", "20s", wrap=enter)
    assert code == 0, err
    assert proc.wait() == 143


@pytest.mark.parametrize(("mode", "used"), [(0o755, True), (0o777, False), (0o1777, False)])
def test_a_default_directory_others_can_write_to_is_refused(launcher: Launcher, mode: int,
                                                            used: bool) -> None:
    """/run/gracerun exists already (an image made it), root's: used when only root can
    write to it; refused, with a warning and no socket, when anyone else can."""
    holder, enter = namespaced(launcher)
    made = Path(f"/proc/{holder.pid}/root/run/gracerun")
    made.mkdir()
    made.chmod(mode)
    proc, pid = pid1(launcher, enter, [], "--", *recorder("--exit-on", "TERM"))
    proc.expect("^ready pid=")
    if used:
        wait_for((made / "control.sock").exists, 10, "the control socket")
    else:
        wait_for(lambda: "no control socket" in proc.stderr, 10, "the warning")
        assert (f"/run/gracerun must be a directory of uid 0 that only it can write to "
                f"(gracerun makes it 0700), but it belongs to uid 0 with mode {mode:04o}"
                ) in proc.stderr
        assert list(made.iterdir()) == []
    os.kill(pid, signal.SIGTERM)
    assert proc.wait() == 143


def test_a_default_directory_made_by_another_user_is_refused(launcher: Launcher,
                                                              tmp_path: Path) -> None:
    """The takeover: an ordinary user binds the default path before gracerun starts.
    Steps:
    1. In a private /tmp, uid 65534 makes /tmp/gracerun-1000 (mode 0777) and serves
       an impostor socket in it, and one at the old default /tmp/gracerun.sock.
    2. gracerun as uid 1000, PID 1, no configuration: it starts its service, and
       warns that it has no control socket, naming the directory's owner.
    3. uid 1000's `gracerun prestop` refuses the impostor (exit 1, "not
       gracerun's"); the impostor heard no "prestop"; the service runs on and
       stops normally on SIGTERM.
    """
    holder, enter = namespaced(launcher)
    _, record = impostor(launcher, Path(f"/proc/{holder.pid}/root/run/test"),
                         f"/tmp/gracerun-{USER}/control.sock", "/tmp/gracerun.sock",
                         wrap=enter, inside="/run/test")
    service = [python_for(tuple(AS_USER)), *recorder("--exit-on", "TERM")[1:]]
    proc, pid = pid1(launcher, enter, AS_USER, "--", *service)
    proc.expect("^ready pid=")
    wait_for(lambda: "no control socket" in proc.stderr, 10, "the warning")
    assert (f"cannot use /tmp/gracerun-{USER}: /tmp/gracerun-{USER} is owned by uid "
            f"{OTHER}, not by uid {USER} or root") in proc.stderr
    code, err, _ = prestop(launcher, "--timeout", "5s", wrap=enter, user=AS_USER)
    assert code == 1, err
    assert f"is not gracerun's: it is served by uid {OTHER}" in err
    assert "prestop" not in record.read_text()
    assert not proc.out.matching("^signal ")
    os.kill(pid, signal.SIGTERM)
    assert proc.wait() == 143


def test_the_client_uses_the_same_default_path_as_the_server() -> None:
    """As root: /run/gracerun/control.sock; as another user: $XDG_RUNTIME_DIR's, else
    /tmp/gracerun-UID (computed in a child, so the test's own uid is untouched)."""
    code = ("from gracerun.config.load import default_control_socket as d; print(d())")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("XDG_RUNTIME_DIR", None)

    def path(user: list[str], **extra: str) -> str:
        python = python_for(tuple(user)) if user else PY
        return subprocess.run([*user, python, "-c", code], env={**env, **extra}, text=True,
                              cwd="/", capture_output=True, check=True,
                              timeout=30).stdout.strip()

    assert path([]) == "/run/gracerun/control.sock"
    assert path(AS_USER) == f"/tmp/gracerun-{USER}/control.sock"
    assert (path(AS_USER, XDG_RUNTIME_DIR="/run/user/1000")
            == "/run/user/1000/gracerun/control.sock")
    assert path(AS_USER, XDG_RUNTIME_DIR="relative") == f"/tmp/gracerun-{USER}/control.sock"
