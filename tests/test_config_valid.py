"""Valid configurations: the dataclasses they produce, the budget arithmetic, `gracerun check`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gracerun import cli
from gracerun.config import load as config
from gracerun.config import settings, values
from gracerun.config.kinds import (
    ConnectionsProbe,
    ExecHook,
    ExecProbe,
    HttpHook,
    HttpProbe,
    SignalHook,
    SleepHook,
    TcpProbe,
)
from gracerun.config.plan import DrainConfig, HookPhase, Plan, PropagateConfig
from gracerun.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "gracerun.toml"
DOC = REPO / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REGISTRY_URL", "GRACERUN_TEST_HOST", "GRACERUN_TEST_EMPTY", config.CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRACERUN_", "PYTEST_")) and k != "REGISTRY_URL"}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_gracerun(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gracerun", *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=30)


def load_text(tmp_path: Path, text: str, flags: list[str] | None = None) -> config.Config:
    path = tmp_path / "gracerun.toml"
    path.write_text(text)
    overrides = None
    if flags is not None:
        ns = cli._run_parser().parse_args(flags)
        overrides = settings.cli_overrides(vars(ns))
    return config.load(str(path), overrides)


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(("raw", "seconds"), [
    ("250ms", 0.25), ("2s", 2.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("1h2m3s4ms", 3723.004),
    (" 2S ", 2.0), ("10", 10.0), ("0.5", 0.5), ("0s", 0.0), (3, 3.0), (2.5, 2.5), (0, 0.0),
    ("168h", 7 * 24 * 3600.0),
])
def test_duration(raw: object, seconds: float) -> None:
    assert values.duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "s", "2 s", "1m30", "1d", "-1s", "-1", True, None, [1],
                                 "nan", "inf", float("nan"), float("inf"), "169h"])
def test_duration_rejects(raw: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        values.duration(raw)


def test_durations_in_the_config(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, """
[shutdown]
budget = "1m30s"
stop_grace = 7.5
[shutdown.propagate]
quiet = "250ms"
min = 0
max = "2s"
interval = "100ms"
probe = { type = "connections", port = 8080, idle = "500ms" }
""")
    assert cfg.shutdown.budget == 90.0
    assert cfg.shutdown.stop_grace == 7.5
    assert cfg.plan.propagate == PropagateConfig(
        quiet=0.25, min=0.0, max=2.0, interval=0.1,
        probe=ConnectionsProbe(ports=(8080,), idle=0.5))


# ---------------------------------------------------------- env expansion


@pytest.mark.parametrize(("text", "expanded"), [
    ("${HOST}", "consul"),
    ("http://${HOST}:8500/x", "http://consul:8500/x"),
    ("${NOPE:-fallback}", "fallback"),
    ("${HOST:-fallback}", "consul"),
    ("${EMPTY:-fallback}", "fallback"),  # set but empty counts as unset with a default
    ("${EMPTY}", ""),
    ("${NOPE:-}", ""),
    ("$$", "$"),
    ("$${HOST}", "${HOST}"),
    ("cost $$5 at $HOST", "cost $5 at $HOST"),  # only ${...} and $$ are special
    ("${NOPE:-a:b/c}", "a:b/c"),
])
def test_expand_env(text: str, expanded: str) -> None:
    assert values.expand_env(text, {"HOST": "consul", "EMPTY": ""}) == expanded


def test_expand_env_names_the_missing_variable() -> None:
    with pytest.raises(ValueError, match=r"environment variable NOPE is not set"):
        values.expand_env("http://${NOPE}/x", {})


def test_env_expansion_in_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRACERUN_TEST_HOST", "consul.internal")
    monkeypatch.setenv("GRACERUN_TEST_EMPTY", "")
    cfg = load_text(tmp_path, """
[[shutdown.deregister.hooks]]
type = "http"
url = "http://${GRACERUN_TEST_HOST}:8500/v1/agent/service/deregister/app"
headers = { X-Token = "${GRACERUN_TEST_EMPTY:-anonymous}" }
body = '{"price": "$$5"}'

[[shutdown.notify.hooks]]
type = "exec"
command = ["/bin/echo", "${GRACERUN_TEST_NOPE:-default arg}", "$${LITERAL}"]
env = { TARGET = "${GRACERUN_TEST_HOST}" }

[shutdown.drain]
probe = { type = "connections", port = "${GRACERUN_TEST_NOPE:-8080}" }
""")
    http = cfg.plan.deregister.hooks[0]
    assert isinstance(http, HttpHook)
    assert http.url == "http://consul.internal:8500/v1/agent/service/deregister/app"
    assert http.headers == {"X-Token": "anonymous"}
    assert http.body == b'{"price": "$5"}'
    exe = cfg.plan.notify.hooks[0]
    assert isinstance(exe, ExecHook)
    assert exe.command == ("/bin/echo", "default arg", "${LITERAL}")
    assert exe.env == {"TARGET": "consul.internal"}
    assert cfg.plan.drain is not None
    assert cfg.plan.drain.probe == ConnectionsProbe(ports=(8080,))


def test_build_expands_from_the_environment_it_is_given() -> None:
    """build(env=...) is the environment for every expanded string, not just the hooks.

    Found by these tests: hook strings use `env`, but [state]/[control] paths,
    pushgateway values and ${VAR} ports read os.environ instead.
    """
    env = {"GRACERUN_TEST_DIR": "/run/app", "GRACERUN_TEST_PORT": "8080"}
    cfg = config.build({
        "shutdown": {"drain": {"probe": {"type": "connections",
                                         "port": "${GRACERUN_TEST_PORT}"}}},
        "state": {"file": "${GRACERUN_TEST_DIR}/last.json"},
        "control": {"socket": "${GRACERUN_TEST_DIR}/gracerun.sock"},
    }, env=env)
    assert cfg.state.file == "/run/app/last.json"
    assert cfg.control.socket == "/run/app/gracerun.sock"
    assert cfg.plan.drain is not None
    assert cfg.plan.drain.probe == ConnectionsProbe(ports=(8080,))


# ------------------------------------------------------------ dataclasses


def test_defaults_without_a_file() -> None:
    cfg = config.load(None)
    assert cfg == config.Config()
    assert cfg.shutdown.budget == config.DEFAULT_BUDGET == 30.0
    assert cfg.shutdown.triggers == frozenset({signal.SIGTERM})
    assert cfg.shutdown.effective_stop_grace == 5.0
    assert cfg.plan is None and not cfg.has_pipeline and not cfg.needs_asyncio
    assert cfg.budget_problem() is None


def test_every_section(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, """
[signals]
group = true
rewrite = { TERM = "QUIT", 1 = "0" }

[process]
subreaper = true
pdeathsig = "KILL"
success_codes = [143, "130"]

[log]
verbosity = 2
format = "json"
warn_orphans = true

[shutdown]
budget = "45s"
stop_signal = "SIGINT"
stop_grace = "10s"
triggers = ["SIGTERM", "INT"]

[shutdown.notify]
parallel = true
timeout = "3s"
[[shutdown.notify.hooks]]
type = "signal"
signal = "USR1"
group = true
[[shutdown.notify.hooks]]
name = "flush"
type = "exec"
command = ["/app/flush", "--now"]
cwd = "/app"
timeout = "2s"
on_failure = "stop"

[[shutdown.deregister.hooks]]
name = "lb"
type = "http"
url = "https://lb.internal/pool/app"
method = "delete"
expect_status = [200, 404]
retries = 2
backoff = "100ms"
[[shutdown.deregister.hooks]]
type = "sleep"
duration = "1s"

[shutdown.propagate]
sleep = "5s"

[shutdown.drain]
probe = { type = "exec", command = ["test", "-f", "/tmp/idle"], timeout = "500ms" }
interval = "1s"
timeout = "20s"

[server]
listen = ":9102"
ready_probe = { type = "tcp", port = 8080 }
ready_interval = "2s"

[state]
file = "/var/run/gracerun/last.json"
textfile = "/var/lib/node_exporter/gracerun.prom"
pushgateway = { url = "http://pg:9091", job = "app", grouping = { pod = "a" } }

[control]
socket = "/run/gracerun.sock"
""")
    assert cfg.signals == config.SignalsConfig(group=True, rewrite={15: 3, 1: 0})
    assert cfg.process == config.ProcessConfig(subreaper=True, pdeathsig=9,
                                               success_codes=frozenset({143, 130}))
    assert cfg.log == config.LogConfig(verbosity=2, format="json", warn_orphans=True)
    assert cfg.shutdown == config.ShutdownConfig(
        budget=45.0, stop_signal=signal.SIGINT, stop_grace=10.0,
        triggers=frozenset({signal.SIGTERM, signal.SIGINT}))
    assert cfg.plan.notify == HookPhase(hooks=(
        SignalHook(name="signal-1", timeout=1.0, signal=signal.SIGUSR1, group=True),
        ExecHook(name="flush", timeout=2.0, on_failure="stop", command=("/app/flush", "--now"),
                 cwd="/app"),
    ), parallel=True, timeout=3.0)
    assert cfg.plan.deregister == HookPhase(hooks=(
        HttpHook(name="lb", timeout=5.0, url="https://lb.internal/pool/app", method="DELETE",
                 expect_status=frozenset({200, 404}), retries=2, backoff=0.1),
        SleepHook(name="sleep-2", timeout=1.0, duration=1.0),
    ))
    assert cfg.plan.propagate == PropagateConfig(sleep=5.0)
    assert cfg.plan.drain == DrainConfig(
        probe=ExecProbe(command=("test", "-f", "/tmp/idle"), timeout=0.5),
        interval=1.0, timeout=20.0)
    assert cfg.server == config.ServerConfig(listen=":9102", ready_probe=TcpProbe(port=8080),
                                             ready_interval=2.0)
    assert cfg.state == config.StateConfig(
        file="/var/run/gracerun/last.json", textfile="/var/lib/node_exporter/gracerun.prom",
        pushgateway=config.PushgatewayConfig(url="http://pg:9091", job="app",
                                             grouping={"pod": "a"}))
    assert cfg.control == config.ControlConfig(socket="/run/gracerun.sock")
    assert cfg.needs_asyncio


def test_adaptive_propagate_may_borrow_the_drain_ports(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, """
[shutdown.propagate]
quiet = "2s"
[shutdown.drain]
probe = { type = "connections", ports = [8080, 8443] }
""")
    assert cfg.plan.propagate == PropagateConfig(quiet=2.0)
    assert cfg.plan.drain == DrainConfig(probe=ConnectionsProbe(ports=(8080, 8443)))


def test_http_probe_defaults(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, '[shutdown.drain]\n'
                              'probe = { type = "http", url = "http://127.0.0.1:8080/stats", '
                              'field = "inflight" }\n')
    assert cfg.plan.drain is not None
    assert cfg.plan.drain.probe == HttpProbe(url="http://127.0.0.1:8080/stats", field="inflight",
                                             value="body", ok_status=frozenset({200}),
                                             timeout=2.0)


# ----------------------------------------------------- flags and discovery


def test_flags_override_the_file(tmp_path: Path) -> None:
    text = """
[shutdown]
budget = "20s"
stop_grace = "3s"
[signals]
rewrite = { TERM = "QUIT" }
[log]
format = "json"
verbosity = 1
"""
    from_file = load_text(tmp_path, text, [])
    assert from_file.shutdown.budget == 20.0
    assert from_file.log == config.LogConfig(verbosity=1, format="json")
    cfg = load_text(tmp_path, text, ["--budget", "40s", "-r", "HUP:USR1", "-vv", "-g",
                                     "--log-format", "text", "-e", "143", "--trigger", "INT"])
    assert cfg.shutdown.budget == 40.0
    assert cfg.shutdown.stop_grace == 3.0  # not given as a flag: the file's value stays
    assert cfg.signals.rewrite == {signal.SIGTERM: signal.SIGQUIT,
                                   signal.SIGHUP: signal.SIGUSR1}
    assert cfg.signals.group
    assert cfg.log == config.LogConfig(verbosity=2, format="text")
    assert cfg.process.success_codes == frozenset({143})
    assert cfg.shutdown.triggers == frozenset({signal.SIGINT})


def test_find_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--config, else $GRACERUN_CONFIG, else ./gracerun.toml when it exists, else nothing."""
    monkeypatch.chdir(tmp_path)
    assert config.find_path(None) is None
    (tmp_path / "gracerun.toml").write_text('[shutdown]\nbudget = "12s"\n')
    assert config.find_path(None) == "gracerun.toml"
    assert config.load(config.find_path(None)).shutdown.budget == 12.0
    other = tmp_path / "other.toml"
    other.write_text('[shutdown]\nbudget = "13s"\n')
    monkeypatch.setenv(config.CONFIG_ENV, str(other))
    assert config.find_path(None) == str(other)
    assert config.find_path("explicit.toml") == "explicit.toml"


def test_check_finds_the_config_by_environment_then_cwd(tmp_path: Path) -> None:
    (tmp_path / "gracerun.toml").write_text('[shutdown]\nbudget = "12s"\n')
    other = tmp_path / "other.toml"
    other.write_text('[shutdown]\nbudget = "13s"\n')
    found = run_gracerun("check", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "config: gracerun.toml: valid" in found.stdout
    assert "budget 12.000s" in found.stdout
    by_env = run_gracerun("check", cwd=tmp_path, GRACERUN_CONFIG=str(other))
    assert by_env.returncode == 0, by_env.stderr
    assert f"config: {other}: valid" in by_env.stdout
    assert "budget 13.000s" in by_env.stdout
    (tmp_path / "gracerun.toml").unlink()
    defaults = run_gracerun("check", cwd=tmp_path)
    assert defaults.returncode == 0, defaults.stderr
    assert "config: (built-in defaults): valid" in defaults.stdout


# ----------------------------------------------------------------- example


def test_example_config_loads() -> None:
    cfg = config.load(str(EXAMPLE))
    assert cfg.shutdown.budget == 30.0
    assert cfg.plan.notify.hooks == (
        SignalHook(name="stop-consumer", timeout=1.0, signal=signal.SIGUSR1),)
    (dereg,) = cfg.plan.deregister.hooks
    assert isinstance(dereg, HttpHook)
    assert dereg.url == "http://127.0.0.1:8500/v1/agent/service/deregister/app"
    assert dereg.method == "PUT"
    assert dereg.on_failure == "continue"
    assert dereg.timeout <= 2.0
    assert cfg.plan.propagate is not None
    assert cfg.plan.propagate.sleep is None
    assert cfg.plan.propagate.probe == ConnectionsProbe(ports=(8080,))
    assert cfg.plan.drain is not None
    assert isinstance(cfg.plan.drain.probe, HttpProbe)
    assert cfg.plan.drain.probe.url == "http://127.0.0.1:8080/inflight"
    assert cfg.budget_problem() is None


def test_example_config_takes_the_registry_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_URL", "http://consul.service:8500")
    (dereg,) = config.load(str(EXAMPLE)).plan.deregister.hooks
    assert isinstance(dereg, HttpHook)
    assert dereg.url == "http://consul.service:8500/v1/agent/service/deregister/app"


def test_check_example_config(tmp_path: Path) -> None:
    proc = run_gracerun("check", "--config", str(EXAMPLE), "--grace-period", "35", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fits: worst case" in proc.stdout
    assert "fits Kubernetes" in proc.stdout
    assert "DOES NOT FIT" not in proc.stdout


# ------------------------------------------------------- budget arithmetic


def _sleep(name: str, seconds: float) -> SleepHook:
    return SleepHook(name=name, timeout=seconds, duration=seconds)


def test_sequential_phase_adds_parallel_phase_takes_the_longest() -> None:
    hooks = (_sleep("a", 1.0), _sleep("b", 2.0), _sleep("c", 3.5))
    assert HookPhase(hooks=hooks).worst_case() == 6.5
    assert HookPhase(hooks=hooks, parallel=True).worst_case() == 3.5
    assert HookPhase().worst_case() == 0.0


def test_phase_timeout_caps_the_phase() -> None:
    hooks = (_sleep("a", 4.0), _sleep("b", 4.0))
    assert HookPhase(hooks=hooks, timeout=5.0).worst_case() == 5.0
    assert HookPhase(hooks=hooks, timeout=10.0).worst_case() == 8.0
    assert HookPhase(hooks=hooks, parallel=True, timeout=3.0).worst_case() == 3.0


def test_http_retries_with_backoff() -> None:
    """Each attempt gets the timeout; waits double from `backoff` between attempts."""
    one = HttpHook(name="h", timeout=2.0, url="http://x/")
    assert one.worst_case() == 2.0
    retried = HttpHook(name="h", timeout=2.0, url="http://x/", retries=3, backoff=0.5)
    assert retried.worst_case() == pytest.approx(4 * 2.0 + 0.5 + 1.0 + 2.0)


def test_hook_defaults_book_their_time(tmp_path: Path) -> None:
    cfg = load_text(tmp_path, """
[[shutdown.notify.hooks]]
type = "signal"
signal = "USR1"
[[shutdown.notify.hooks]]
type = "sleep"
duration = "2s"
[[shutdown.notify.hooks]]
type = "exec"
command = ["true"]
[[shutdown.notify.hooks]]
type = "http"
url = "http://x/"
""")
    assert [h.worst_case() for h in cfg.plan.notify.hooks] == [1.0, 2.0, 5.0, 5.0]


def test_plan_worst_cases_in_order() -> None:
    plan = Plan(notify=HookPhase(hooks=(_sleep("a", 1.0),)),
                deregister=HookPhase(hooks=(HttpHook(name="h", timeout=2.0, url="http://x/"),)),
                propagate=PropagateConfig(quiet=1.0, max=8.0),
                drain=DrainConfig(probe=ConnectionsProbe(ports=(8080,)), timeout=10.0))
    assert plan.worst_cases() == [("notify", 1.0), ("deregister", 2.0), ("propagate", 8.0),
                                  ("drain", 10.0)]
    assert plan.worst_case() == 21.0
    assert Plan(propagate=PropagateConfig(sleep=3.0)).worst_case() == 3.0
    assert Plan().worst_case() == 0.0


@pytest.mark.parametrize(("budget", "stop_grace", "effective"), [
    (30.0, None, 5.0), (12.0, None, 3.0), (30.0, 10.0, 10.0), (30.0, 0.0, 0.0),
])
def test_effective_stop_grace(budget: float, stop_grace: float | None, effective: float) -> None:
    sd = config.ShutdownConfig(budget=budget, stop_grace=stop_grace)
    assert sd.effective_stop_grace == effective


def test_budget_problem() -> None:
    fits = config.Config(shutdown=config.ShutdownConfig(budget=30.0, stop_grace=5.0),
                         plan=Plan(notify=HookPhase(hooks=(_sleep("a", 25.0),))))
    assert fits.budget_problem() is None  # exactly the budget fits
    over = config.Config(shutdown=config.ShutdownConfig(budget=30.0, stop_grace=5.0),
                         plan=Plan(notify=HookPhase(hooks=(_sleep("a", 25.5),))))
    problem = over.budget_problem()
    assert problem is not None
    assert "25.5s" in problem and "30.5s" in problem and "shutdown.budget is 30s" in problem


# ------------------------------------------------------------------- check

CLASSIC_MISTAKE = """
# The classic mistake: the budget is spent on a hook, and the budget is the pod's whole
# terminationGracePeriodSeconds, so the kubelet's SIGKILL comes before gracerun's report.
[shutdown]
budget = "35s"

[[shutdown.notify.hooks]]
type = "sleep"
duration = "35s"
"""


def test_check_rejects_the_classic_mistake(tmp_path: Path) -> None:
    path = tmp_path / "gracerun.toml"
    path.write_text(CLASSIC_MISTAKE)
    proc = run_gracerun("check", "--config", str(path), "--grace-period", "35", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DOES NOT FIT: worst case 40.000s exceeds budget 35.000s by 5.000s" in proc.stdout
    assert "DOES NOT FIT Kubernetes" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_check_grace_period_alone_can_fail(tmp_path: Path) -> None:
    """Phases that fit the budget still fail when the budget leaves the kubelet no slack."""
    path = tmp_path / "gracerun.toml"
    path.write_text('[shutdown]\nbudget = "30s"\n')
    ok = run_gracerun("check", "--config", str(path), "--grace-period", "31", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout
    tight = run_gracerun("check", "--config", str(path), "--grace-period", "30", cwd=tmp_path)
    assert tight.returncode == 1, tight.stdout
    assert "fits: worst case" in tight.stdout
    assert "DOES NOT FIT Kubernetes" in tight.stdout


def test_check_prints_the_timeline(tmp_path: Path) -> None:
    path = tmp_path / "gracerun.toml"
    path.write_text("""
[shutdown]
budget = "30s"
stop_grace = "5s"
[[shutdown.notify.hooks]]
type = "sleep"
duration = "2s"
[shutdown.drain]
probe = { type = "connections", port = 8080 }
timeout = "10s"
""")
    proc = run_gracerun("check", "--config", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {m[0]: m[1:] for m in re.findall(r"^(\w+) +([\d.]+s)? +([\d.]+)s", proc.stdout,
                                             re.MULTILINE)}
    assert rows == {
        "notify": ("2.000s", "0.000"),
        "deregister": ("0.000s", "2.000"),
        "propagate": ("0.000s", "2.000"),
        "drain": ("10.000s", "2.000"),
        "stop": ("5.000s", "12.000"),
        "kill": ("", "30.000"),
    }
    assert "fits: worst case 17.000s within budget 30.000s (13.000s spare)" in proc.stdout


# ------------------------------------------------------ every key documented


# Every table the validator reads, with enough content to reach its key list.
TABLES: list[tuple[str, dict[str, Any]]] = [
    ("signals", {}), ("process", {}), ("log", {}), ("shutdown", {}), ("server", {}),
    ("state", {}), ("control", {}),
    ("shutdown.notify", {}), ("shutdown.propagate", {"sleep": 1}),
    ("shutdown.drain", {"probe": {"type": "exec", "command": ["true"]}}),
    ("state.pushgateway", {"url": "http://pg:9091"}),
    ("shutdown.notify.hooks", {"type": "exec", "command": ["true"]}),
    ("shutdown.notify.hooks", {"type": "http", "url": "http://x/"}),
    ("shutdown.notify.hooks", {"type": "sleep", "duration": 1}),
    ("shutdown.notify.hooks", {"type": "signal", "signal": "USR1"}),
    ("shutdown.drain.probe", {"type": "connections", "port": 1}),
    ("shutdown.drain.probe", {"type": "http", "url": "http://x/"}),
    ("shutdown.drain.probe", {"type": "exec", "command": ["true"]}),
    ("shutdown.drain.probe", {"type": "haproxy", "socket": "/s", "backend": "b",
                              "server": "s"}),
    ("shutdown.notify.hooks", {"type": "haproxy", "socket": "/s", "backend": "b",
                               "server": "s"}),
    ("server.ready_probe", {"type": "tcp", "port": 1}),
    ("server.ready_probe", {"type": "http", "url": "http://x/"}),
]


def _nest(path: str, table: dict[str, Any]) -> dict[str, Any]:
    *parents, last = path.split(".")
    data: dict[str, Any] = {last: [table] if last == "hooks" else table}
    for name in reversed(parents):
        data = {name: data}
    if path.startswith("shutdown.drain.") or path == "shutdown.propagate":
        data["shutdown"].setdefault("drain", {"probe": {"type": "exec", "command": ["true"]}})
    return data


@pytest.mark.parametrize(("path", "table"), TABLES,
                         ids=[f"{p}:{t.get('type', '')}" for p, t in TABLES])
def test_docs_name_every_key(path: str, table: dict[str, Any]) -> None:
    """Each key the validator knows (its did-you-mean list) appears in docs/configuration.md."""
    with pytest.raises(ConfigError) as info:
        config.build(_nest(path, {**table, "zz_not_a_key": 1}))
    (problem,) = [p for p in info.value.problems if "zz_not_a_key" in p]
    known = problem.split("expected one of: ")[1].split(", ")
    doc = DOC.read_text()
    missing = [key for key in known
               if f"`{key}`" not in doc and f"[{path}.{key}]" not in doc]
    assert not missing, f"{path}: keys not documented: {missing}"
