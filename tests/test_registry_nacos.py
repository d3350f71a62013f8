"""The nacos hook, both directions, against the contract server of tests/contracts/nacos.py.

That server implements the naming open API as Nacos 1.4.8 and 2.2.3 do (the v2 API of
2.2.3 included; its docstring names the source files read), and BeatClient does what a
Nacos 1.x Java client (1.4.8) does for a registered instance: register, then beat, and
register again when a beat is answered 20404.  The instance's preserved.heart.beat.interval
metadata (read by client and server alike, as on a real deployment) makes it beat every
50 ms instead of every 5 s, so "survives N heartbeats" takes a second.

Each test builds the hook record itself and calls run() / restore() on asyncio.
Synchronisation is by polling against time.monotonic() deadlines or by counting beats;
every server and client a test starts is closed by its fixture.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from contracts.nacos import BEAT_INTERVAL_KEY, BeatClient, NacosServer
from pipeline_support import refused_url, wait_for

from gracerun.clients import nacos as client
from gracerun.config import values
from gracerun.core import log
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut
from gracerun.lifecycle.hooks.nacos import NacosHook, problems, restore, run

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
SERVICE, IP, PORT = "orders", "10.0.0.7", 8080
FAST = {BEAT_INTERVAL_KEY: "50"}  # ms between beats
MARGIN = 0.5  # seconds a failing hook may take beyond its timeout
# (server version, api_version): v2 is Nacos 2.2+ only
APIS = [("1.4.8", "v1"), ("2.2.3", "v1"), ("2.2.3", "v2")]

Step = Callable[[NacosHook, Service], Awaitable[str]]


@pytest.fixture
def servers() -> Iterator[Callable[..., NacosServer]]:
    started: list[NacosServer] = []

    def start(version: str = "2.2.3", **kwargs: Any) -> NacosServer:
        started.append(NacosServer(version, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., BeatClient]]:
    started: list[BeatClient] = []

    def start(server: NacosServer, **kwargs: Any) -> BeatClient:
        kwargs.setdefault("metadata", dict(FAST))
        started.append(BeatClient(server.url, SERVICE, IP, PORT, **kwargs).start())
        return started[-1]

    yield start
    for beat_client in started:
        beat_client.stop()


def hook(server: str | NacosServer, **overrides: Any) -> NacosHook:
    url = server.url if isinstance(server, NacosServer) else server
    record = NacosHook(name="nacos", timeout=3.0, server=url, service_name=SERVICE, ip=IP,
                       port=PORT)
    return replace(record, **overrides)


def call(step: Step, record: NacosHook) -> str:
    async def main() -> str:
        return await step(record, Service(Reaper(), asyncio.get_running_loop()))

    return asyncio.run(main())


def failure(step: Step, record: NacosHook) -> tuple[HookFailed, float]:
    """Run a step that must fail; its exception and how long it took."""
    loop_time: list[float] = []

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop_time.append(loop.time())
        try:
            return await step(record, Service(Reaper(), loop))
        finally:
            loop_time.append(loop.time())

    with pytest.raises(HookFailed) as info:
        asyncio.run(main())
    return info.value, loop_time[1] - loop_time[0]


def in_discovery(server: NacosServer) -> bool:
    return server.discoverable(SERVICE, IP, PORT)


# ----------------------------------------------------------------- soft form


@pytest.mark.parametrize(("version", "api"), APIS)
def test_disable_survives_heartbeats_and_restore_brings_it_back(servers, clients, version,
                                                                 api):
    """1. a 1.x client registers (weight 2, metadata) and beats every 50 ms
    2. run(mode="disable"): read-back sees the instance leave the list
    3. 20 more beats: still registered, still disabled, never re-registered
    4. restore(): back in discovery, weight and metadata as the client registered them
    """
    server = servers(version)
    beat = clients(server, weight=2.0, metadata={**FAST, "version": "7"})
    wait_for(lambda: in_discovery(server), "the client's registration")

    detail = call(run, hook(server, api_version=api))
    assert "enabled=false, out of discovery" in detail

    beat.wait_beats(20)
    instance = server.instance(SERVICE, IP, PORT)
    assert instance is not None and instance.enabled is False
    assert not in_discovery(server)
    assert beat.reregistrations == 0 and set(beat.codes) == {10200}

    detail = call(restore, hook(server, api_version=api))
    assert "enabled=true, in discovery" in detail
    instance = server.instance(SERVICE, IP, PORT)
    assert instance is not None and instance.enabled and instance.weight == 2.0
    assert instance.metadata == {**FAST, "version": "7"}
    beat.wait_beats(5)
    assert in_discovery(server)


@pytest.mark.parametrize("version", ["1.4.8", "2.2.3"])
def test_deregister_is_undone_by_the_next_heartbeat(servers, clients, version):
    """The negative control: the hard form takes effect (read-back sees the instance
    gone), then the client's next beat is answered 20404 and the client registers the
    instance again, back in discovery."""
    server = servers(version)
    beat = clients(server)
    beat.wait_beats(2)  # beats are light from now on: a missing instance is a 20404

    detail = call(run, hook(server, mode="deregister"))
    assert "deregistered" in detail

    wait_for(lambda: beat.reregistrations >= 1, "a beat answered 20404 and the client's "
             "registration that follows", timeout=5)
    assert 20404 in beat.codes
    assert in_discovery(server)


# --------------------------------------------------------- Nacos 2.x caveats


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_2x_grpc_instance_cannot_be_deleted_over_http_but_can_be_disabled(servers, api):
    """An instance a 2.x client registered over gRPC: DELETE answers "ok" and does nothing
    (read-back says so, and why); enabled=false works; restore enables it again."""
    server = servers("2.2.3")
    server.grpc_register(SERVICE, IP, PORT)

    error, took = failure(run, hook(server, mode="deregister", api_version=api, timeout=1.0))
    assert "still registered after DELETE" in str(error) and "gRPC" in str(error)
    assert not isinstance(error, HookTimedOut)
    assert took < 1.0 + MARGIN
    assert in_discovery(server)

    assert "enabled=false" in call(run, hook(server, api_version=api))
    assert not in_discovery(server)
    assert "enabled=true" in call(restore, hook(server, api_version=api))
    assert in_discovery(server)


def test_2x_disabled_override_outlives_a_restart_until_restore(servers):
    """On 2.x enabled=false is a metadata override kept for 60 s after the instance goes:
    a new instance at the same ip:port registers disabled.  restore() at start-up is
    what puts it back (on 1.x the registration itself would reset enabled)."""
    server = servers("2.2.3")
    server.grpc_register(SERVICE, IP, PORT)
    call(run, hook(server))
    server.grpc_deregister(SERVICE, IP, PORT)  # the old container is gone
    server.grpc_register(SERVICE, IP, PORT)  # the new one registers
    assert server.instance(SERVICE, IP, PORT) is not None
    assert not in_discovery(server)

    assert "enabled=true" in call(restore, hook(server))
    assert in_discovery(server)


# ------------------------------------------------------------------ start-up


def test_restore_waits_for_the_services_own_registration(servers):
    """mode "disable": restore() starts before the service's client has registered; it
    reads back until the registration shows, and succeeds without a write."""
    server = servers("1.4.8")

    async def main() -> str:
        step = asyncio.create_task(restore(hook(server), Service(Reaper(),
                                                                 asyncio.get_running_loop())))
        while not any(r.path.endswith("/list") for r in server.requests):
            await asyncio.sleep(0.01)  # until restore has looked once
        beat = BeatClient(server.url, SERVICE, IP, PORT, metadata=dict(FAST))
        await asyncio.to_thread(beat.start)
        try:
            return await step
        finally:
            beat.stop()

    detail = asyncio.run(main())
    assert "already enabled, in discovery" in detail
    assert not any(r.method == "PUT" and r.path == "/nacos/v1/ns/instance"
                   for r in server.requests)


def test_restore_fails_when_the_service_never_registers(servers):
    server = servers("2.2.3")
    error, took = failure(restore, hook(server, timeout=0.5))
    assert "not registered" in str(error)
    assert took < 0.5 + MARGIN


@pytest.mark.parametrize(("version", "api"), APIS)
def test_deregister_mode_registers_at_start_up(servers, version, api):
    """mode "deregister": restore() registers the instance (here persistent, with its
    weight and metadata), run() removes it, and nothing brings it back."""
    server = servers(version)
    record = hook(server, mode="deregister", api_version=api, ephemeral=False, weight=3.0,
                  metadata={"zone": "a"})
    assert "registered, in discovery" in call(restore, record)
    instance = server.instance(SERVICE, IP, PORT)
    assert instance is not None and instance.ephemeral is False
    assert instance.weight == 3.0 and instance.metadata == {"zone": "a"}

    assert "deregistered" in call(run, record)
    assert server.instance(SERVICE, IP, PORT) is None
    assert "already enabled" not in call(restore, record)  # registers it once more
    assert in_discovery(server)


# --------------------------------------------------------------- already gone


@pytest.mark.parametrize("mode", ["disable", "deregister"])
def test_an_instance_nacos_does_not_have_is_already_gone(servers, mode):
    server = servers("1.4.8")
    assert "not registered (already gone)" in call(run, hook(server, mode=mode))
    assert not any(r.method in ("PUT", "DELETE") for r in server.requests)


def test_an_instance_already_disabled_stays_so(servers, clients):
    server = servers("2.2.3")
    clients(server)
    wait_for(lambda: in_discovery(server), "the client's registration")
    call(run, hook(server))
    assert "already disabled" in call(run, hook(server))


# ---------------------------------------------------------------------- auth


@pytest.mark.parametrize(("version", "api"), APIS)
def test_login_token_goes_in_a_header_never_in_a_url(servers, clients, version, api):
    """Auth on: gracerun logs in with the password in the form body, then sends the
    token as "Authorization: Bearer" (Nacos's access log records request lines, query
    strings included); neither appears in a URL or in the detail returned."""
    password = "s3cret-pw"
    server = servers(version, auth=True, users={"nacos": password})
    clients(server, username="nacos", password=password)
    wait_for(lambda: in_discovery(server), "the client's registration")
    record = hook(server, api_version=api, username="nacos", password=password)

    details = [call(run, record), call(restore, record)]

    ours = [r for r in server.requests if r.headers.get("user-agent") == "gracerun"]
    logins = [r for r in ours if r.path == "/nacos/v1/auth/users/login"]
    assert len(logins) == 2  # one per hook run
    assert all(password.encode() in r.body and password not in r.query for r in logins)
    calls = [r for r in ours if "/ns/" in r.path]
    assert calls and all(r.headers.get("authorization", "").startswith("Bearer ")
                         for r in calls)
    tokens = {r.headers["authorization"].removeprefix("Bearer ") for r in calls}
    for r in ours:
        assert "accessToken" not in r.query and password not in r.query
        assert not any(token in r.query for token in tokens)
    for text in details:
        assert password not in text and not any(token in text for token in tokens)
    assert in_discovery(server)


@pytest.mark.parametrize("version", ["1.4.8", "2.2.3"])
def test_wrong_password_fails_with_the_servers_reason(servers, version):
    password = "not-the-password"
    server = servers(version, auth=True, users={"nacos": "right"})
    error, took = failure(run, hook(server, username="nacos", password=password))
    reason = "unknown user!" if version == "1.4.8" else "user not found!"
    assert f"login as 'nacos' refused: HTTP 403: {reason}" in str(error)
    assert password not in str(error)
    assert took < 1.0


def test_auth_on_and_no_credentials(servers):
    server = servers("2.2.3", auth=True)
    error, _ = failure(run, hook(server))
    assert "HTTP 403 forbidden: user not found! (auth is on: set username and password)" \
        in str(error)


def test_an_expired_token_is_renewed_once():
    """The client logs in again when Nacos says "token expired!", and carries on."""
    with NacosServer("1.4.8", auth=True, users={"nacos": "pw"}) as server:
        key = client.InstanceKey(service=SERVICE, ip=IP, port=PORT)

        async def main() -> None:
            nacos = client.Client(server.url, username="nacos", password="pw")
            assert await nacos.listed(key, 2.0) is None
            server.expire_tokens()
            assert await nacos.listed(key, 2.0) is None

        asyncio.run(main())
        logins = [r for r in server.requests if r.path.endswith("/login")]
        lists = [r for r in server.requests if r.path.endswith("/list")]
        assert len(logins) == 2 and len(lists) == 3  # the refused one, and its retry


# ------------------------------------------------------------- failure paths


@pytest.mark.parametrize("step", [run, restore], ids=["run", "restore"])
def test_server_down(step):
    error, took = failure(step, hook(refused_url(), timeout=2.0))
    assert "connection refused" in str(error) and "?" not in str(error)
    assert took < 1.0


@pytest.mark.parametrize("step", [run, restore], ids=["run", "restore"])
def test_server_that_never_answers_times_out_on_time(servers, step):
    server = servers("2.2.3")
    server.fault = "hang"
    error, took = failure(step, hook(server, timeout=1.0))
    assert isinstance(error, HookTimedOut) and "timed out" in str(error)
    assert 0.9 < took < 1.0 + MARGIN


@pytest.mark.parametrize("step", [run, restore], ids=["run", "restore"])
@pytest.mark.parametrize(("fault", "expected"), [("500", "HTTP 500: Server failed"),
                                                 ("garbage", "bad answer")])
def test_error_and_garbage_answers(servers, step, fault, expected):
    server = servers("1.4.8")
    server.fault = fault
    error, took = failure(step, hook(server, timeout=2.0))
    assert expected in str(error)
    assert "?" not in str(error) and "serviceName=" not in str(error)
    assert took < 1.0


@pytest.mark.parametrize(("server_path", "api", "expected"), [
    ("", "v2", 'no such API on this server (api_version "v2" needs Nacos 2.2 or later)'),
    ("/wrong", "v1", "no such API on this server (check the server URL"),
])
def test_no_such_api_is_not_mistaken_for_not_registered(servers, server_path, api, expected):
    """A 404 from a path Nacos does not serve must fail, not pass as "already gone"."""
    server = servers("1.4.8")
    error, _ = failure(run, hook(server.url + server_path, api_version=api))
    assert expected in str(error)


def test_a_down_server_in_the_list_is_skipped(servers, clients):
    server = servers("2.2.3")
    clients(server)
    wait_for(lambda: in_discovery(server), "the client's registration")
    down = refused_url()
    with log.capture(log.WARNING) as records:
        detail = call(run, hook(f"{down},{server.url}"))
    assert "enabled=false" in detail and not in_discovery(server)
    warnings = [r for r in records if "another answered" in r.message()]
    assert warnings, "the failover is logged"
    fields = warnings[0].fields
    assert "connection refused" in fields["failed"] and "?" not in fields["failed"]


def test_a_hanging_server_in_the_list_does_not_spend_the_whole_timeout(servers, clients):
    """Two servers, the first never answers: it gets half the time left, the second
    answers, and later requests go straight to the second."""
    hanging, good = servers("2.2.3"), servers("2.2.3")
    hanging.fault = "hang"
    clients(good)
    wait_for(lambda: in_discovery(good), "the client's registration")
    detail = call(run, hook(f"{hanging.url},{good.url}", timeout=2.0))
    assert "enabled=false" in detail and not in_discovery(good)
    assert len(hanging.requests) == 1


# ---------------------------------------------------------------- the record


def test_problems_name_each_bad_key():
    bad = hook("ftp://x", mode="drain", api_version="v3", service_name="G@@orders", port=0,
               weight=-1.0, username="nacos")
    found = problems(bad)
    for key in ("server:", "mode:", "api_version:", "service_name:", "port:", "weight:",
                "username, password:"):
        assert any(line.startswith(key) for line in found), (key, found)
    assert problems(hook("http://10.0.0.5:8848,http://10.0.0.6:8848/nacos")) == []
    assert problems(hook("http://user:pw@10.0.0.5:8848"))[0].startswith("server:")


def test_the_password_is_not_in_the_records_repr():
    assert "s3cret" not in repr(hook("http://x:8848", username="u", password="s3cret"))


def test_server_urls_get_the_default_context_path():
    assert client.server_urls("http://a:8848, http://b:8848/custom/") == \
        ("http://a:8848/nacos", "http://b:8848/custom")
    with pytest.raises(client.NacosError):
        client.server_urls(" , ")


def test_the_example_config_builds_a_valid_hook():
    """examples/nacos.toml: every key of its nacos hook tables is a NacosHook field, and
    the record it makes (secrets and addresses expanded) has no problems."""
    data = tomllib.loads((ROOT / "examples" / "nacos.toml").read_text())
    tables = [t for phase in ("notify", "deregister")
              for t in data["shutdown"].get(phase, {}).get("hooks", [])
              if t.get("type") == "nacos"]
    assert tables
    names = {f.name for f in fields(NacosHook)}
    environ = {"NACOS_ADDR": "http://10.0.0.5:8848", "POD_IP": "10.0.0.7",
               "NACOS_USERNAME": "nacos", "NACOS_PASSWORD": "pw",
               "NACOS_NAMESPACE": "f1e2d3c4", "SERVICE_NAME": "orders"}
    for table in tables:
        keys = set(table) - {"type"}
        assert keys <= names, keys - names
        args = {k: values.expand_env(v, environ) if isinstance(v, str) else v
                for k, v in table.items() if k != "type"}
        args["timeout"] = values.duration(table["timeout"])
        record = NacosHook(**args)
        assert problems(record) == []
        assert "${" not in repr(record)

