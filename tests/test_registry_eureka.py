"""The eureka hook against a contract server for Eureka server 1.10.x (Netflix/eureka
v1.10.18: InstanceResource, ApplicationResource, AbstractInstanceRegistry and its status
rules; see tests/contracts/eureka.py) with a DiscoveryClient-like heartbeat loop.

    soft     OUT_OF_SERVICE override: survives the client's renewals, and its
             re-registration; restore() removes it and the instance is UP again
    hard     cancel: the next renewal answers 404 and the client registers again
             (the negative control: the hard form is undone by heartbeats)
    paths    "/eureka" (Spring Cloud) and "/eureka/v2" (Netflix's WAR); a wrong one fails
    auth     HTTP basic auth in front (Spring Security): right, wrong and no credentials
    failure  refused, a server that never answers, 500, bodies that are not the JSON,
             a broken HTTP answer: each fails within the hook's timeout, secrets unshown

Heartbeats run every 50 ms here instead of 30 s; tests wait for N renewals (a handshake
on the loop's counter), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contracts.eureka import DiscoveryClientLoop, EurekaServer
from pipeline_support import refused_url

from gracerun.config import values
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle import hooks
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut
from gracerun.lifecycle.hooks.eureka import MODES, EurekaHook, restore, run

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
APP, IID = "orders", "orders-1:8080"
PASSWORD = "pw-9f8e-secret"
MARGIN = 0.5  # seconds a failing hook may take beyond its timeout


@pytest.fixture
def eureka() -> Iterator[EurekaServer]:
    with EurekaServer() as server:
        yield server


@pytest.fixture
def client(eureka: EurekaServer) -> Iterator[DiscoveryClientLoop]:
    loop = DiscoveryClientLoop(eureka.base, APP, IID, interval=0.05)
    loop.start()
    yield loop
    loop.stop()


def make(server: EurekaServer | None = None, **fields: Any) -> EurekaHook:
    base: dict[str, Any] = {"name": "eureka", "timeout": 2.0, "app": APP, "instance_id": IID}
    if server is not None:
        base["url"] = server.base
    return EurekaHook(**{**base, **fields})


def call(fn: Callable[[EurekaHook, Service], Awaitable[str]], hook: EurekaHook) -> str:
    async def main() -> str:
        return await fn(hook, Service(Reaper(), asyncio.get_running_loop()))

    return asyncio.run(main())


def failing(fn: Callable[[EurekaHook, Service], Awaitable[str]], hook: EurekaHook,
            error: type[Exception] = HookFailed) -> tuple[str, float]:
    """Run a call that must fail with `error`; (message, seconds taken)."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        call(fn, hook)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert PASSWORD not in message and "value=" not in message and "?" not in message
    return message, elapsed


# --------------------------------------------------------- soft and hard


def test_out_of_service_survives_heartbeats(eureka: EurekaServer,
                                            client: DiscoveryClientLoop) -> None:
    """1. the client registered and renews: the instance is discoverable (UP)
    2. run(): PUT .../status?value=OUT_OF_SERVICE, read back OUT_OF_SERVICE
    3. 10 more renewals all answer 200, nothing re-registers, and the instance stays
       OUT_OF_SERVICE with the override in force: out of every client's list
    """
    assert eureka.discoverable(APP) == {IID}
    detail = call(run, make(eureka))
    assert detail == f"ORDERS/{IID}: OUT_OF_SERVICE (override OUT_OF_SERVICE)"
    (put,) = eureka.calls("PUT", r"/status$")
    assert put.query == {"value": ["OUT_OF_SERVICE"]}
    assert put.headers["accept"] == "application/json"

    seen = len(client.renewals)
    client.wait_beats(10)
    assert client.renewals[seen:] and set(client.renewals[seen:]) == {200}
    assert client.reregistrations == 0
    info = eureka.info(APP, IID)
    assert info is not None
    assert (info["status"], info["overriddenStatus"]) == ("OUT_OF_SERVICE", "OUT_OF_SERVICE")
    assert eureka.discoverable(APP) == set()


def test_cancel_is_undone_by_the_next_heartbeat(eureka: EurekaServer,
                                                client: DiscoveryClientLoop) -> None:
    """The negative control for the soft form:
    1. run() in mode "cancel": DELETE the instance; the read-back sees 404
    2. the client's next renewal answers 404, it registers again, the instance is UP
    """
    detail = call(run, make(eureka, mode="cancel"))
    assert detail == f"ORDERS/{IID}: cancelled, read back: not registered"
    assert eureka.calls("DELETE", IID + "$")
    client.wait_beats(3)
    assert client.reregistrations >= 1
    assert 404 in client.renewals
    assert eureka.discoverable(APP) == {IID}


def test_the_override_outlives_a_restart_and_restore_removes_it(
        eureka: EurekaServer, client: DiscoveryClientLoop) -> None:
    """1. run(): OUT_OF_SERVICE
    2. the service restarts under the same instance ID: its client registers again
       (newer lastDirtyTimestamp) while the lease exists, and the server re-applies the
       override: still OUT_OF_SERVICE.  This is why restore() exists.
    3. restore(): DELETE .../status?value=UP, read back UP with no override
    4. 5 more renewals: still UP, no re-registration (value=UP keeps the status from
       becoming UNKNOWN, which would make the next renewal answer 404)
    """
    call(run, make(eureka))
    client.last_dirty = int(time.time() * 1000) + 1
    assert client.register() == 204
    info = eureka.info(APP, IID)
    assert info is not None and info["status"] == "OUT_OF_SERVICE"

    detail = call(restore, make(eureka))
    assert detail == f"ORDERS/{IID}: UP (override removed)"
    (delete,) = eureka.calls("DELETE", r"/status$")
    assert delete.query == {"value": ["UP"]}
    info = eureka.info(APP, IID)
    assert info is not None
    assert (info["status"], info["overriddenStatus"]) == ("UP", "UNKNOWN")

    seen, rereg = len(client.renewals), client.reregistrations
    client.wait_beats(5)
    assert set(client.renewals[seen:]) == {200} and client.reregistrations == rereg
    assert eureka.discoverable(APP) == {IID}


def test_restore_of_an_instance_that_is_up_changes_nothing(
        eureka: EurekaServer, client: DiscoveryClientLoop) -> None:
    assert call(restore, make(eureka)) == f"ORDERS/{IID}: UP"
    assert not eureka.calls("DELETE")


def test_restore_waits_for_the_client_to_register(eureka: EurekaServer) -> None:
    """1. restore() starts while nothing is registered: it polls the instance
    2. once it has polled at least once (seen in the server's log), the client registers
    3. restore() returns: UP
    """
    late = DiscoveryClientLoop(eureka.base, APP, IID, interval=0.05)

    async def main() -> str:
        task = asyncio.create_task(restore(make(eureka, timeout=10.0),
                                           Service(Reaper(), asyncio.get_running_loop())))
        while not eureka.calls("GET", IID + "$"):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(late.start)
        return await task

    try:
        assert asyncio.run(main()) == f"ORDERS/{IID}: UP"
    finally:
        late.stop()


def test_restore_fails_when_the_instance_never_registers(eureka: EurekaServer) -> None:
    message, elapsed = failing(restore, make(eureka, timeout=0.6))
    assert "not registered" in message and f"ORDERS/{IID}" in message
    assert elapsed < 0.6 + MARGIN


@pytest.mark.parametrize("mode", MODES)
def test_run_on_an_unknown_instance_is_already_gone(eureka: EurekaServer, mode: str) -> None:
    start = time.monotonic()
    assert call(run, make(eureka, mode=mode)) == f"ORDERS/{IID}: not registered (already gone)"
    assert time.monotonic() - start < 1.0
    assert eureka.calls("GET", r"/apps$")  # it made sure the URL is Eureka's API


def test_the_legacy_overriddenstatus_field_is_read() -> None:
    """Some Eureka releases wrote "overriddenstatus" (Netflix/eureka #1051)."""
    with EurekaServer(legacy_override_field=True) as server:
        loop = DiscoveryClientLoop(server.base, APP, IID, interval=0.05)
        loop.start()
        try:
            assert call(run, make(server)).endswith("(override OUT_OF_SERVICE)")
            assert call(restore, make(server)) == f"ORDERS/{IID}: UP (override removed)"
        finally:
            loop.stop()


# ----------------------------------------------------------------- paths


@pytest.mark.parametrize("prefix", ["/eureka", "/eureka/v2"])
def test_base_path_with_and_without_v2(prefix: str) -> None:
    with EurekaServer(prefix=prefix) as server:
        loop = DiscoveryClientLoop(server.base, APP, IID, interval=0.05)
        loop.start()
        try:
            assert "OUT_OF_SERVICE" in call(run, make(server, url=server.base + "/"))
            assert call(restore, make(server)).endswith("UP (override removed)")
            # the other form of the path is not this server's API: an error, not "gone"
            other = "/eureka/v2" if prefix == "/eureka" else "/eureka"
            wrong = make(server, url=f"http://127.0.0.1:{server.port}{other}")
            message, _ = failing(run, wrong)
            assert "HTTP 404" in message and "no Eureka API at this URL" in message
            message, _ = failing(restore, wrong)
            assert "no Eureka API at this URL" in message
        finally:
            loop.stop()


# ------------------------------------------------------------------ auth


@pytest.fixture
def guarded() -> Iterator[tuple[EurekaServer, DiscoveryClientLoop]]:
    with EurekaServer(auth=("eureka", PASSWORD)) as server:
        loop = DiscoveryClientLoop(server.base, APP, IID, interval=0.05,
                                   auth=("eureka", PASSWORD))
        loop.start()
        yield server, loop
        loop.stop()


def test_basic_auth(guarded: tuple[EurekaServer, DiscoveryClientLoop]) -> None:
    server, _ = guarded
    hook = make(server, username="eureka", password=PASSWORD)
    assert PASSWORD not in repr(hook)
    assert "OUT_OF_SERVICE" in call(run, hook)
    assert call(restore, hook).endswith("UP (override removed)")
    mine = [r for r in server.requests if r.headers.get("user-agent") == "gracerun"]
    assert mine and all(r.headers.get("authorization", "").startswith("Basic ") for r in mine)
    assert all(PASSWORD not in r.raw_target for r in server.requests)


@pytest.mark.parametrize(("user", "password"), [("eureka", "wrong"), ("", "")])
def test_wrong_or_missing_credentials_fail_clearly(
        guarded: tuple[EurekaServer, DiscoveryClientLoop], user: str, password: str) -> None:
    server, _ = guarded
    hook = make(server, username=user, password=password)
    for fn in (run, restore):
        message, elapsed = failing(fn, hook)
        assert "HTTP 401" in message and "check username and password" in message
        assert elapsed < 1.0
    assert server.discoverable(APP) == {IID}  # nothing changed


# ------------------------------------------------------------- failures


def test_server_down_fails_at_once() -> None:
    for fn in (run, restore):
        message, elapsed = failing(fn, make(url=refused_url("/eureka")))
        assert "connection refused" in message and elapsed < 1.0


@pytest.mark.parametrize(("fn", "method", "path"), [
    (run, "PUT", r"/status$"),  # the write never answers
    (run, "GET", IID + "$"),  # the read-back never answers
    (restore, "GET", IID + "$"),
    (restore, "DELETE", r"/status$"),
])
def test_a_server_that_never_answers_times_out(
        eureka: EurekaServer, client: DiscoveryClientLoop, fn: Any, method: str,
        path: str) -> None:
    if fn is restore:
        call(run, make(eureka))  # so that restore has an override to remove
    eureka.inject(method, path, hang=True)
    message, elapsed = failing(fn, make(eureka, timeout=1.0), HookTimedOut)
    assert "timed out" in message and f"ORDERS/{IID}" in message
    assert 0.9 < elapsed < 1.0 + MARGIN


def test_cancellation_stops_a_hanging_call_at_once(eureka: EurekaServer) -> None:
    eureka.inject("PUT", r"/status$", hang=True)

    async def main() -> float:
        task = asyncio.create_task(run(make(eureka, timeout=30.0),
                                       Service(Reaper(), asyncio.get_running_loop())))
        while not eureka.calls("PUT"):
            await asyncio.sleep(0.01)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.2


@pytest.mark.parametrize(("fn", "method", "path"), [
    (run, "PUT", r"/status$"), (run, "DELETE", IID + "$"), (restore, "DELETE", r"/status$")])
def test_http_500_fails(eureka: EurekaServer, client: DiscoveryClientLoop, fn: Any,
                        method: str, path: str) -> None:
    if fn is restore:
        call(run, make(eureka))
    eureka.inject(method, path, status=500, body=b"Internal Server Error")
    hook = make(eureka, mode="cancel" if method == "DELETE" and fn is run else "out_of_service")
    message, elapsed = failing(fn, hook)
    assert "HTTP 500" in message and elapsed < 1.0


@pytest.mark.parametrize("body", [b"<html><body>Bad gateway</body></html>", b"{}",
                                  b'{"instance": "UP"}', b"\xff\xfe\x00", b""])
def test_a_body_that_is_not_the_instance_fails(eureka: EurekaServer,
                                               client: DiscoveryClientLoop,
                                               body: bytes) -> None:
    eureka.inject("GET", IID + "$", status=200, body=body, content_type="text/html")
    for fn in (run, restore):
        message, elapsed = failing(fn, make(eureka))
        assert "not an instance's JSON" in message and f"{len(body)} bytes" in message
        assert elapsed < 1.0


def test_a_broken_http_answer_fails() -> None:
    """A server that answers something that is not HTTP at all."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        stop = threading.Event()

        def serve() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.recv(65536)
                    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            message, elapsed = failing(run, make(url=f"http://127.0.0.1:{port}/eureka"))
            assert "malformed response" in message and elapsed < 1.0
        finally:
            stop.set()
            thread.join(5)


# -------------------------------------------------------- config, import


def example_hook() -> dict[str, Any]:
    doc = tomllib.loads((ROOT / "examples" / "eureka.toml").read_text())
    (table,) = [h for h in doc["shutdown"]["deregister"]["hooks"] if h["type"] == "eureka"]
    return dict(table)


def test_the_example_builds_a_hook_record() -> None:
    """Until `gracerun check` knows the kind: every key of the example's table is a field,
    and the record builds from it with ${ENV} expanded."""
    table = example_hook()
    env = {"EUREKA_URL": "http://eureka:8761/eureka", "HOSTNAME": "orders-7d9f",
           "EUREKA_USER": "svc", "EUREKA_PASSWORD": "x"}
    fields = {f.name for f in dataclasses.fields(EurekaHook)}
    assert set(table) - {"type"} <= fields
    kwargs: dict[str, Any] = {k: values.expand_env(v, env) if isinstance(v, str) else v
                              for k, v in table.items() if k != "type"}
    kwargs["timeout"] = values.duration(kwargs.get("timeout", "5s"))
    hook = EurekaHook(**{"name": "eureka", **kwargs})
    assert hook.kind == "eureka" and hook.mode in MODES
    assert hook.url == "http://eureka:8761/eureka" and hook.instance_id.startswith("orders-7d9f")


@pytest.mark.skipif("eureka" not in hooks.KINDS,
                    reason="the eureka kind is not wired into the config reader yet")
def test_gracerun_check_accepts_the_example() -> None:
    env = {**os.environ, "EUREKA_URL": "http://eureka:8761/eureka", "HOSTNAME": "orders-7d9f",
           "EUREKA_USER": "svc", "EUREKA_PASSWORD": PASSWORD}
    done = subprocess.run([sys.executable, "-m", "gracerun", "check", "--config",
                           str(ROOT / "examples" / "eureka.toml"), "--grace-period", "125"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr


def test_importing_the_hook_does_not_import_asyncio() -> None:
    code = ("import sys, gracerun.lifecycle.hooks.eureka; "
            "assert 'asyncio' not in sys.modules, 'asyncio imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
