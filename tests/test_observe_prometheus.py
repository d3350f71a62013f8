"""A real Prometheus scraping gracerun through a shutdown, and a real Pushgateway.

Both servers are the Debian packages' binaries, started by the tests on loopback
with temporary storage, and killed by PID (with their own session) afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import Launcher, gracerun, wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(90)

PY = sys.executable
PROMETHEUS = "/usr/bin/prometheus"
PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"

# Exits 0 on SIGTERM once the orphan it leaves behind ignores SIGTERM; the orphan
# lingers until the release file exists, holding gracerun in its stop phase.
SERVICE = """
import os, signal, subprocess, sys
release = sys.argv[1]
orphan = subprocess.Popen([sys.executable, "-c",
    "import os, signal, sys, time\\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
    "print('ignoring', flush=True)\\n"
    "while not os.path.exists(sys.argv[1]): time.sleep(0.01)\\n", release],
    stdout=subprocess.PIPE)
orphan.stdout.readline()
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
print("ready", flush=True)
signal.sigwait({signal.SIGTERM})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start a server binary on a free loopback port; return its base URL."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(binary: str, *args: str, ready_path: str = "/-/ready") -> str:
        if not os.access(binary, os.X_OK):
            pytest.skip(f"{binary} is not installed")
        port = free_port()
        log = open(tmp_path / f"{Path(binary).name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([binary, *args, f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=log, cwd=tmp_path, start_new_session=True)
        log.close()
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None or http_get(base + ready_path)[0] == 200,
                 timeout=30, what=f"{binary} to be ready")
        assert proc.poll() is None, (tmp_path / f"{Path(binary).name}.log").read_text()
        return base

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    status, body = http_get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert status == 200, body
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]


def by_phase(result: list[dict[str, Any]]) -> dict[str, float]:
    return {r["metric"]["phase"]: float(r["value"][1]) for r in result}


def test_prometheus_scrapes_the_phase_durations(server: Callable[..., str], launcher: Launcher,
                                                tmp_path: Path) -> None:
    """Prometheus sees the shutdown's phases while gracerun is still there to scrape.

    1. Prometheus scrapes gracerun every 200ms.
    2. SIGTERM: a 1s propagate sleep, then the stop phase, held open by the orphan.
    3. Wait until Prometheus has scraped gracerun in its stop phase; release the orphan.
    4. After gracerun is gone, the query API still returns the phase durations
       (last_over_time, as a dashboard for terminated pods would ask).
    """
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(f"""
global:
  scrape_interval: 200ms
  scrape_timeout: 150ms
scrape_configs:
  - job_name: gracerun
    static_configs:
      - targets: ["127.0.0.1:{port}"]
""")
    prom = server(PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                  f"--storage.tsdb.path={tmp_path / 'tsdb'}")
    config = tmp_path / "g.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
[shutdown.propagate]
sleep = "1s"
""")
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    release = tmp_path / "release"
    proc = launcher.start(gracerun("--config", str(config),
                                   cmd=[PY, str(script), str(release)]))
    proc.expect("^ready$")
    wait_for(lambda: query(prom, 'up{job="gracerun"} == 1'), timeout=20,
             what="Prometheus to scrape gracerun")
    proc.send(signal.SIGTERM)
    wait_for(lambda: query(prom, 'gracerun_shutdown_phase{phase="stop"} == 1'), timeout=20,
             what="a scrape during the stop phase")
    release.touch()
    assert proc.wait() == 0
    wait_for(lambda: query(prom, 'up{job="gracerun"} == 0'), timeout=20,
             what="Prometheus to notice gracerun is gone")

    phases = by_phase(query(prom, "last_over_time(gracerun_shutdown_phase_seconds[5m])"))
    assert phases["propagate"] == pytest.approx(1.0, abs=0.25)
    assert phases["stop"] >= 0.0
    assert query(prom, "gracerun_shutdown_phase_seconds") == []  # stale: the pod is gone
    histogram = by_phase(query(
        prom, "last_over_time(gracerun_shutdown_phase_duration_seconds_count[5m])"))
    assert histogram["propagate"] == 1.0
    exit_code = query(prom, "last_over_time(gracerun_service_exit_code[5m])")
    assert [float(r["value"][1]) for r in exit_code] == [0.0]


def test_pushgateway_receives_the_final_metrics(server: Callable[..., str], launcher: Launcher,
                                                tmp_path: Path) -> None:
    """The last word of a terminating pod: pushed once, after the tree is gone."""
    gateway = server(PUSHGATEWAY, f"--persistence.file={tmp_path / 'pushgw'}")
    config = tmp_path / "g.toml"
    config.write_text(f"""
[state.pushgateway]
url = "{gateway}"
job = "gracerun-test"
grouping = {{ instance = "pod-1" }}
timeout = "2s"
""")
    rc, _, err = launcher.run(gracerun("--config", str(config), cmd=[PY, "-c", "exit(5)"]))
    assert rc == 5 and err == ""
    status, body = http_get(f"{gateway}/metrics")
    assert status == 200
    pushed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(body) for s in f.samples
              if s.labels.get("job") == "gracerun-test"}
    group = (("instance", "pod-1"), ("job", "gracerun-test"))
    assert pushed[("gracerun_service_exit_code", group)] == 5
    done = (("instance", "pod-1"), ("job", "gracerun-test"), ("phase", "done"))
    assert pushed[("gracerun_shutdown_phase", done)] == 1
    assert ("push_time_seconds", group) in pushed


def test_an_unreachable_pushgateway_is_one_warning(launcher: Launcher, tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text(f"""
[state.pushgateway]
url = "http://127.0.0.1:{free_port()}"
timeout = "1s"
""")
    rc, _, err = launcher.run(gracerun("--config", str(config), cmd=[PY, "-c", "exit(4)"]))
    assert rc == 4
    lines = err.splitlines()
    assert len(lines) == 1 and "cannot push metrics to the Pushgateway" in lines[0], err


def test_dashboard_queries_are_valid_promql(server: Callable[..., str], tmp_path: Path) -> None:
    """Every query in docs/grafana-dashboard.json parses and runs on a real Prometheus."""
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 1m\n")
    prom = server(PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
                  f"--storage.tsdb.path={tmp_path / 'tsdb'}")
    dashboard = json.loads((Path(__file__).parents[1] / "docs" / "grafana-dashboard.json")
                           .read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    for expr in exprs:
        for var, value in (("$job", ".*"), ("$__range", "1h"), ("$__interval", "1m"),
                           ("$__rate_interval", "1m")):
            expr = expr.replace(var, value)
        query(prom, expr)  # asserts status "success"
