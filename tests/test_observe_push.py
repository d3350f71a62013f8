"""The budget holds whatever the network does: the Pushgateway push and http hooks.

The push runs after the tree is gone and before gracerun exits.  It must be
bounded as a whole, name lookup included, by min(its timeout, the budget
left), with a small floor (state.MIN_PUSH_SECONDS) so that a shutdown that ran
out of time is still reported.  Three hostile networks:

    a resolver that never answers   /etc/resolv.conf (bind-mounted in a private
                                    mount namespace) names a loopback UDP socket
                                    that receives and never replies
    a silent server                 accepts, reads, never answers
    a trickling server              answers one byte every 0.2 s, forever

The times measured are from the SIGTERM the test sends to gracerun's exit.
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import Launcher, Proc, gracerun

pytestmark = pytest.mark.timeout(60)

PY = sys.executable
# What gracerun may take past the budget: `gracerun check` asks for 1s.  Typically
# 0.3s (the SIGKILL and reaping, then the push's 0.25s floor); the rest is slack for
# a loaded test machine.
MARGIN = 0.75
# Ignores SIGTERM: only the budget's SIGKILL ends it.
STUBBORN = [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                      "print('ready', flush=True); time.sleep(60)"]
# Exits 0 on SIGTERM at once.
POLITE = [PY, "-c", "import signal, sys, time; "
                    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
                    "print('ready', flush=True); time.sleep(60)"]


@pytest.fixture
def dead_resolver(tmp_path: Path) -> Iterator[Path]:
    """A resolv.conf whose nameserver (a loopback UDP socket of ours) never answers."""
    address = f"127.83.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((address, 53))
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {address}\noptions timeout:5 attempts:2\n")
    yield conf
    sink.close()


class Server:
    """A TCP server on loopback that accepts, reads the request, then either says
    nothing or trickles an answer one byte at a time until the client leaves."""

    def __init__(self, trickle: bool) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.trickle = trickle
        self.requests = 0
        self.done = threading.Event()
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            if conn.recv(65536):
                self.requests += 1
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
            for byte in answer:
                if not self.trickle or self.done.wait(0.2):  # the pace under test
                    return
                conn.sendall(bytes([byte]))
        except OSError:
            return

    def close(self) -> None:
        self.done.set()
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.listener.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(5)


def config(tmp_path: Path, url: str, extra: str = "", budget: str = "1s",
           timeout: str = "2s") -> Path:
    path = tmp_path / "gracerun.toml"
    path.write_text(f"""
[shutdown]
budget = "{budget}"
[state.pushgateway]
url = "{url}"
timeout = "{timeout}"
{extra}
""")
    return path


def start(launcher: Launcher, cfg: Path, service: list[str],
          resolv: Path | None = None) -> Proc:
    argv = gracerun("--config", str(cfg), cmd=service)
    if resolv is not None:
        # A private mount namespace whose /etc/resolv.conf is ours (not PID 1: the
        # push does not care, and no /run/gracerun is made on this machine).
        argv = ["unshare", "--mount", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv), *argv]
    proc = launcher.start(argv)
    proc.expect("^ready")
    return proc


def stop(proc: Proc) -> tuple[int, float]:
    """SIGTERM; (exit code, seconds from the signal to gracerun's exit)."""
    sent = time.monotonic()
    proc.send(15)
    code = proc.wait(30)
    return code, time.monotonic() - sent


@pytest.mark.parametrize("network", ["dead resolver", "silent server", "trickling server"])
def test_a_push_after_the_budget_keeps_within_the_margin(launcher: Launcher, tmp_path: Path,
                                                         dead_resolver: Path,
                                                         network: str) -> None:
    """Steps:
    1. A 1s budget, a service that ignores SIGTERM, a Pushgateway (timeout 2s) behind
       a resolver that never answers, a server that never answers, or one that
       trickles its answer.
    2. SIGTERM: the budget runs out, the tree is SIGKILLed (137), the push runs with
       the budget spent.
    3. gracerun exits within budget + MARGIN, with one warning about the push.
    """
    server = None
    if network == "dead resolver":
        url, resolv = "http://pushgateway.test:9091", dead_resolver
    else:
        server = Server(trickle=network == "trickling server")
        url, resolv = f"http://127.0.0.1:{server.port}", None
    try:
        proc = start(launcher, config(tmp_path, url), STUBBORN, resolv)
        code, took = stop(proc)
    finally:
        if server is not None:
            server.close()
    assert code == 137
    assert took < 1.0 + MARGIN, f"gracerun exited {took:.2f}s after SIGTERM"
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 2, proc.stderr  # the budget's SIGKILL, and the push
    assert "cannot push metrics to the Pushgateway" in warnings[1]
    if server is not None:
        assert server.requests == 1  # it was tried


def test_a_trickling_pushgateway_is_cut_at_the_push_timeout(launcher: Launcher,
                                                            tmp_path: Path) -> None:
    """urllib's timeout is per read: an answer that trickles in one byte every 0.2s
    never trips a 1s timeout.  Steps: budget 30s, push timeout 1s, a service that
    exits on SIGTERM: gracerun exits about 1s after it, not when the answer ends."""
    server = Server(trickle=True)
    try:
        proc = start(launcher, config(tmp_path, f"http://127.0.0.1:{server.port}",
                                      budget="30s", timeout="1s"), POLITE)
        code, took = stop(proc)
    finally:
        server.close()
    assert code == 0
    assert 0.9 < took < 1.0 + MARGIN, f"gracerun exited {took:.2f}s after SIGTERM"
    assert "no answer within 1s" in proc.stderr


def test_a_dead_resolver_is_inside_a_hook_timeout(launcher: Launcher, tmp_path: Path,
                                                  dead_resolver: Path) -> None:
    """Hooks get the same treatment (name lookup inside the timeout), on uvloop.
    Steps: a deregister http hook whose host never resolves, timeout 500ms; SIGTERM:
    the hook times out at 0.5s, the service gets its signal, gracerun exits 0 well
    before the resolver's own 10s."""
    cfg = tmp_path / "gracerun.toml"
    cfg.write_text("""
[shutdown]
budget = "10s"
[[shutdown.deregister.hooks]]
type = "http"
name = "registry"
url = "http://registry.test/deregister?token=s3cr3t"
timeout = "500ms"
""")
    proc = start(launcher, cfg, POLITE, dead_resolver)
    code, took = stop(proc)
    assert code == 0
    assert took < 0.5 + MARGIN, f"gracerun exited {took:.2f}s after SIGTERM"
    hook_line = next(line for line in proc.stderr.splitlines() if "hook=registry" in line)
    assert "outcome=timeout" in hook_line
    assert "s3cr3t" not in proc.stderr
