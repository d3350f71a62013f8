"""A rolling restart through gracerun, against the registries' contract servers, while the
service's own registry client keeps heartbeating.

For Nacos (1.4.8 and 2.2.3), Eureka (1.10) and Consul (1.15), each with its contract
server (tests/contracts/) and its client loop (BeatClient, DiscoveryClientLoop,
TtlHeartbeatLoop: what the real client libraries do, every 50 ms here):

    1. two instances, A and B, each examples/app.py under gracerun with the system's
       deregister hook (its soft form) and a start-up probe; both registered and
       discoverable, heartbeats running for both throughout;
    2. restart A: gracerun's shutdown takes A out of discovery, and it stays out while
       the heartbeats go on (the soft form); the new A's start-up puts it back once
       /healthz answers, and /ready answers 200 only then;
    3. restart B the same way;
    4. both are discoverable, and the heartbeats never re-registered anything.

Synchronisation is by polling against monotonic deadlines; every server, client loop and
process a test starts is closed by its fixtures.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from contracts.consul import ConsulAgent, TtlHeartbeatLoop
from contracts.eureka import DiscoveryClientLoop, EurekaServer
from contracts.nacos import BEAT_INTERVAL_KEY, BeatClient, NacosServer
from pipeline_support import Gracerun, Harness, free_port, harness_pair, http_get, wait_for

pytestmark = pytest.mark.timeout(120)

SERVICE = "orders"


@dataclass
class System:
    """One registry: its hook table for an instance, and what discovery sees."""

    hook: Callable[[int], str]  # the hook's TOML keys for the instance on this port
    discoverable: Callable[[int], bool]
    client: Callable[[int], Any]  # start the service's own client loop for this port
    reregistrations: Callable[[Any], int]
    beats: Callable[[Any], int]  # heartbeats the client has sent so far
    close: Callable[[], None]


def nacos(version: str) -> System:
    server = NacosServer(version, client_beat_interval=0.05)
    return System(
        hook=lambda port: (f'type = "nacos"\nserver = "{server.url}"\n'
                           f'service_name = "{SERVICE}"\nip = "127.0.0.1"\nport = {port}\n'),
        discoverable=lambda port: server.discoverable(SERVICE, "127.0.0.1", port),
        client=lambda port: BeatClient(server.url, SERVICE, "127.0.0.1", port,
                                       metadata={BEAT_INTERVAL_KEY: "50"}).start(),
        reregistrations=lambda c: c.reregistrations,
        beats=lambda c: c.beats,
        close=server.close)


def eureka() -> System:
    server = EurekaServer()
    server.start()

    def client(port: int) -> DiscoveryClientLoop:
        loop = DiscoveryClientLoop(server.base, SERVICE, f"host:{SERVICE}:{port}", port=port)
        loop.start()
        return loop

    return System(
        hook=lambda port: (f'type = "eureka"\nurl = "{server.base}"\napp = "{SERVICE}"\n'
                           f'instance_id = "host:{SERVICE}:{port}"\n'),
        discoverable=lambda port: f"host:{SERVICE}:{port}" in server.discoverable(SERVICE),
        client=client,
        reregistrations=lambda c: c.reregistrations,
        beats=lambda c: len(c.renewals),
        close=server.close)


def consul() -> System:
    agent = ConsulAgent()
    agent.start()

    def client(port: int) -> TtlHeartbeatLoop:
        loop = TtlHeartbeatLoop(agent.address, f"{SERVICE}-{port}", SERVICE, port=port,
                                reregister_on_failure=True)
        loop.start()
        return loop

    return System(
        hook=lambda port: (f'type = "consul"\naddress = "{agent.address}"\n'
                           f'service_id = "{SERVICE}-{port}"\n'),
        discoverable=lambda port: f"{SERVICE}-{port}" in agent.passing(SERVICE),
        client=client,
        reregistrations=lambda c: c.reregistrations,
        beats=lambda c: len(c.passes),
        close=agent.close)


SYSTEMS = {"nacos-1.4.8": lambda: nacos("1.4.8"), "nacos-2.2.3": lambda: nacos("2.2.3"),
           "eureka": eureka, "consul": consul}


@pytest.fixture(params=sorted(SYSTEMS))
def system(request: pytest.FixtureRequest) -> Iterator[System]:
    made = SYSTEMS[request.param]()
    yield made
    made.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Harness, Harness]]:
    yield from harness_pair(tmp_path)


def config(h: Harness, system: System, listen: str) -> str:
    return f"""
[shutdown]
budget = "15s"
stop_grace = "3s"
[[shutdown.deregister.hooks]]
{system.hook(h.port)}timeout = "3s"
[startup]
probe = {{ type = "http", url = "http://127.0.0.1:{h.port}/healthz" }}
interval = "100ms"
[server]
listen = "{listen}"
"""


def test_a_rolling_restart_leaves_every_instance_in_rotation(
        system: System, pair: tuple[Harness, Harness]) -> None:
    clients = []
    try:
        runs: dict[str, tuple[Harness, Gracerun, str, str]] = {}
        for name, h in zip("ab", pair, strict=True):
            listen = f"127.0.0.1:{free_port()}"
            cfg = config(h, system, listen)
            clients.append(system.client(h.port))  # the service's own client registers it
            runs[name] = (h, h.start(cfg), cfg, listen)
        for h, _, _, listen in runs.values():
            wait_for(lambda listen=listen: http_get(f"http://{listen}/ready")[0] == 200,
                     "/ready after the start-up")
            assert system.discoverable(h.port)
        for name in "ab":
            h, run, cfg, listen = runs[name]
            run.signal(signal.SIGTERM)
            assert run.wait() == 0
            assert run.phase_ended("deregister")["reason"] == "done"
            # Out, and it stays out while the heartbeats go on (the soft form).
            client = clients["ab".index(name)]
            target = system.beats(client) + 5
            wait_for(lambda c=client, t=target: system.beats(c) >= t, "five more heartbeats")
            assert not system.discoverable(h.port), f"{name} came back before its start"
            new = h.start(cfg)
            wait_for(lambda h=h: system.discoverable(h.port), f"{name} put back")
            wait_for(lambda listen=listen: http_get(f"http://{listen}/ready")[0] == 200,
                     "/ready")
            assert new.wait_log("phase ended", phase="register")["reason"] == "registered"
            runs[name] = (h, new, cfg, listen)
        assert all(system.discoverable(h.port) for h, *_ in runs.values())
        assert [system.reregistrations(c) for c in clients] == [0, 0]
    finally:
        for c in clients:
            c.stop()
