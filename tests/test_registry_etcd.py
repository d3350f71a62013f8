"""The etcd hook against a real etcd (Debian 12's etcd-server, etcd 3.4.23) on loopback.

    EtcdServer   `etcd` in the foreground (its PID is ours to kill), one member, client and
                 peer URLs on free 127.0.0.1 ports (new ports if one was taken meanwhile),
                 its data directory in a temporary directory
    etcdctl      the real client, for what the tests read back and for the watcher
                 (`etcdctl watch --rev N KEY` replays from revision N, so it cannot miss
                 an event that happened before it connected)

The hook is driven directly: `restore` / `keep_alive` / `run` on asyncio with a Service
handle, as the start-up and shutdown sequences call them.  Synchronisation is by polling
against time.monotonic() deadlines; teardown kills only the processes started here, by PID.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pipeline_support import free_port, wait_for

from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut
from gracerun.lifecycle.hooks import etcd as etcd_hook
from gracerun.lifecycle.hooks.etcd import EtcdHook

ETCD = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"
TTL = 2  # etcd 3.4's minimum lease TTL with its default election timeout

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not (os.access(ETCD, os.X_OK) and os.access(ETCDCTL, os.X_OK)),
                       reason="etcd and etcdctl are not installed (etcd-server, etcd-client)"),
]

T = TypeVar("T")


# ------------------------------------------------------------------ etcd


class EtcdServer:
    """One etcd member on loopback, in the foreground, ours to kill by PID."""

    def __init__(self, *, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="gr-etcd-"))
        self.log = self.dir / "etcd.log"
        for attempt in range(5):
            self.port = port or free_port()
            peer = f"http://127.0.0.1:{free_port()}"
            self.url = f"http://127.0.0.1:{self.port}"
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    [ETCD, "--name", "gr", "--data-dir", str(self.dir / f"data{attempt}"),
                     "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                     "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                     "--initial-cluster", f"gr={peer}", *args],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            if wait_for(self._started, f"etcd to answer /health (log: {self.log})") == "up":
                return
            self.proc.wait(10)
            if port is not None or "address already in use" not in self.log.read_text():
                pytest.fail(f"etcd exited {self.proc.returncode}:\n{self.log.read_text()}")
        pytest.fail("etcd: no free ports after 5 attempts")

    def _started(self) -> str:
        if self.proc.poll() is not None:
            return "exited"
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as answer:
                return "up" if json.load(answer).get("health") == "true" else ""
        except OSError:
            return ""

    def ctl(self, *args: str, check: bool = True, user: str = "") -> str:
        """Run etcdctl against this member; its stdout."""
        auth = ("--user", user) if user else ()
        done = subprocess.run([ETCDCTL, "--endpoints", self.url, *auth, *args],
                              capture_output=True, text=True, timeout=20,
                              env={**os.environ, "ETCDCTL_API": "3"})
        if check:
            assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by PID
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def read_key(server: EtcdServer, key: str, user: str = "") -> dict[str, Any] | None:
    """The key as `etcdctl get -w json` shows it: value (text), lease (int), revisions."""
    answer = json.loads(server.ctl("get", key, "-w", "json", user=user))
    kvs = answer.get("kvs") or []
    if not kvs:
        return None
    kv = kvs[0]
    return {"value": base64.b64decode(kv["value"]).decode(), "lease": kv.get("lease", 0),
            "mod_revision": kv["mod_revision"]}


class Watcher:
    """`etcdctl watch --rev REV KEY`: every event on KEY from revision REV on."""

    def __init__(self, server: EtcdServer, key: str, rev: int) -> None:
        self.proc = subprocess.Popen(
            [ETCDCTL, "--endpoints", server.url, "watch", "--rev", str(rev), key],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={**os.environ, "ETCDCTL_API": "3"})
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self.text = ""

    def events(self) -> list[str]:
        """The event types seen so far ("PUT", "DELETE"), reading what is there now."""
        assert self.proc.stdout is not None
        while self.selector.select(timeout=0):
            chunk = self.proc.stdout.read()
            if not chunk:
                break
            self.text += chunk.decode()
        return [line for line in self.text.splitlines() if line in ("PUT", "DELETE")]

    def close(self) -> None:
        self.selector.close()
        self.proc.kill()  # our own child, by PID
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def server() -> Iterator[EtcdServer]:
    etcd = EtcdServer()
    yield etcd
    etcd.close()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[EtcdServer]:
    """etcd with auth on: root, and user "svc" (password "s3cret") that may write /services/."""
    etcd = EtcdServer()
    etcd.ctl("user", "add", "root:rootpw")
    etcd.ctl("user", "grant-role", "root", "root")
    etcd.ctl("role", "add", "svc")
    etcd.ctl("role", "grant-permission", "svc", "--prefix=true", "readwrite", "/services/")
    etcd.ctl("user", "add", "svc:s3cret")
    etcd.ctl("user", "grant-role", "svc", "svc")
    etcd.ctl("auth", "enable")
    yield etcd
    etcd.close()


# ------------------------------------------------------------------ helpers


_keys = iter(range(10_000))


def unique_key(prefix: str = "/services/web") -> str:
    return f"{prefix}/10.0.{next(_keys)}.5:8080"


def make(url: str, key: str, **fields: Any) -> EtcdHook:
    fields.setdefault("timeout", 5.0)
    fields.setdefault("ttl", float(TTL))
    return EtcdHook(name="etcd", endpoint=url, key=key, **fields)


def drive(body: Callable[[Service], Awaitable[T]]) -> T:
    """Run `body(service)` on a fresh asyncio loop, as gracerun's run does."""

    async def main() -> T:
        return await body(Service(Reaper(), asyncio.get_running_loop()))

    return asyncio.run(main())


def timed(body: Callable[[Service], Awaitable[T]]) -> tuple[T | BaseException, float]:
    """drive() that returns (result or the exception raised, seconds it took)."""
    start = time.monotonic()
    try:
        result: T | BaseException = drive(body)
    except Exception as exc:
        result = exc
    return result, time.monotonic() - start


# ------------------------------------------------------------------ lease mode


def test_lease_key_stays_while_kept_alive_and_goes_at_run(server: EtcdServer) -> None:
    """Steps: restore() puts the key on a new lease (etcdctl reads it: our value, our
    lease); a watcher replays the key from that revision; keep_alive() runs for three TTLs
    and the key is still there, unchanged, with no DELETE seen; run() revokes the lease:
    the key is gone, the watcher sees the DELETE, and keep_alive() has stopped.
    """
    key = unique_key()
    hook = make(server.url, key)
    detail = drive(lambda s: etcd_hook.restore(hook, s))
    assert "lease" in detail, detail
    kv = read_key(server, key)
    assert kv is not None, "restore() returned but etcd has no key"
    assert json.loads(kv["value"]) == {"host": key.rpartition("/")[2].rpartition(":")[0],
                                       "port": 8080}
    lease = etcd_hook.registration(hook).lease
    assert kv["lease"] == lease != 0
    watcher = Watcher(server, key, kv["mod_revision"])
    try:
        wait_for(lambda: watcher.events() == ["PUT"], "the watcher to replay the PUT")

        async def keep_then_run(service: Service) -> tuple[Any, Any, bool]:
            stop = asyncio.Event()
            task = asyncio.create_task(etcd_hook.keep_alive(hook, service, stop))
            await asyncio.sleep(3 * TTL + 0.5)  # the time under test, not a handshake
            during = read_key(server, key)
            events = watcher.events()
            detail = await etcd_hook.run(hook, service)
            stopped = task.done()
            stop.set()
            await asyncio.wait([task], timeout=1)
            return during, (events, detail), stopped

        during, (events_during, run_detail), stopped = drive(keep_then_run)
        assert during is not None and during["lease"] == lease, \
            f"key gone while its lease was kept alive past {3 * TTL}s: {during}"
        assert during["mod_revision"] == kv["mod_revision"]
        assert events_during == ["PUT"]
        assert f"revoked lease {lease:x}" in run_detail
        assert stopped, "keep_alive() still running after run()"
        assert read_key(server, key) is None
        wait_for(lambda: watcher.events() == ["PUT", "DELETE"], "the watcher to see DELETE")
    finally:
        watcher.close()


def test_lease_expires_without_keep_alive_and_run_is_then_success(server: EtcdServer) -> None:
    """Negative control for the keep-alive: restore() alone, and the key goes after about
    a TTL; run() afterwards is success ("already gone"), fast.
    """
    key = unique_key()
    hook = make(server.url, key)
    drive(lambda s: etcd_hook.restore(hook, s))
    start = time.monotonic()
    wait_for(lambda: read_key(server, key) is None, "the lease to expire", timeout=15)
    expired_after = time.monotonic() - start
    assert expired_after >= TTL - 1, f"key gone after {expired_after:.1f}s, before its TTL"
    detail, took = timed(lambda s: etcd_hook.run(hook, s))
    assert isinstance(detail, str) and "already gone" in detail, detail
    assert took < 1.0


def test_keep_alive_registers_again_after_the_lease_was_lost(server: EtcdServer) -> None:
    """Steps: restore(); revoke its lease behind gracerun's back (etcdctl), so the key
    goes; keep_alive() finds the lease gone at its next renewal and puts the key again on
    a new lease; run() then removes it for good: it is still gone two renewal intervals
    later (keep_alive() must not bring it back).
    """
    key = unique_key()
    hook = make(server.url, key)

    async def scenario(service: Service) -> tuple[int, int]:
        await etcd_hook.restore(hook, service)
        old = etcd_hook.registration(hook).lease
        stop = asyncio.Event()
        task = asyncio.create_task(etcd_hook.keep_alive(hook, service, stop))
        await asyncio.to_thread(server.ctl, "lease", "revoke", f"{old:x}")
        deadline = time.monotonic() + 3 * TTL
        while (kv := await asyncio.to_thread(read_key, server, key)) is None \
                or kv["lease"] == old:
            assert time.monotonic() < deadline, "keep_alive() did not put the key back"
            await asyncio.sleep(0.05)
        await etcd_hook.run(hook, service)
        await asyncio.sleep(2 * TTL / 3 + 0.3)  # two renewal intervals: the time under test
        after = await asyncio.to_thread(read_key, server, key)
        assert after is None, f"key came back after run(): {after}"
        stop.set()
        await asyncio.wait([task], timeout=1)
        return old, kv["lease"]

    old, new = drive(scenario)
    assert new not in (0, old)


def test_keep_alive_registers_once_etcd_comes_up() -> None:
    """A failed start-up registration does not stay failed: restore() against an etcd
    not yet running fails fast (HookFailed, connection refused); keep_alive() keeps trying
    and puts the key once etcd answers on that address.
    """
    port = free_port()
    key = unique_key()
    hook = make(f"http://127.0.0.1:{port}", key)
    late: list[EtcdServer] = []

    async def scenario(service: Service) -> None:
        with pytest.raises(HookFailed, match="connection refused"):
            await etcd_hook.restore(hook, service)
        task = asyncio.create_task(etcd_hook.keep_alive(hook, service))
        late.append(await asyncio.to_thread(EtcdServer, port=port))
        deadline = time.monotonic() + 20
        while await asyncio.to_thread(read_key, late[0], key) is None:
            assert time.monotonic() < deadline, "keep_alive() never registered"
            await asyncio.sleep(0.1)
        await etcd_hook.run(hook, service)
        assert task.done()

    try:
        drive(scenario)
        assert read_key(late[0], key) is None
    finally:
        for etcd in late:
            etcd.close()


# ------------------------------------------------------------------ delete mode


def test_delete_mode_puts_without_lease_and_deletes(server: EtcdServer) -> None:
    """restore() puts the key with no lease and a given value; keep_alive() is a no-op;
    run() deletes it; a second run() is success ("already gone")."""
    key = unique_key()
    hook = make(server.url, key, mode="delete", value='{"zone": "a"}')
    drive(lambda s: etcd_hook.restore(hook, s))
    kv = read_key(server, key)
    assert kv is not None and (kv["value"], kv["lease"]) == ('{"zone": "a"}', 0)
    drive(lambda s: etcd_hook.keep_alive(hook, s))  # returns at once
    assert drive(lambda s: etcd_hook.run(hook, s)).endswith(": deleted")
    assert read_key(server, key) is None
    assert drive(lambda s: etcd_hook.run(hook, s)).endswith(": already gone")


def test_rolling_restart_of_two_instances(server: EtcdServer) -> None:
    """Two instances under one prefix: take A out and back, then B: both end registered."""
    a, b = unique_key("/services/roll"), unique_key("/services/roll")
    hooks = [make(server.url, a), make(server.url, b)]
    for hook in hooks:
        drive(lambda s, h=hook: etcd_hook.restore(h, s))  # type: ignore[misc]
    for hook, other in ((hooks[0], b), (hooks[1], a)):
        drive(lambda s, h=hook: etcd_hook.run(h, s))  # type: ignore[misc]
        assert read_key(server, hook.key) is None and read_key(server, other) is not None
        drive(lambda s, h=hook: etcd_hook.restore(h, s))  # type: ignore[misc]
    listed = server.ctl("get", "--prefix", "/services/roll/", "--keys-only").split()
    assert sorted(listed) == sorted([a, b])
    for hook in hooks:
        drive(lambda s, h=hook: etcd_hook.run(h, s))  # type: ignore[misc]


# ------------------------------------------------------------------ auth


def test_auth_with_user_and_password(auth_server: EtcdServer) -> None:
    """User "svc" may write /services/: restore and run work with its token; a token etcd
    no longer accepts (as after expiry) is renewed once, transparently."""
    key = unique_key()
    hook = make(auth_server.url, key, username="svc", password="s3cret")
    drive(lambda s: etcd_hook.restore(hook, s))
    assert read_key(auth_server, key, user="root:rootpw") is not None
    etcd_hook.registration(hook).client._token = "expired.1"  # as after --auth-token-ttl
    assert "revoked lease" in drive(lambda s: etcd_hook.run(hook, s))
    assert read_key(auth_server, key, user="root:rootpw") is None


@pytest.mark.parametrize(("fields", "expected"), [
    ({"username": "svc", "password": "wrong-pw"},
     "authentication failed: wrong user name or password"),
    ({}, "auth enabled and no username/password"),
])
def test_auth_failures_are_clear_and_never_show_the_password(
        auth_server: EtcdServer, fields: dict[str, str], expected: str) -> None:
    hook = make(auth_server.url, unique_key(), **fields)
    for step in (etcd_hook.restore, etcd_hook.run):
        result, took = timed(lambda s, f=step: f(hook, s))  # type: ignore[misc]
        assert isinstance(result, HookFailed), result
        assert expected in str(result)
        assert "wrong-pw" not in str(result) and "s3cret" not in str(result)
        assert took < 2.0


def test_permission_denied_outside_the_users_prefix(auth_server: EtcdServer) -> None:
    hook = make(auth_server.url, "/other/10.0.0.1:80", username="svc", password="s3cret")
    with pytest.raises(HookFailed, match=r"kv/put: etcdserver: permission denied \(HTTP 403\)"):
        drive(lambda s: etcd_hook.restore(hook, s))


def test_password_stays_out_of_repr_and_validation() -> None:
    hook = make("http://user:hunter2@127.0.0.1:2379", "/k/a:1", username="u", password="pw!")
    assert "pw!" not in repr(hook)
    problems = etcd_hook.validate(hook)
    assert problems and problems[0].startswith("endpoint: bad endpoint")
    assert not any("hunter2" in p for p in problems)


# ------------------------------------------------------------------ failure paths


class FakeGateway:
    """An HTTP server on 127.0.0.1 answering every POST with one fixed (status, body)."""

    def __init__(self, status: int, body: bytes) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


BOTH = (etcd_hook.restore, etcd_hook.run)


@pytest.mark.parametrize(("status", "body", "expected", "steps"), [
    (500, b"oops", "HTTP 500", BOTH),
    (503, b'{"error": "etcdserver: request timed out", "code": 14}',
     r"etcdserver: request timed out \(HTTP 503\)", BOTH),
    (200, b"<html>not json", "garbage in the answer", BOTH),
    # A well-formed answer without "deleted" means nothing was deleted: run() is fine.
    (200, b'{"header": {}, "ID": "x1", "TTL": "10"}', "expected a number", BOTH[:1]),
    (404, b"404 page not found", "gateway prefix", BOTH),
])
def test_bad_answers_fail_cleanly(status: int, body: bytes, expected: str,
                                  steps: tuple[Any, ...]) -> None:
    fake = FakeGateway(status, body)
    try:
        for step in steps:
            result, took = timed(lambda s, f=step: f(make(fake.url, unique_key()), s))  # type: ignore[misc]
            assert isinstance(result, HookFailed) and not isinstance(result, HookTimedOut), \
                result
            assert "\n" not in str(result)
            assert re.search(expected, str(result)), str(result)
            assert took < 1.0
    finally:
        fake.close()


def test_etcd_down_fails_fast() -> None:
    hook = make(f"http://127.0.0.1:{free_port()}", unique_key(), timeout=3.0)
    for step in (etcd_hook.restore, etcd_hook.run):
        result, took = timed(lambda s, f=step: f(hook, s))  # type: ignore[misc]
        assert isinstance(result, HookFailed) and "connection refused" in str(result), result
        assert took < 1.0


def test_etcd_that_never_answers_times_out_within_the_timeout() -> None:
    """A listening socket that accepts (the kernel's backlog) and never answers."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        hook = make(f"http://127.0.0.1:{silent.getsockname()[1]}", unique_key(), timeout=0.8)
        for step in (etcd_hook.restore, etcd_hook.run):
            result, took = timed(lambda s, f=step: f(hook, s))  # type: ignore[misc]
            assert isinstance(result, HookTimedOut), result
            assert 0.8 <= took < 0.8 + 0.3, took


def test_validate() -> None:
    good = make("http://127.0.0.1:2379", "/services/web/[::1]:8080")
    assert etcd_hook.validate(good) == []
    assert etcd_hook._default_value(good.key) == b'{"host":"::1","port":8080}'
    bad = EtcdHook(name="e", timeout=1.0, endpoint="ftp://x", key="/services/web/pod-a",
                   mode="forever", gateway="v4", ttl=0.0, username="u")
    problems = etcd_hook.validate(bad)
    assert [p.partition(":")[0] for p in problems] == [
        "endpoint", "gateway", "value", "mode", "ttl", "username, password"], problems
