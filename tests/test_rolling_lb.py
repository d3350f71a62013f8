"""Rolling restarts through gracerun with a real nginx and a real etcd (Debian packages).

nginx: two instances of examples/app.py behind one upstream; each gracerun's deregister
hook marks its own `server` line `down` and reloads nginx, and its start-up removes the
mark once the app answers /healthz.  etcd: each instance's key is put at start-up with a
lease that gracerun keeps alive (past several TTLs) and revoked at shutdown.

In both, a rolling restart (A, then B) ends with both instances in rotation.  The
servers are the ones tests/test_registry_nginx.py and test_registry_etcd.py start, ours
to stop by PID; synchronisation is by polling against monotonic deadlines.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from pipeline_support import Gracerun, Harness, free_port, harness_pair, http_get, wait_for
from test_registry_etcd import ETCD, EtcdServer, read_key
from test_registry_nginx import NGINX, Nginx

pytestmark = pytest.mark.timeout(120)


class Upstream(NamedTuple):
    """What test_registry_nginx.Nginx needs of a backend: its address and a name."""

    address: str
    name: str


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Harness, Harness]]:
    yield from harness_pair(tmp_path)


def common(h: Harness, listen: str) -> str:
    return f"""
[startup]
probe = {{ type = "http", url = "http://127.0.0.1:{h.port}/healthz" }}
interval = "100ms"
[server]
listen = "{listen}"
"""


def ready(listen: str) -> None:
    wait_for(lambda: http_get(f"http://{listen}/ready")[0] == 200, "/ready")


def rolling_restart(pair: tuple[Harness, Harness], configs: list[str],
                    out: Callable[[Harness], None],
                    back: Callable[[Harness], None]) -> list[Gracerun]:
    """Start both, then restart A and B in turn; `out(h)` / `back(h)` are the checks
    while one is down and once it is back."""
    listens = [f"127.0.0.1:{free_port()}" for _ in pair]
    cfgs = [cfg + common(h, listen) for h, cfg, listen in zip(pair, configs, listens,
                                                              strict=True)]
    runs = [h.start(cfg) for h, cfg in zip(pair, cfgs, strict=True)]
    for listen in listens:
        ready(listen)
    for i, h in enumerate(pair):
        runs[i].signal(signal.SIGTERM)
        assert runs[i].wait() == 0
        out(h)
        runs[i] = h.start(cfgs[i])
        ready(listens[i])
        assert runs[i].wait_log("phase ended", phase="register")["reason"] == "registered"
        back(h)
    return runs


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed")
def test_rolling_restart_behind_nginx(pair: tuple[Harness, Harness]) -> None:
    a, b = pair
    lb = Nginx([Upstream(f"127.0.0.1:{h.port}", n) for h, n in ((a, "A"), (b, "B"))])
    try:
        def hook(h: Harness) -> str:
            return f"""
[shutdown]
budget = "20s"
stop_grace = "3s"
[[shutdown.deregister.hooks]]
type = "nginx"
upstream_file = "{lb.upstream}"
server = "127.0.0.1:{h.port}"
pid_file = "{lb.pid_file}"
timeout = "5s"
"""

        def pids(requests: int = 12) -> Counter[str]:
            return Counter(lb.get().split()[-1] for _ in range(requests))

        def line(h: Harness) -> str:
            return next(x for x in lb.upstream.read_text().splitlines()
                        if f"127.0.0.1:{h.port} " in x)

        def out(h: Harness) -> None:
            assert " down;" in line(h)
            assert len(pids()) == 1  # every request goes to the other instance

        def back(h: Harness) -> None:
            assert " down" not in line(h)

        runs = rolling_restart(pair, [hook(a), hook(b)], out, back)
        seen = pids(20)
        assert set(seen) == {str(r.app_pid) for r in runs}, seen
    finally:
        lb.close()


@pytest.mark.skipif(not Path(ETCD).exists(), reason="etcd is not installed")
def test_rolling_restart_with_etcd_leases(pair: tuple[Harness, Harness]) -> None:
    etcd = EtcdServer()
    try:
        def key(h: Harness) -> str:
            return f"/services/orders/127.0.0.1:{h.port}"

        def hook(h: Harness) -> str:
            return f"""
[shutdown]
budget = "20s"
stop_grace = "3s"
[[shutdown.deregister.hooks]]
type = "etcd"
endpoint = "{etcd.url}"
key = "{key(h)}"
ttl = "2s"
timeout = "3s"
"""

        def out(h: Harness) -> None:
            assert read_key(etcd, key(h)) is None  # the lease was revoked

        def back(h: Harness) -> None:
            found = read_key(etcd, key(h))
            assert found is not None and found["lease"] != 0

        a, b = pair
        rolling_restart(pair, [hook(a), hook(b)], out, back)
        # Kept alive: both keys outlive several TTLs while the services run.
        leases = {}
        for h in pair:
            found = read_key(etcd, key(h))
            assert found is not None
            leases[h.port] = found["lease"]
        time.sleep(5.0)  # the scenario itself: 2.5 TTLs with nothing but the keep-alive
        for h in pair:
            now = read_key(etcd, key(h))
            assert now is not None and now["lease"] == leases[h.port]
    finally:
        etcd.close()
