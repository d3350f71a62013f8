"""The consul hook against a contract server for the Consul 1.15+ agent HTTP API
(hashicorp/consul agent/agent_endpoint.go, agent/acl.go, agent/agent.go, agent/http.go;
see tests/contracts/consul.py) with a TTL heartbeat loop like Spring Cloud Consul's.

    soft     maintenance: a critical "_service_maintenance:<id>" check that the TTL
             heartbeat cannot clear; the instance stays out of /v1/health/service?passing;
             restore() turns it off and the instance is listed again
    hard     deregister: the next heartbeat gets 404 for its check and, with
             re-registration on failure on, registers the service again (the negative
             control); restore() in this mode registers the service from the hook's fields
    auth     the ACL token in X-Consul-Token, never in the URL; a token that does not exist,
             one without service:write, and none at all each fail clearly
    failure  refused, a server that never answers, 500, a 404 that is not the agent's,
             bodies that are not the JSON: each fails within the hook's timeout, the token
             unshown

Heartbeats run every 50 ms here instead of 20 s (2/3 of a 30 s TTL); tests wait for N
heartbeats (a handshake on the loop's counter), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contracts.consul import ANONYMOUS, ConsulAgent, Token, TtlHeartbeatLoop
from contracts.recording import http_call
from pipeline_support import refused_url

from gracerun.config import values
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle import hooks
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut
from gracerun.lifecycle.hooks.consul import MODES, ConsulHook, restore, run

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[1]
SID, NAME = "web-1", "web"
TOKEN = "3f7c1d2e-secret-write-token"
READER = "9a8b7c6d-secret-read-token"
TOKENS = {TOKEN: Token("acc-writer", write=frozenset({NAME})),
          READER: Token("acc-reader", read=frozenset({NAME}))}
MARGIN = 0.5  # seconds a failing hook may take beyond its timeout


@pytest.fixture
def agent() -> Iterator[ConsulAgent]:
    with ConsulAgent(dict(TOKENS)) as server:
        yield server


def spring_client(agent: ConsulAgent, reregister: bool = True) -> TtlHeartbeatLoop:
    return TtlHeartbeatLoop(agent.address, SID, NAME, token=TOKEN, interval=0.05,
                            reregister_on_failure=reregister)


@pytest.fixture
def client(agent: ConsulAgent) -> Iterator[TtlHeartbeatLoop]:
    loop = spring_client(agent)
    loop.start()
    yield loop
    loop.stop()


def make(agent: ConsulAgent | None = None, **fields: Any) -> ConsulHook:
    base: dict[str, Any] = {"name": "consul", "timeout": 2.0, "service_id": SID,
                            "token": TOKEN}
    if agent is not None:
        base["address"] = agent.address
    return ConsulHook(**{**base, **fields})


def call(fn: Callable[[ConsulHook, Service], Awaitable[str]], hook: ConsulHook) -> str:
    async def main() -> str:
        return await fn(hook, Service(Reaper(), asyncio.get_running_loop()))

    return asyncio.run(main())


def failing(fn: Callable[[ConsulHook, Service], Awaitable[str]], hook: ConsulHook,
            error: type[Exception] = HookFailed) -> tuple[str, float]:
    """Run a call that must fail with `error`; (message, seconds taken)."""
    start = time.monotonic()
    with pytest.raises(error) as info:
        call(fn, hook)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert TOKEN not in message and READER not in message and "?" not in message
    return message, elapsed


def listed(agent: ConsulAgent) -> list[str]:
    """The instances GET /v1/health/service/web?passing lists, read over HTTP."""
    status, body = http_call("GET", f"{agent.address}/v1/health/service/{NAME}?passing",
                             headers={"X-Consul-Token": TOKEN})
    assert status == 200
    return [entry["Service"]["ID"] for entry in json.loads(body)]


def mine(agent: ConsulAgent) -> list[Any]:
    return [r for r in agent.requests if r.headers.get("user-agent") == "gracerun"]


# --------------------------------------------------------- soft and hard


def test_maintenance_survives_ttl_heartbeats(agent: ConsulAgent,
                                             client: TtlHeartbeatLoop) -> None:
    """1. the client registered with a TTL check and passes it: the instance is listed
    2. run(): PUT .../maintenance/web-1?enable=true&reason=..., read back the
       maintenance check
    3. 10 more heartbeats all pass their check (200), nothing re-registers, and the
       instance stays out of /v1/health/service/web?passing
    """
    assert listed(agent) == [SID]
    assert call(run, make(agent)) == f"{SID}: in maintenance"
    (put,) = agent.calls("PUT", r"/maintenance/")
    assert put.path == f"/v1/agent/service/maintenance/{SID}"
    assert put.query == {"enable": ["true"], "reason": ["gracerun: shutting down"]}

    seen = len(client.passes)
    client.wait_beats(10)
    assert client.passes[seen:] and set(client.passes[seen:]) == {200}
    assert client.reregistrations == 0
    assert agent.check_ids(SID) == {f"service:{SID}": "passing",
                                    f"_service_maintenance:{SID}": "critical"}
    assert listed(agent) == []


def test_deregister_is_undone_by_the_ttl_heartbeat(agent: ConsulAgent,
                                                   client: TtlHeartbeatLoop) -> None:
    """The negative control for the soft form:
    1. run() in mode "deregister": the read-back finds the service gone
    2. the next heartbeat answers 404 ("Unknown check ID"), the client registers the
       service again, the one after passes its check: listed again
    """
    detail = call(run, make(agent, mode="deregister"))
    assert detail == f"{SID}: deregistered, read back: unknown to the agent"
    client.wait_beats(3)
    assert 404 in client.passes and client.reregistrations >= 1
    assert listed(agent) == [SID]


def test_deregister_lasts_when_the_client_does_not_reregister(agent: ConsulAgent) -> None:
    """Spring Cloud Consul's default (reregister-service-on-failure = false): the
    heartbeat keeps failing with 404 and the instance stays gone."""
    loop = spring_client(agent, reregister=False)
    loop.start()
    try:
        call(run, make(agent, mode="deregister"))
        seen = len(loop.passes)
        loop.wait_beats(5)
        assert set(loop.passes[seen:]) == {404} and loop.reregistrations == 0
        assert listed(agent) == []
    finally:
        loop.stop()


def test_restore_ends_maintenance(agent: ConsulAgent, client: TtlHeartbeatLoop) -> None:
    """1. run(): maintenance on, out of the list
    2. restore(): PUT ...?enable=false, read back: no maintenance check
    3. listed again, with the same registration (nothing re-registered)
    """
    call(run, make(agent))
    assert listed(agent) == []
    assert call(restore, make(agent)) == f"{SID}: out of maintenance (passing)"
    assert agent.calls("PUT", r"/maintenance/")[-1].query == {"enable": ["false"]}
    client.wait_beats(3)
    assert listed(agent) == [SID] and client.reregistrations == 0
    assert not agent.calls("PUT", r"/register$")[1:]  # only the client's own, at start


def test_restore_of_a_service_not_in_maintenance_changes_nothing(
        agent: ConsulAgent, client: TtlHeartbeatLoop) -> None:
    assert call(restore, make(agent)) == f"{SID}: not in maintenance (passing)"
    assert [r.method for r in mine(agent)] == ["GET"]


def test_reason_and_default_reason(agent: ConsulAgent, client: TtlHeartbeatLoop) -> None:
    call(run, make(agent, reason="deploy 42: draining"))
    check = agent.checks[f"_service_maintenance:{SID}"]
    assert (check.notes, check.name, check.type) == ("deploy 42: draining",
                                                     "Service Maintenance Mode", "maintenance")
    assert agent.calls("PUT", r"/maintenance/")[0].raw_target.endswith(
        "reason=deploy%2042%3A%20draining")


def test_restore_in_deregister_mode_registers_the_service(agent: ConsulAgent) -> None:
    """No client of its own: gracerun is the registrar.
    1. restore(): the agent does not know web-1, so PUT /v1/agent/service/register with
       the hook's fields; read back: registered, its new TTL check critical until passed
    2. run(): deregistered; restore() again registers it again
    """
    hook = make(agent, mode="deregister", service_name=NAME, service_address="10.0.0.7",
                service_port=8080, tags=("v2", "blue"), check_ttl=30.0)
    assert call(restore, hook) == f"{SID}: registered (critical)"
    (put,) = agent.calls("PUT", r"/register$")
    assert json.loads(put.body) == {"ID": SID, "Name": NAME, "Tags": ["v2", "blue"],
                                    "Meta": {"registered-by": "gracerun"},
                                    "Address": "10.0.0.7", "Port": 8080,
                                    "Check": {"TTL": "30s"}}
    service = agent.services[SID]
    assert (service.name, service.address, service.port, service.tags) == \
        (NAME, "10.0.0.7", 8080, ["v2", "blue"])
    assert agent.check_ids(SID) == {f"service:{SID}": "critical"}

    assert "deregistered" in call(run, hook)
    assert SID not in agent.services
    assert call(restore, hook) == f"{SID}: registered (critical)"


def test_restore_registers_an_http_check(agent: ConsulAgent) -> None:
    hook = make(agent, mode="deregister", service_name=NAME, service_port=8080,
                check_http="http://10.0.0.7:8080/health", check_interval=2.5)
    call(restore, hook)
    (put,) = agent.calls("PUT", r"/register$")
    assert json.loads(put.body)["Check"] == {"HTTP": "http://10.0.0.7:8080/health",
                                             "Interval": "2500ms"}
    assert agent.checks[f"service:{SID}"].interval == "2500ms"


def test_restore_in_deregister_mode_leaves_a_registered_service_alone(
        agent: ConsulAgent, client: TtlHeartbeatLoop) -> None:
    """The service's own client registered it: its registration is not overwritten."""
    hook = make(agent, mode="deregister", service_name=NAME, service_port=9999)
    assert call(restore, hook) == f"{SID}: not in maintenance (passing)"
    assert agent.services[SID].port == 8080
    assert not [r for r in mine(agent) if r.method == "PUT"]


def test_restore_in_deregister_mode_needs_a_name(agent: ConsulAgent) -> None:
    message, _ = failing(restore, make(agent, mode="deregister"))
    assert "no service_name" in message


def test_restore_waits_for_the_client_to_register(agent: ConsulAgent) -> None:
    """1. restore() starts while the agent does not know the service: it polls
    2. once it has polled (seen in the agent's log), the client registers
    3. restore() returns"""
    late = spring_client(agent)

    async def main() -> str:
        task = asyncio.create_task(restore(make(agent, timeout=10.0),
                                           Service(Reaper(), asyncio.get_running_loop())))
        while not agent.calls("GET", r"/health/service/id/"):
            await asyncio.sleep(0.01)
        await asyncio.to_thread(late.start)
        return await task

    try:
        assert asyncio.run(main()) == f"{SID}: not in maintenance (passing)"
    finally:
        late.stop()


def test_restore_fails_when_the_service_never_registers(agent: ConsulAgent) -> None:
    message, elapsed = failing(restore, make(agent, timeout=0.6))
    assert "not registered with the agent" in message and SID in message
    assert elapsed < 0.6 + MARGIN


@pytest.mark.parametrize("mode", MODES)
def test_run_on_an_unknown_service_is_already_gone(agent: ConsulAgent, mode: str) -> None:
    start = time.monotonic()
    detail = call(run, make(agent, mode=mode))
    assert detail == f"{SID}: not registered with the agent (already gone)"
    assert time.monotonic() - start < 1.0


# ------------------------------------------------------------------ ACLs


def test_the_token_goes_in_the_header_only(agent: ConsulAgent,
                                           client: TtlHeartbeatLoop) -> None:
    hook = make(agent)
    assert TOKEN not in repr(hook)
    call(run, hook)
    call(restore, hook)
    requests = mine(agent)
    assert len(requests) >= 4
    assert all(r.headers.get("x-consul-token") == TOKEN for r in requests)
    assert all("token" not in r.raw_target.lower() for r in requests)


@pytest.mark.parametrize(("token", "said"), [
    ("no-such-token", "HTTP 403: ACL not found (the ACL token does not exist)"),
    (READER, "HTTP 403: Permission denied: token with AccessorID 'acc-reader' lacks "
             "permission 'service:write' on \"web\" (check the ACL token"),
    # restore reads first, and the anonymous token may not even read: 'service:read'
    ("", f"HTTP 403: Permission denied: token with AccessorID '{ANONYMOUS}' lacks "
         "permission 'service:"),
])
def test_a_bad_token_fails_clearly(agent: ConsulAgent, client: TtlHeartbeatLoop, token: str,
                                   said: str) -> None:
    call(run, make(agent))  # so that restore has work to do
    for fn in (run, restore):
        message, elapsed = failing(fn, make(agent, token=token))
        assert said in message and elapsed < 1.0
    assert f"_service_maintenance:{SID}" in agent.check_ids(SID)  # nothing changed


# ------------------------------------------------------------- failures


def test_agent_down_fails_at_once() -> None:
    for fn in (run, restore):
        message, elapsed = failing(fn, make(address=refused_url("")))
        assert "connection refused" in message and elapsed < 1.0


@pytest.mark.parametrize(("fn", "method", "path"), [
    (run, "PUT", r"/maintenance/"),  # the write never answers
    (run, "GET", r"/health/service/id/"),  # the read-back never answers
    (restore, "GET", r"/health/service/id/"),
    (restore, "PUT", r"/maintenance/"),
])
def test_an_agent_that_never_answers_times_out(agent: ConsulAgent, client: TtlHeartbeatLoop,
                                               fn: Any, method: str, path: str) -> None:
    if fn is restore:
        call(run, make(agent))
    agent.inject(method, path, hang=True)
    message, elapsed = failing(fn, make(agent, timeout=1.0), HookTimedOut)
    assert "timed out" in message and SID in message
    assert 0.9 < elapsed < 1.0 + MARGIN


def test_cancellation_stops_a_hanging_call_at_once(agent: ConsulAgent) -> None:
    agent.inject("PUT", r"/maintenance/", hang=True)

    async def main() -> float:
        task = asyncio.create_task(run(make(agent, timeout=30.0),
                                       Service(Reaper(), asyncio.get_running_loop())))
        while not agent.calls("PUT"):
            await asyncio.sleep(0.01)
        start = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    assert asyncio.run(main()) < 0.2


@pytest.mark.parametrize(("mode", "path"), [("maintenance", r"/maintenance/"),
                                            ("deregister", r"/deregister/")])
def test_http_500_fails(agent: ConsulAgent, client: TtlHeartbeatLoop, mode: str,
                        path: str) -> None:
    agent.inject("PUT", path, status=500, body=b"rpc error making call: No cluster leader")
    message, elapsed = failing(run, make(agent, mode=mode))
    assert "HTTP 500: rpc error making call: No cluster leader" in message and elapsed < 1.0


def test_a_404_that_is_not_the_agents_is_not_already_gone(agent: ConsulAgent,
                                                          client: TtlHeartbeatLoop) -> None:
    """A proxy's 404, or a wrong address path, must fail, not pass as "already gone"."""
    agent.inject("PUT", r"/maintenance/", status=404, body=b"404 page not found")
    message, _ = failing(run, make(agent))
    assert "HTTP 404: 404 page not found" in message
    agent.clear_faults()
    message, _ = failing(run, make(agent, address=agent.address + "/consul"))
    assert "HTTP 404: Invalid URL path" in message
    assert listed(agent) == [SID]


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"[]", b"{}",
                                  b'{"AggregatedStatus": "passing", "Service": "web-1"}',
                                  b"\xff\xfe", b""])
def test_a_body_that_is_not_the_health_json_fails(agent: ConsulAgent,
                                                  client: TtlHeartbeatLoop,
                                                  body: bytes) -> None:
    agent.inject("GET", r"/health/service/id/", status=200, body=body,
                 content_type="text/html")
    for fn in (run, restore):
        message, elapsed = failing(fn, make(agent))
        assert "not the agent's service health JSON" in message
        assert f"text/html, {len(body)} bytes" in message and elapsed < 1.0


def test_an_error_body_echoing_the_request_is_scrubbed(agent: ConsulAgent,
                                                       client: TtlHeartbeatLoop) -> None:
    """Whatever a proxy answers, neither the token nor a query string gets into messages."""
    echo = (f"bad request PUT /v1/agent/service/maintenance/{SID}?enable=true&token={TOKEN} "
            f"X-Consul-Token: {TOKEN}").encode()
    agent.inject("PUT", r"/maintenance/", status=400, body=echo)
    message, _ = failing(run, make(agent))
    assert "HTTP 400: bad request PUT" in message and "***" in message


# -------------------------------------------------------- config, import


def example_hook() -> dict[str, Any]:
    doc = tomllib.loads((ROOT / "examples" / "consul.toml").read_text())
    (table,) = [h for h in doc["shutdown"]["deregister"]["hooks"] if h["type"] == "consul"]
    return dict(table)


def test_the_example_builds_a_hook_record() -> None:
    """Until `gracerun check` knows the kind: every key of the example's table is a field,
    and the record builds from it with ${ENV} expanded."""
    table = example_hook()
    env = {"HOST_IP": "10.0.0.2", "HOSTNAME": "orders-7d9f", "CONSUL_HTTP_TOKEN": TOKEN}
    fields = {f.name for f in dataclasses.fields(ConsulHook)}
    assert set(table) - {"type"} <= fields
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "type":
            continue
        if isinstance(value, str):
            value = values.expand_env(value, env)
        if key in ("timeout", "check_interval", "check_ttl"):
            value = values.duration(value)
        if key == "tags":
            value = tuple(value)
        kwargs[key] = value
    hook = ConsulHook(**{"name": "consul", **kwargs})
    assert hook.kind == "consul" and hook.mode in MODES
    assert hook.token == TOKEN and TOKEN not in repr(hook)
    assert hook.address == "http://10.0.0.2:8500"
    assert hook.registration()["ID"] == hook.service_id == "orders-orders-7d9f"


@pytest.mark.skipif("consul" not in hooks.KINDS,
                    reason="the consul kind is not wired into the config reader yet")
def test_gracerun_check_accepts_the_example() -> None:
    env = {**os.environ, "HOST_IP": "10.0.0.2", "HOSTNAME": "orders-7d9f",
           "CONSUL_HTTP_TOKEN": TOKEN}
    done = subprocess.run([sys.executable, "-m", "gracerun", "check", "--config",
                           str(ROOT / "examples" / "consul.toml"), "--grace-period", "65"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert TOKEN not in done.stdout + done.stderr


def test_importing_the_hook_does_not_import_asyncio() -> None:
    code = ("import sys, gracerun.lifecycle.hooks.consul; "
            "assert 'asyncio' not in sys.modules, 'asyncio imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
