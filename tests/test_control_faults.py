"""The control socket and gracerun's own I/O under bad peers.

gracerun ignores SIGPIPE (it never forwards a SIGPIPE its own writes raise),
drops clients that say nothing, caps how many it holds, and backs off when
out of descriptors: none of that may touch the service.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.helpers import Launcher, gracerun, prog, wait_for

pytestmark = pytest.mark.timeout(60)


def recorder(*args: object) -> list[str]:
    return prog("sigrecorder.py", *args)


def start(launcher: Launcher, sock: Path, *opts: str) -> tuple[object, int]:
    proc = launcher.start(gracerun("--control-socket", str(sock), *opts,
                                   cmd=recorder("--exit-on", "TERM")))
    proc.expect(r"^ready pid=(\d+)")
    wait_for(sock.exists, 10, "control socket")
    return proc, proc.pid


def connect(sock: Path, retry: bool = True) -> socket.socket:
    """Connect; a full backlog (EAGAIN) is retried until gracerun has accepted."""

    def attempt() -> socket.socket | None:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        try:
            client.connect(str(sock))
        except BlockingIOError:
            client.close()
            if not retry:
                raise
            return None
        return client

    return wait_for(attempt, 10, "a free slot in the control socket's backlog")


def test_clients_that_hang_up_do_not_reach_the_service(launcher: Launcher,
                                                       tmp_path: Path) -> None:
    """Steps: 20 clients connect and close at once, 20 send half a line and
    close, 20 send garbage and close without reading the answer (gracerun's
    reply then meets a closed socket: SIGPIPE territory); then SIGWINCH is sent
    as a proof signal. The service records SIGWINCH and no SIGPIPE; gracerun is
    alive, and SIGTERM still stops the service normally (143)."""
    sock = tmp_path / "ctl.sock"
    proc, _ = start(launcher, sock)
    for payload in (b"", b"pres", b"garbage\n"):
        for _ in range(20):
            client = connect(sock)
            if payload:
                client.sendall(payload)
            client.close()
    proc.send(signal.SIGWINCH)
    proc.expect("^signal SIGWINCH role=main ")
    assert not proc.out.matching("^signal SIGPIPE ")
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


def test_unknown_command_gets_an_error_line(launcher: Launcher, tmp_path: Path) -> None:
    """Steps: send "status\\n"; the answer is one error line; the service runs on."""
    sock = tmp_path / "ctl.sock"
    proc, _ = start(launcher, sock)
    client = connect(sock)
    client.sendall(b"status\n")
    assert client.recv(100) == b"error unknown command\n"
    client.close()
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143


def test_a_silent_client_is_dropped_and_prestop_still_works(launcher: Launcher,
                                                            tmp_path: Path) -> None:
    """Steps: 100 clients connect and say nothing (more than gracerun holds);
    the excess is closed at once, the rest within the request timeout (5 s);
    then `gracerun prestop` still works and returns 0."""
    sock = tmp_path / "ctl.sock"
    proc, _ = start(launcher, sock)
    idle = [connect(sock) for _ in range(100)]
    try:
        def all_closed() -> bool:
            for client in idle:
                client.settimeout(0.05)
                try:
                    if client.recv(1) != b"":
                        return False
                except TimeoutError:
                    return False
            return True

        wait_for(all_closed, 15, "silent clients dropped")
    finally:
        for client in idle:
            client.close()
    code, _, err = launcher.run([sys.executable, "-m", "gracerun", "prestop", "--socket",
                                 str(sock), "--timeout", "20s"], timeout=30)
    assert code == 0, err
    assert proc.wait() == 143


def test_out_of_descriptors_is_survived(launcher: Launcher, tmp_path: Path) -> None:
    """Steps: gracerun runs with RLIMIT_NOFILE 32 (set by `prlimit` on the
    running process); 60 clients connect and stay; gracerun cannot accept them
    all (EMFILE) and pauses instead of crashing or spinning; after the clients
    go, `gracerun prestop` works and the service stops with 143."""
    sock = tmp_path / "ctl.sock"
    proc, pid = start(launcher, sock)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (32, 32))
    held = []
    try:
        for _ in range(60):
            try:
                held.append(connect(sock, retry=False))
            except OSError:
                break
        proc.send(signal.SIGWINCH)
        proc.expect("^signal SIGWINCH role=main ")
        assert os.path.exists(f"/proc/{pid}")
    finally:
        for client in held:
            client.close()
    code, _, err = launcher.run([sys.executable, "-m", "gracerun", "prestop", "--socket",
                                 str(sock), "--timeout", "20s"], timeout=30)
    assert code == 0, err
    assert proc.wait() == 143
    assert "Traceback" not in proc.stderr


def test_second_gracerun_on_the_same_socket_leaves_the_first_alone(
        launcher: Launcher, tmp_path: Path) -> None:
    """Steps: a second gracerun configured with the same control socket probes
    it, finds it in use and exits 2; the first one's service got nothing
    (SIGWINCH proof, no SIGPIPE) and still stops normally."""
    sock = tmp_path / "ctl.sock"
    proc, _ = start(launcher, sock)
    code, _, err = launcher.run(gracerun("--control-socket", str(sock), cmd=["true"]))
    assert code == 2 and "in use by another gracerun" in err
    proc.send(signal.SIGWINCH)
    proc.expect("^signal SIGWINCH role=main ")
    assert not proc.out.matching("^signal SIGPIPE ")
    proc.send(signal.SIGTERM)
    assert proc.wait() == 143
