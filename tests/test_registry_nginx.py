"""The nginx hook against a real nginx (Debian 12's nginx-light, nginx 1.22.1) on loopback.

    Backend   a tiny HTTP server in a thread that answers every GET with its own name
    Nginx     `nginx -p DIR -c DIR/nginx.conf -e DIR/error.log` with `daemon off` (the
              master is our child, its PID ours to stop), master + 2 workers, pid file
              and error log in DIR, listening on 127.0.0.1:<free port> (another port if
              it was taken meanwhile), `upstream app { include DIR/upstream.conf; }`
              holding one `server` line per backend

Routing is read by sending requests through nginx and counting which backend answered,
each on a new connection.  Synchronisation is by polling against time.monotonic()
deadlines; teardown stops nginx by its PID and kills any worker it left, by PID.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import http.server
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import free_port, wait_for

from gracerun.clients import nginx as nginx_client
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut
from gracerun.lifecycle.hooks import nginx as nginx_hook
from gracerun.lifecycle.hooks.nginx import NginxHook

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REQUESTS = 20

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not os.access(NGINX, os.X_OK), reason="nginx is not installed"),
]


# ------------------------------------------------------------------ servers


class Backend:
    """An HTTP server on 127.0.0.1 (its own port 0) answering its name to every GET."""

    def __init__(self, name: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.name = name
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


class Nginx:
    """A real nginx master with two workers in front of `backends`."""

    def __init__(self, backends: list[Backend]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gr-nginx-"))
        self.conf = self.dir / "nginx.conf"
        self.upstream = self.dir / "upstream.conf"
        self.pid_file = self.dir / "nginx.pid"
        self.error_log = self.dir / "error.log"
        self.extra = self.dir / "extra.conf"  # an include the tests may break
        self.upstream.write_text("".join(f"    server {b.address} max_fails=0;  # {b.name}\n"
                                         for b in backends))
        self.extra.write_text("")
        self.workers_seen: set[int] = set()
        for _ in range(5):
            self.port = free_port()
            self.conf.write_text(f"""
worker_processes 2;
pid {self.pid_file};
error_log {self.error_log} info;
daemon off;
events {{ worker_connections 64; }}
http {{
    access_log off;
    include {self.extra};
    upstream app {{
        include {self.upstream};
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{ proxy_pass http://app; }}
    }}
}}
""")
            self.proc = subprocess.Popen([*self.base_command(), "-e", str(self.error_log)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            if wait_for(self._started, f"nginx to start (log: {self.error_log})") == "up":
                return
            _, err = self.proc.communicate(timeout=10)
            if b"Address already in use" not in err:
                pytest.fail(f"nginx exited {self.proc.returncode}: {err.decode()}")
        pytest.fail("nginx: no free port after 5 attempts")

    def base_command(self) -> list[str]:
        return [NGINX, "-p", str(self.dir), "-c", str(self.conf)]

    def reload_command(self) -> tuple[str, ...]:
        return (*self.base_command(), "-e", str(self.error_log), "-s", "reload")

    def _started(self) -> str:
        if self.proc.poll() is not None:
            return "exited"
        try:
            if int(self.pid_file.read_text()) != self.proc.pid:
                return ""
        except (OSError, ValueError):
            return ""
        if len(self.workers()) != 2:
            return ""
        try:
            self.get()
        except OSError:
            return ""
        return "up"

    def workers(self) -> list[int]:
        """The master's workers that take new connections (not those shutting down)."""
        children = nginx_client.workers(self.proc.pid)
        self.workers_seen.update(pid for pid, title in children.items()
                                 if "worker process" in title)
        return [pid for pid, title in children.items() if title == "nginx: worker process"]

    def get(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/")
            answer = conn.getresponse()
            return answer.read().decode()
        finally:
            conn.close()

    def routing(self) -> collections.Counter[str]:
        """Which backend answered each of REQUESTS requests through nginx."""
        return collections.Counter(self.get() for _ in range(REQUESTS))

    def close(self) -> None:
        self.workers()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nginx's fast shutdown, workers too
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stderr.close()  # type: ignore[union-attr]
        for pid in self.workers_seen:
            try:
                os.kill(pid, signal.SIGKILL)  # a worker its master left behind, by PID
            except ProcessLookupError:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def backends() -> Iterator[list[Backend]]:
    pair = [Backend("A"), Backend("B")]
    yield pair
    for backend in pair:
        backend.close()


@pytest.fixture
def lb(backends: list[Backend]) -> Iterator[Nginx]:
    server = Nginx(backends)
    yield server
    server.close()


def make(lb: Nginx, backend: Backend, **fields: Any) -> NginxHook:
    fields.setdefault("timeout", 5.0)
    fields.setdefault("pid_file", str(lb.pid_file))
    return NginxHook(name="nginx", upstream_file=str(lb.upstream), server=backend.address,
                     **fields)


def drive(step: Callable[[NginxHook, Service], Any], hook: NginxHook) -> Any:
    """Run one hook step on a fresh loop whose SIGCHLD drives the reaper, as gracerun does
    (the reload command's exit comes from the one reaper).  Returns the result or the
    exception, and stores how long it took in drive.took."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        reaper = Reaper()
        loop.add_signal_handler(signal.SIGCHLD, reaper.reap)
        try:
            return await step(hook, Service(reaper, loop))
        finally:
            loop.remove_signal_handler(signal.SIGCHLD)

    start = time.monotonic()
    try:
        return asyncio.run(main())
    except HookFailed as exc:
        return exc
    finally:
        drive.took = time.monotonic() - start  # type: ignore[attr-defined]


RELOADS = {"sighup": lambda lb: {}, "command": lambda lb: {"reload_command": lb.reload_command()}}


# ------------------------------------------------------------------ routing


@pytest.mark.parametrize("reload", sorted(RELOADS))
def test_take_out_and_restore_change_routing(lb: Nginx, backends: list[Backend],
                                             reload: str) -> None:
    """Steps: both backends answer through nginx (the control); run() for A: the file
    says `down` for A, a new worker generation runs, and REQUESTS requests all reach B;
    restore() for A: the file is back byte for byte, and A answers again.
    """
    a, _ = backends
    original = lb.upstream.read_text()
    assert set(lb.routing()) == {"A", "B"}
    workers = set(lb.workers())
    hook = make(lb, a, **RELOADS[reload](lb))

    detail = drive(nginx_hook.run, hook)
    assert isinstance(detail, str), detail
    assert detail.startswith(f"{a.address} down in {lb.upstream}; reloaded master {lb.proc.pid}")
    assert f"server {a.address} max_fails=0 down;  # A" in lb.upstream.read_text()
    assert not workers & set(lb.workers()), "the old workers still take connections"
    assert lb.routing() == {"B": REQUESTS}

    detail = drive(nginx_hook.restore, hook)
    assert isinstance(detail, str) and detail.startswith(f"{a.address} up in "), detail
    assert lb.upstream.read_text() == original
    assert set(lb.routing()) == {"A", "B"}


@pytest.mark.parametrize("reload", sorted(RELOADS))
def test_rolling_restart_of_two_instances_ends_with_both_in_rotation(
        lb: Nginx, backends: list[Backend], reload: str) -> None:
    """Take A out, put A back, take B out, put B back; routing checked after each step."""
    a, b = backends
    for backend, other in ((a, b), (b, a)):
        hook = make(lb, backend, **RELOADS[reload](lb))
        assert isinstance(drive(nginx_hook.run, hook), str)
        assert lb.routing() == {other.name: REQUESTS}
        assert isinstance(drive(nginx_hook.restore, hook), str)
        assert set(lb.routing()) == {"A", "B"}
    assert "down" not in lb.upstream.read_text()


def test_already_down_and_already_up_are_success(lb: Nginx, backends: list[Backend]) -> None:
    hook = make(lb, backends[0])
    assert " down in " in drive(nginx_hook.run, hook)
    after_first = lb.upstream.read_text()
    again = drive(nginx_hook.run, hook)
    assert isinstance(again, str) and " already down in " in again, again
    assert lb.upstream.read_text() == after_first
    assert lb.routing() == {"B": REQUESTS}
    assert " up in " in drive(nginx_hook.restore, hook)
    assert " already up in " in drive(nginx_hook.restore, hook)
    assert set(lb.routing()) == {"A", "B"}


# ------------------------------------------------------------------ the file


def test_rewrite_is_atomic_and_keeps_owner_and_mode(lb: Nginx, backends: list[Backend]) -> None:
    os.chown(lb.upstream, 1234, 2345)
    os.chmod(lb.upstream, 0o640)
    inode = lb.upstream.stat().st_ino
    assert isinstance(drive(nginx_hook.run, make(lb, backends[0])), str)
    st = lb.upstream.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 2345, 0o640)
    assert st.st_ino != inode, "rewritten in place, not replaced by rename"
    assert not [p.name for p in lb.dir.iterdir() if p.name.endswith(".gracerun")]


def test_symlink_is_refused(lb: Nginx, backends: list[Backend]) -> None:
    link = lb.dir / "link.conf"
    link.symlink_to(lb.upstream)
    before = lb.upstream.read_text()
    hook = NginxHook(name="n", timeout=2.0, upstream_file=str(link), server=backends[0].address,
                     pid_file=str(lb.pid_file))
    result = drive(nginx_hook.run, hook)
    assert isinstance(result, HookFailed) and "is a symlink" in str(result), result
    assert link.is_symlink() and lb.upstream.read_text() == before


def test_server_not_in_the_file(lb: Nginx, backends: list[Backend]) -> None:
    before = lb.upstream.read_text()
    hook = NginxHook(name="n", timeout=2.0, upstream_file=str(lb.upstream),
                     server="127.0.0.1:9", pid_file=str(lb.pid_file))
    result = drive(nginx_hook.run, hook)
    assert isinstance(result, HookFailed), result
    assert str(result) == (f"nginx: no `server 127.0.0.1:9` line in {lb.upstream} (servers "
                           f"there: {backends[0].address}, {backends[1].address})")
    assert lb.upstream.read_text() == before
    assert drive.took < 0.5  # type: ignore[attr-defined]


# ------------------------------------------------------------------ the pid file


def test_pid_file_missing(lb: Nginx, backends: list[Backend]) -> None:
    before = lb.upstream.read_text()
    hook = make(lb, backends[0], pid_file=str(lb.dir / "nope.pid"))
    result = drive(nginx_hook.run, hook)
    assert isinstance(result, HookFailed) and "nope.pid is missing" in str(result), result
    assert lb.upstream.read_text() == before, "file edited although nginx cannot be reloaded"


def test_stale_pid_file(lb: Nginx, backends: list[Backend]) -> None:
    """A pid file naming no process, and one naming a process that is not nginx."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = lb.dir / "stale.pid"
    before = lb.upstream.read_text()
    for pid, expected in ((gone.pid, f"no process {gone.pid}"),
                          (os.getpid(), f"process {os.getpid()} is not an nginx master")):
        stale.write_text(f"{pid}\n")
        result = drive(nginx_hook.run, make(lb, backends[0], pid_file=str(stale)))
        assert isinstance(result, HookFailed), result
        assert str(result).startswith(f"nginx: stale pid file {stale}: {expected}")
    assert lb.upstream.read_text() == before


# ------------------------------------------------------------------ failed reloads


def test_rejected_configuration_fails_the_hook_and_nginx_keeps_routing(
        lb: Nginx, backends: list[Backend]) -> None:
    """Steps: break another part of nginx's configuration; run() for A edits the file and
    sends SIGHUP; nginx rejects the configuration and keeps its old workers, so no new
    generation shows: HookFailed once the timeout ends (not before, not much after); A
    still gets traffic, as nginx really does.
    """
    lb.extra.write_text("this_is_not_a_directive;\n")
    workers = set(lb.workers())
    result = drive(nginx_hook.run, make(lb, backends[0], timeout=1.0))
    assert isinstance(result, HookFailed) and not isinstance(result, HookTimedOut), result
    assert "no new worker processes 1s after the reload" in str(result)
    assert 1.0 <= drive.took < 1.3  # type: ignore[attr-defined]
    assert set(lb.workers()) == workers
    assert "unknown directive" in lb.error_log.read_text()
    assert set(lb.routing()) == {"A", "B"}


def test_rejected_configuration_with_reload_command(lb: Nginx, backends: list[Backend]) -> None:
    """`nginx -s reload` checks the configuration itself: it exits 1 with nginx's reason."""
    lb.extra.write_text("this_is_not_a_directive;\n")
    hook = make(lb, backends[0], timeout=3.0, reload_command=lb.reload_command())
    result = drive(nginx_hook.run, hook)
    assert isinstance(result, HookFailed), result
    assert "exited 1: nginx: [emerg] unknown directive \"this_is_not_a_directive\"" \
        in str(result), result
    assert drive.took < 1.0  # type: ignore[attr-defined]


def test_reload_command_that_hangs_times_out_and_is_killed(
        lb: Nginx, backends: list[Backend], tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    hook = make(lb, backends[0], timeout=0.5,
                reload_command=("sh", "-c", f'echo $$ > {marker}; exec sleep 30'))
    result = drive(nginx_hook.run, hook)
    assert isinstance(result, HookTimedOut), result
    assert 0.5 <= drive.took < 0.8  # type: ignore[attr-defined]
    pid = int(marker.read_text())

    def dead() -> bool:  # a zombie: killed, and the loop whose reaper would collect it ended
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(dead, "the hung reload command to be killed")
    try:
        os.waitpid(pid, 0)  # our child: collect it
    except ChildProcessError:
        pass


def test_reload_command_not_found(lb: Nginx, backends: list[Backend]) -> None:
    hook = make(lb, backends[0], reload_command=("no-such-nginx-binary", "-s", "reload"))
    result = drive(nginx_hook.run, hook)
    assert isinstance(result, HookFailed) and "no-such-nginx-binary" in str(result), result


# ------------------------------------------------------------------ mark(), no nginx


@pytest.mark.parametrize(("text", "down", "expected", "matched"), [
    ("server 10.0.0.5:8080;\n", True, "server 10.0.0.5:8080 down;\n", 1),
    ("server 10.0.0.5:8080 down;\n", True, "server 10.0.0.5:8080 down;\n", 1),
    ("  server 10.0.0.5:8080 weight=2   ;  # web-1 down\n", True,
     "  server 10.0.0.5:8080 weight=2 down   ;  # web-1 down\n", 1),
    ("server 10.0.0.5:8080 down weight=2; # down\n", False,
     "server 10.0.0.5:8080 weight=2; # down\n", 1),
    ("# server 10.0.0.5:8080;\nserver 10.0.0.50:8080;\n", True,
     "# server 10.0.0.5:8080;\nserver 10.0.0.50:8080;\n", 0),
    ("server 10.0.0.6:80; server 10.0.0.5:8080;\n", True,
     "server 10.0.0.6:80; server 10.0.0.5:8080 down;\n", 1),
    ("server 10.0.0.5:8080\n    max_fails=3  # why\n    down;\n", False,
     "server 10.0.0.5:8080\n    max_fails=3  # why\n;\n", 1),
    ("upstream a { server 10.0.0.5:8080; }\nupstream b { server 10.0.0.5:8080 backup; }\n",
     True, "upstream a { server 10.0.0.5:8080 down; }\n"
           "upstream b { server 10.0.0.5:8080 backup down; }\n", 2),
    ("server {\n listen 10.0.0.5:8080;\n}\n", True, "server {\n listen 10.0.0.5:8080;\n}\n", 0),
    ("server 10.0.0.5:80801;\nmyserver 10.0.0.5:8080;\n", True,
     "server 10.0.0.5:80801;\nmyserver 10.0.0.5:8080;\n", 0),
])
def test_mark(text: str, down: bool, expected: str, matched: int) -> None:
    assert nginx_client.mark(text, "10.0.0.5:8080", down) == (expected, matched)


def test_took() -> None:
    old = {10: "nginx: worker process", 11: "nginx: worker process",
           12: "nginx: cache manager process"}
    assert not nginx_client.took(old, old)
    assert not nginx_client.took(old, {**old, 20: "nginx: worker process"})
    assert nginx_client.took(old, {10: "nginx: worker process is shutting down",
                                   20: "nginx: worker process", 21: "nginx: worker process"})
    assert nginx_client.took(old, {20: "nginx: worker process"})
