"""gracerun.toml and command-line flags, validated into frozen dataclasses.

Every scalar option is declared once in settings.SETTINGS (its key here, its
flags, default and documentation); command-line values are merged into the
TOML data before one validation pass, so a bad flag and a bad key get the
same kind of message.

Validation collects every problem at once, each with its key path and what
was expected, and rejects unknown keys with a did-you-mean.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from gracerun.config import values
from gracerun.config.reader import Reader, boolean, choice, describe, list_of, positive_duration
from gracerun.errors import ConfigError

if TYPE_CHECKING:  # plan.py is imported only for configs that use it (start-up time)
    from gracerun.config.plan import Plan, Probe

DEFAULT_BUDGET = 30.0
PHASE_TABLES = ("notify", "deregister", "propagate", "drain")
CONFIG_ENV = "GRACERUN_CONFIG"
DEFAULT_CONFIG_PATH = "gracerun.toml"


# ---------------------------------------------------------------- the result
#
# Immutable NamedTuples rather than frozen dataclasses: this module is on the
# start-up path of every container, and creating ten dataclasses (plus the
# `inspect` machinery `dataclasses` imports) cost ~12 ms there, a third of the
# start-up budget.  plan.py, loaded only for configs with phases, uses
# dataclasses.

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class SignalsConfig(NamedTuple):
    group: bool = False  # forward to the service's process group, not just the child
    rewrite: Mapping[int, int] = _EMPTY  # 0 drops the signal


class ProcessConfig(NamedTuple):
    subreaper: bool = False  # force PR_SET_CHILD_SUBREAPER (it is automatic when not PID 1)
    pdeathsig: int | None = None
    success_codes: frozenset[int] = frozenset()  # exit codes reported as 0


class LogConfig(NamedTuple):
    verbosity: int = 0
    format: str = "text"
    warn_orphans: bool = False


class ShutdownConfig(NamedTuple):
    budget: float = DEFAULT_BUDGET
    stop_signal: int | None = None  # None: the trigger signal, after rewriting
    stop_grace: float | None = None  # None: see effective_stop_grace
    triggers: frozenset[int] = frozenset({signal.SIGTERM})

    @property
    def effective_stop_grace(self) -> float:
        """Time kept for the stop phase: pre-stop phases must end before it."""
        if self.stop_grace is not None:
            return min(self.stop_grace, self.budget)
        return min(5.0, self.budget / 4)


class ServerConfig(NamedTuple):
    listen: str | None = None  # "127.0.0.1:9102", "[::1]:9102", ":9102" (all addresses)
    ready_probe: Probe | None = None  # the service's own readiness, gating /ready
    ready_interval: float = 1.0


class PushgatewayConfig(NamedTuple):
    url: str
    job: str = "gracerun"
    grouping: Mapping[str, str] = _EMPTY
    timeout: float = 2.0


class StateConfig(NamedTuple):
    file: str | None = None  # JSON timeline of the last shutdown, read back at start
    textfile: str | None = None  # node_exporter textfile-collector output
    pushgateway: PushgatewayConfig | None = None


DEFAULT_CONTROL_SOCKET = "/run/gracerun/control.sock"  # root's default; see below
CONTROL_SOCKET_ENV = "GRACERUN_CONTROL_SOCKET"


def default_control_socket() -> str:
    """The control socket when PID 1 and nothing is configured: in a directory only
    gracerun's user can create into (lifecycle/control.py makes it 0700 and checks it).

    root: /run/gracerun/control.sock (/tmp/gracerun-0/... where there is no /run);
    any other user: $XDG_RUNTIME_DIR/gracerun/control.sock, else /tmp/gracerun-UID/...
    `gracerun prestop` in the same container (same user) computes the same path.
    """
    uid = os.geteuid()
    if uid == 0 and os.path.isdir("/run"):
        return DEFAULT_CONTROL_SOCKET
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if uid != 0 and os.path.isabs(runtime):
        return os.path.join(runtime, "gracerun", "control.sock")
    return f"/tmp/gracerun-{uid}/control.sock"


class ControlConfig(NamedTuple):
    socket: str | None = None  # unix socket behind `gracerun prestop`

    def path(self, pid1: bool) -> str | None:
        """The socket to use: configured, else $GRACERUN_CONTROL_SOCKET, else the
        default when gracerun is PID 1 (a container), else none."""
        if self.socket:
            return self.socket
        if os.environ.get(CONTROL_SOCKET_ENV):
            return os.environ[CONTROL_SOCKET_ENV]
        return default_control_socket() if pid1 else None


class Config(NamedTuple):
    signals: SignalsConfig = SignalsConfig()
    process: ProcessConfig = ProcessConfig()
    log: LogConfig = LogConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    plan: Plan | None = None  # None: no pre-stop phases configured
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    control: ControlConfig = ControlConfig()
    source: str = ""  # the file it came from, "" for built-in defaults

    @property
    def needs_asyncio(self) -> bool:
        """Whether anything configured needs the asyncio loop (see loop.py)."""
        return (self.has_pipeline or self.server.listen is not None
                or self.state.pushgateway is not None)

    @property
    def has_pipeline(self) -> bool:
        return self.plan is not None and not self.plan.empty

    def budget_problem(self) -> str | None:
        """Why the configured phases cannot fit the budget, or None when they do."""
        worst = self.plan.worst_case() if self.plan is not None else 0.0
        grace = self.shutdown.effective_stop_grace
        if worst + grace <= self.shutdown.budget + 1e-9:
            return None
        return (f"pre-stop phases may take {worst:g}s and the stop phase keeps {grace:g}s, "
                f"{worst + grace:g}s in all, but shutdown.budget is {self.shutdown.budget:g}s: "
                f"phases will be cut short (raise the budget or lower the phase timeouts)")


def _rewrite_table(value: Any) -> dict[int, int]:
    if not isinstance(value, dict):
        raise ValueError(f'expected a table like {{ SIGTERM = "SIGQUIT" }}, got '
                         f"{describe(value)}")
    rules = {}
    for src, dst in value.items():
        if dst is None:
            raise ValueError(f'expected FROM:TO such as "TERM:QUIT", got {src!r}')
        frm, to = values.rewrite_rule(f"{src}:{dst}")
        rules[frm] = to
    return rules


def _verbosity(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of 0 or more, got {describe(value)}")
    return value


def _read_core(root: Reader) -> dict[str, Any]:
    sig = root.table("signals")
    signals_cfg = SignalsConfig(
        group=sig.get("group", boolean, False),
        rewrite=sig.get("rewrite", _rewrite_table, {}),
    )
    sig.finish()

    proc = root.table("process")
    process_cfg = ProcessConfig(
        subreaper=proc.get("subreaper", boolean, False),
        pdeathsig=proc.get("pdeathsig", values.signal_number, None),
        success_codes=frozenset(proc.get("success_codes", list_of(values.exit_code), [])),
    )
    proc.finish()

    lg = root.table("log")
    log_cfg = LogConfig(
        verbosity=lg.get("verbosity", _verbosity, 0),
        format=lg.get("format", choice("text", "json"), "text"),
        warn_orphans=lg.get("warn_orphans", boolean, False),
    )
    lg.finish()
    return {"signals": signals_cfg, "process": process_cfg, "log": log_cfg}


def _trigger(value: Any) -> int:
    from gracerun.core import signals
    signum = values.signal_number(value)
    if signum in signals.NOT_FORWARDED:
        raise ValueError(f"{signals.name(signum)} can never reach gracerun's dispatcher (it is "
                         "uncaught, ignored or reserved), so it cannot start the shutdown; "
                         'expected a signal such as "SIGTERM", "SIGINT" or "SIGQUIT"')
    return signum


def _read_shutdown(sd: Reader) -> ShutdownConfig:
    budget = sd.get("budget", positive_duration, DEFAULT_BUDGET)
    stop_grace = sd.get("stop_grace", values.duration, None)
    if stop_grace is not None and stop_grace > budget:
        sd.error("stop_grace", f"expected at most the budget ({budget:g}s), got {stop_grace:g}s")
    triggers = sd.get("triggers", list_of(_trigger), [signal.SIGTERM])
    if not triggers and "triggers" in sd.data:
        sd.error("triggers", 'expected at least one signal such as "SIGTERM": with none, '
                             "nothing would start the shutdown")
        triggers = [signal.SIGTERM]
    return ShutdownConfig(
        budget=budget,
        stop_signal=sd.get("stop_signal", values.signal_number, None),
        stop_grace=stop_grace,
        triggers=frozenset(triggers),
    )


def _listen_address(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9102", got {describe(value)}')
    _host, sep, port = value.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5 \
            or not 0 < int(port) < 65536:
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9102", got {value!r}')
    return value


def _path(env: Mapping[str, str] | None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a file path, got {describe(value)}")
        return values.expand_env(value, env)

    return parse


def _read_observe(root: Reader, env: Mapping[str, str] | None) -> dict[str, Any]:
    sv = root.table("server")
    sv.seen.add("ready_probe")
    ready_probe = None
    if "ready_probe" in sv.data:
        from gracerun.config.plan import read_probe

        ready_probe = read_probe(sv.table("ready_probe"), env, ("http", "tcp"))
    server = ServerConfig(listen=sv.get("listen", _listen_address, None),
                          ready_probe=ready_probe,
                          ready_interval=sv.get("ready_interval", positive_duration, 1.0))
    sv.finish()

    st = root.table("state")
    st.seen.add("pushgateway")
    push = None
    if "pushgateway" in st.data:
        from gracerun.config.plan import string_table, text, url

        pg = st.table("pushgateway")
        if "url" not in pg.data:
            pg.error("url", 'missing; expected the Pushgateway URL like "http://127.0.0.1:9091"')
        push = PushgatewayConfig(url=pg.get("url", url(env), ""),
                                 job=pg.get("job", text(env), "gracerun"),
                                 grouping=pg.get("grouping", string_table(env), {}),
                                 timeout=pg.get("timeout", positive_duration, 2.0))
        pg.finish()
    state = StateConfig(file=st.get("file", _path(env), None),
                        textfile=st.get("textfile", _path(env), None), pushgateway=push)
    st.finish()

    ct = root.table("control")
    control = ControlConfig(socket=ct.get("socket", _path(env), None))
    ct.finish()
    return {"server": server, "state": state, "control": control}


def build(data: Mapping[str, Any], *, source: str = "",
          labels: Mapping[str, str] | None = None,
          env: Mapping[str, str] | None = None) -> Config:
    """Validate TOML-shaped data into a Config; raise ConfigError with every problem."""
    problems: list[str] = []
    root = Reader(dict(data), "", problems, labels or {})
    core = _read_core(root)
    sd = root.table("shutdown")
    shutdown = _read_shutdown(sd)
    sd.seen.update(PHASE_TABLES)  # known keys even when absent (did-you-mean)
    plan = None
    if any(name in sd.data for name in PHASE_TABLES):
        from gracerun.config.plan import ConnectionsProbe, HaproxyProbe, read_plan

        plan = read_plan(sd, env)
    sd.finish()
    observe = _read_observe(root, env)
    root.finish()
    prop = plan.propagate if plan is not None else None
    if plan is not None and prop is not None and prop.sleep is None and prop.probe is None \
            and "probe" not in sd.data.get("propagate", {}):
        drain_probe = plan.drain.probe if plan.drain else None
        # Only probes that can also count new traffic can be borrowed.
        if not isinstance(drain_probe, ConnectionsProbe | HaproxyProbe):
            problems.append("shutdown.propagate: an adaptive wait needs a probe: set "
                            "shutdown.propagate.probe, or sleep for a fixed wait, or use a "
                            "connections or haproxy probe in shutdown.drain (it is watched too)")
    if problems:
        raise ConfigError(problems, source)
    return Config(shutdown=shutdown, plan=plan, source=source, **core, **observe)


# -------------------------------------------------------------------- loading


def find_path(explicit: str | None) -> str | None:
    """--config, else $GRACERUN_CONFIG, else ./gracerun.toml when it exists."""
    if explicit is not None:
        if not explicit:
            raise ConfigError(["--config: expected a file path, got an empty string"])
        return explicit
    env = os.environ.get(CONFIG_ENV)
    if env:
        return env
    return DEFAULT_CONFIG_PATH if os.path.isfile(DEFAULT_CONFIG_PATH) else None


def read_toml(path: str) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(["config file not found"], path) from None
    except IsADirectoryError:
        raise ConfigError(["expected a TOML file, got a directory"], path) from None
    except PermissionError:
        raise ConfigError(["config file is not readable (permission denied)"], path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not valid UTF-8: {exc.reason}"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], path) from None
    except RecursionError:
        raise ConfigError(["invalid TOML: nested too deeply"], path) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror or exc}"], path) from None


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay overrides on base, table by table (flags win over the file)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load(path: str | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The Config for a run: file (if any) overlaid with command-line values."""
    data = read_toml(path) if path else {}
    labels = {}
    if overrides:
        from gracerun.config.settings import flag_for

        for table, entries in overrides.items():
            for key in entries:
                flag = flag_for(f"{table}.{key}")
                if flag:
                    labels[f"{table}.{key}"] = flag
    return build(merge(data, overrides or {}), source=path or "", labels=labels)
