"""The kubernetes propagate probe against a fake API server (tests/contracts/kubernetes.py).

The probe asks whether this pod's endpoint in its Service's EndpointSlices is
still ready; each test builds the cluster state it needs and reads the probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gracerun.clients import kubernetes as k8s
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.lifecycle.probes import ProbeError, propagation
from gracerun.lifecycle.probes.kubernetes import KubernetesProbe
from tests.contracts.kubernetes import FakeKubernetes

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    server = FakeKubernetes(tmp_path_factory.mktemp("tls"), forbidden_tokens=("weak",))
    server.add_endpoint("shop", "web", "web-1", "10.0.0.1")
    server.add_endpoint("shop", "web", "web-2", "10.0.0.2")
    server.add_endpoint("shop", "legacy", "legacy-1", "10.0.0.9", with_target_ref=False)
    yield server
    server.close()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("sa-token\n")
    return path


def probe(server: FakeKubernetes, token: Path, **fields: object) -> KubernetesProbe:
    base: dict[str, object] = {"service": "web", "namespace": "shop", "pod_name": "web-1",
                               "api": server.url, "token_file": str(token),
                               "ca_file": str(server.ca), "timeout": 2.0}
    base.update(fields)
    return KubernetesProbe(**base)  # type: ignore[arg-type]


def read(p: KubernetesProbe) -> bool:
    async def go() -> bool:
        check = propagation(p, Service(Reaper(), asyncio.get_running_loop()))
        assert check is not None
        return await check()

    return asyncio.run(go())


def test_a_ready_endpoint_has_not_propagated(api: FakeKubernetes, token: Path) -> None:
    assert read(probe(api, token)) is False
    path, auth = api.requests[-1][1:]
    assert path == "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices"
    assert auth == "Bearer sa-token"  # read from the file, newline stripped


def test_terminating_endpoint_has_propagated(api: FakeKubernetes, token: Path) -> None:
    api.add_endpoint("shop", "web", "web-3", "10.0.0.3")
    assert read(probe(api, token, pod_name="web-3")) is False
    api.terminate("shop", "web", "web-3")
    assert read(probe(api, token, pod_name="web-3")) is True
    assert read(probe(api, token, pod_name="web-2")) is False  # the others stay ready


def test_a_pod_missing_from_every_slice_has_propagated(api: FakeKubernetes,
                                                       token: Path) -> None:
    assert read(probe(api, token, pod_name="gone-1")) is True
    assert read(probe(api, token, service="no-such-service")) is True


def test_matching_by_address_without_a_target_ref(api: FakeKubernetes, token: Path) -> None:
    assert read(probe(api, token, service="legacy", pod_name="", pod_ip="10.0.0.9")) is False
    assert read(probe(api, token, service="legacy", pod_name="", pod_ip="10.0.0.8")) is True


def test_the_token_is_reread_at_each_request(api: FakeKubernetes, token: Path) -> None:
    token.write_text("rotated-but-wrong")
    with pytest.raises(ProbeError, match="401 unauthorized"):
        read(probe(api, token))
    token.write_text("sa-token")
    assert read(probe(api, token)) is False


@pytest.mark.parametrize("setup, message", [
    ("forbidden", "403 forbidden"),
    ("status", "HTTP 500"),
    ("garbage", "not JSON"),
    ("no-token-file", "cannot read the service account token"),
    ("wrong-ca", "certificate verify failed"),
])
def test_failures_are_probe_errors(api: FakeKubernetes, token: Path, tmp_path: Path,
                                   setup: str, message: str) -> None:
    fields: dict[str, object] = {}
    if setup == "forbidden":
        token.write_text("weak")
    elif setup == "status":
        api.status = 500
    elif setup == "garbage":
        api.garbage = True
    elif setup == "no-token-file":
        fields["token_file"] = str(tmp_path / "missing")
    elif setup == "wrong-ca":
        fields["ca_file"] = ""  # the system store does not know the fake CA
    try:
        with pytest.raises(ProbeError, match=message):
            read(probe(api, token, **fields))
    finally:
        api.status, api.garbage = None, False


def test_an_unanswering_api_server_is_bounded_by_the_timeout(api: FakeKubernetes,
                                                             token: Path) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts the TCP handshake, never the TLS one
    try:
        started = time.monotonic()
        with pytest.raises(ProbeError, match="timed out"):
            read(probe(api, token, api=f"https://127.0.0.1:{silent.getsockname()[1]}",
                       timeout=0.5))
        assert time.monotonic() - started < 1.5
    finally:
        silent.close()


def test_find_endpoint_reads_a_missing_ready_condition_as_ready() -> None:
    data = {"items": [{"endpoints": [{"addresses": ["10.1.1.1"], "conditions": {},
                                      "targetRef": {"kind": "Pod", "name": "p"}}]}]}
    state = k8s.find_endpoint(data, pod_name="p", pod_ip=None)
    assert state == k8s.EndpointState(found=True, ready=True, terminating=False)
    with pytest.raises(k8s.KubernetesError):
        k8s.find_endpoint({"kind": "Status"}, pod_name="p", pod_ip=None)
