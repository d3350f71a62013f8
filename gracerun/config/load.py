"""gracerun.toml and command-line flags, validated into immutable records.

Every option of gracerun's own tables is declared once, in settings.SETTINGS
(key, flags, parser, default, help); the readers here walk those declarations
and the records below take their defaults from them.  Command-line values are
merged into the TOML data before one validation pass, so a bad flag and a bad
key get the same kind of message.  The pre-stop phases are read by
plan_reader.py into plan.py's records.

Validation collects every problem at once, each with its key path and what
was expected, and rejects unknown keys with a did-you-mean.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gracerun.config import settings
from gracerun.config.reader import Reader
from gracerun.config.settings import default
from gracerun.config.values import Env
from gracerun.core.tuples import NamedTuple
from gracerun.errors import ConfigError

if TYPE_CHECKING:  # plan.py is imported only for configs that use it (start-up time)
    from gracerun.config.kinds import Probe
    from gracerun.config.plan import Plan, StartupConfig

DEFAULT_BUDGET: float = default("shutdown.budget")
PHASE_TABLES = ("notify", "deregister", "propagate", "drain")
CONFIG_ENV = "GRACERUN_CONFIG"
DEFAULT_CONFIG_PATH = "gracerun.toml"
CONTROL_SOCKET_ENV = settings.CONTROL_SOCKET.env
DEFAULT_CONTROL_SOCKET = settings.CONTROL_SOCKET.path  # root's, when PID 1 and unset
default_control_socket = settings.CONTROL_SOCKET.default_path  # this user's (docs/security.md)
# A configuration is a few kilobytes; anything near this is a mistake (a log file, a
# device), and tomllib would hold it all in memory, several times over.
MAX_CONFIG_BYTES = 1024 * 1024


# ---------------------------------------------------------------- the result
#
# Immutable NamedTuples rather than frozen dataclasses: this module is on the
# start-up path of every container, and creating ten dataclasses (plus the
# `inspect` machinery `dataclasses` imports) cost ~12 ms there, a third of the
# start-up budget.  plan.py and kinds.py, loaded only for configs with phases,
# hooks or probes, use record.py's Records (no dataclasses either).  Field names
# are the keys of settings.SETTINGS (a test holds them to it), and the defaults
# are the declared ones.

class SignalsConfig(NamedTuple):
    group: bool = default("signals.group")
    rewrite: Mapping[int, int] = default("signals.rewrite")  # 0 drops the signal


class ProcessConfig(NamedTuple):
    subreaper: bool = default("process.subreaper")
    pdeathsig: int | None = default("process.pdeathsig")
    event_loop: str = default("process.event_loop")
    success_codes: frozenset[int] = default("process.success_codes")  # reported as 0


class LogConfig(NamedTuple):
    verbosity: int = default("log.verbosity")
    format: str = default("log.format")
    warn_orphans: bool = default("log.warn_orphans")


class ShutdownConfig(NamedTuple):
    budget: float = default("shutdown.budget")
    stop_signal: int | None = default("shutdown.stop_signal")  # None: stop_signal_for
    stop_grace: float | None = default("shutdown.stop_grace")  # None: effective_stop_grace
    triggers: frozenset[int] = default("shutdown.triggers")

    @property
    def effective_stop_grace(self) -> float:
        """Time kept for the stop phase: pre-stop phases must end before it."""
        if self.stop_grace is not None:
            return min(self.stop_grace, self.budget)
        return settings.STOP_GRACE(self.budget)

    def stop_signal_for(self, trigger: int | None, rewrite: Mapping[int, int]) -> int:
        """The stop phase's signal for a shutdown started by `trigger` (None: a preStop
        or the service's own exit); never 0, which build() rejects."""
        if self.stop_signal is not None:
            return self.stop_signal
        return settings.STOP_SIGNAL(trigger, rewrite)


class ServerConfig(NamedTuple):
    listen: str | None = default("server.listen")
    ready_probe: Probe | None = None  # the service's own readiness, gating /ready
    ready_interval: float = default("server.ready_interval")


class PushgatewayConfig(NamedTuple):
    url: str
    job: str = default("state.pushgateway.job")
    grouping: Mapping[str, str] = default("state.pushgateway.grouping")
    timeout: float = default("state.pushgateway.timeout")


class StateConfig(NamedTuple):
    file: str | None = default("state.file")
    textfile: str | None = default("state.textfile")
    pushgateway: PushgatewayConfig | None = None


class ControlConfig(NamedTuple):
    socket: str | None = default("control.socket")  # unix socket behind `gracerun prestop`

    def path(self, pid1: bool) -> str | None:
        """The socket to use: see settings.CONTROL_SOCKET."""
        return settings.CONTROL_SOCKET(self.socket, pid1)


class Config(NamedTuple):
    signals: SignalsConfig = SignalsConfig()
    process: ProcessConfig = ProcessConfig()
    log: LogConfig = LogConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    plan: Plan | None = None  # None: no pre-stop phases configured
    startup: StartupConfig | None = None  # None: READY as soon as the service is started
    server: ServerConfig = ServerConfig()
    state: StateConfig = StateConfig()
    control: ControlConfig = ControlConfig()
    source: str = ""  # the file it came from, "" for built-in defaults

    @property
    def needs_asyncio(self) -> bool:
        """Whether anything configured needs the asyncio loop (see loop.py)."""
        return (self.has_pipeline or self.server.listen is not None
                or self.state.pushgateway is not None or self.has_startup)

    @property
    def has_startup(self) -> bool:
        """Is there a start-up sequence to run (a probe, a delay, hooks to run or put back)?"""
        su = self.startup
        return su is not None and (su.probe is not None or su.delay is not None
                                   or bool(su.hooks) or (su.restore and _restores(self.plan)))

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


# ------------------------------------------------------------------- reading


def _options(r: Reader, env: Env) -> dict[str, Any]:
    """The declared options of r's table: parsed, or their defaults.  Tables among
    them (parse=None) are left to their own readers."""
    out: dict[str, Any] = {}
    for s in settings.TABLES.get(r.path, ()):
        parse = s.parser(env)
        r.seen.add(s.name)
        if parse is None:
            continue
        if s.expect:
            r.require(s.name, s.expect)
        out[s.name] = r.get(s.name, parse, s.default)
    return out


def _read_table(root: Reader, name: str, env: Env) -> dict[str, Any]:
    r = root.table(name)
    out = _options(r, env)
    r.finish()
    return out


def _read_shutdown(sd: Reader, rewrite: Mapping[int, int], problems: list[str],
                   labels: Mapping[str, str]) -> ShutdownConfig:
    before = len(problems)
    cfg = ShutdownConfig(**_options(sd, None))
    if cfg.stop_grace is not None and cfg.stop_grace > cfg.budget and len(problems) == before:
        sd.error("stop_grace", f"expected at most the budget ({cfg.budget:g}s), got "
                               f"{cfg.stop_grace:g}s")
    if cfg.stop_signal is None:
        # A trigger rewritten to 0 would leave the stop phase nothing to send, and the
        # service would meet SIGKILL at the end of the budget; a preStop or the
        # service's exit stands for the rule's stand-in, so that one counts too.
        for trigger in (*sorted(cfg.triggers), None):
            if settings.STOP_SIGNAL(trigger, rewrite) == 0:
                from gracerun.core import signals

                if trigger is None:
                    what = (f"{signals.name(settings.STOP_SIGNAL.stand_in)} stands for a "
                            "shutdown started by gracerun prestop or by the service's exit")
                else:
                    what = f"{signals.name(trigger)} starts the shutdown"
                where = labels.get("signals.rewrite", "signals.rewrite")
                flag = settings.BY_KEY["shutdown.stop_signal"].flags[-1]
                problems.append(f"{where}: {what} and is rewritten to 0, so the stop phase "
                                f"would send no signal; set shutdown.stop_signal ({flag}) to "
                                f"the signal the service stops on")
                break
    return cfg


def _read_observe(root: Reader, env: Env) -> dict[str, Any]:
    sv = root.table("server")
    ready_probe = None
    if "ready_probe" in sv.data:
        from gracerun.config.plan import READY
        from gracerun.config.plan_reader import read_probe

        ready_probe = read_probe(sv.table("ready_probe"), env, READY)
    server = ServerConfig(**_options(sv, env), ready_probe=ready_probe)
    sv.finish()

    st = root.table("state")
    push = None
    if "pushgateway" in st.data:
        pg = st.table("pushgateway")
        push = PushgatewayConfig(**_options(pg, env))
        pg.finish()
    state = StateConfig(**_options(st, env), pushgateway=push)
    st.finish()
    control = ControlConfig(**_read_table(root, "control", env))
    return {"server": server, "state": state, "control": control}


def build(data: Mapping[str, Any], *, source: str = "",
          labels: Mapping[str, str] | None = None, env: Env = None) -> Config:
    """Validate TOML-shaped data into a Config; raise ConfigError with every problem."""
    problems: list[str] = []
    labels = labels or {}
    root = Reader(dict(data), "", problems, labels)
    signals_cfg = SignalsConfig(**_read_table(root, "signals", env))
    process = ProcessConfig(**_read_table(root, "process", env))
    log = LogConfig(**_read_table(root, "log", env))
    sd = root.table("shutdown")
    shutdown = _read_shutdown(sd, signals_cfg.rewrite, problems, labels)
    sd.seen.update(PHASE_TABLES)  # known keys even when absent (did-you-mean)
    plan = None
    if any(name in sd.data for name in PHASE_TABLES):
        from gracerun.config.plan_reader import read_plan

        plan = read_plan(sd, env)
    sd.finish()
    observe = _read_observe(root, env)
    startup = None
    root.seen.add("startup")
    server = observe["server"]
    if "startup" in root.data or server.ready_probe is not None or _restores(plan):
        from gracerun.config.plan_reader import read_startup

        startup = read_startup(root.table("startup"), env, server.ready_probe,
                               server.ready_interval)
    root.finish()
    if problems:
        raise ConfigError(problems, source)
    return Config(signals=signals_cfg, process=process, log=log, shutdown=shutdown, plan=plan,
                  startup=startup, source=source, **observe)


def _restores(plan: Plan | None) -> bool:
    """Does a deregister hook know how to put the instance back (a start-up to run)?"""
    if plan is None or not plan.deregister.hooks:
        return False
    from gracerun.config.plan import HOOKS

    return any(hasattr(HOOKS.module(h.kind), "restore") for h in plan.deregister.hooks)


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


def _kind(mode: int) -> str | None:
    """What a file is when it is not a regular file (stat.S_IFMT without `stat`)."""
    kinds = {0o040000: "a directory", 0o020000: "a character device",
             0o060000: "a block device", 0o010000: "a FIFO", 0o140000: "a socket"}
    fmt = mode & 0o170000
    return None if fmt == 0o100000 else kinds.get(fmt, "not a regular file")


def _kind_at(path: str) -> str | None:
    try:
        return _kind(os.stat(path).st_mode)
    except OSError:
        return None


def read_bytes(path: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The file's content: a regular file (a symlink to one is fine) of at most `limit`
    bytes.  O_NONBLOCK so that a FIFO is refused instead of waiting for a writer;
    O_NOCTTY so that a terminal named by mistake cannot become ours."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(["config file not found"], path) from None
    except PermissionError:
        raise ConfigError(["config file is not readable (permission denied)"], path) from None
    except OSError as exc:  # a socket cannot be opened at all (ENXIO): say what it is
        kind = _kind_at(path) if exc.errno == errno.ENXIO else None
        why = f"expected a TOML file, got {kind}" if kind else \
            f"cannot read config file: {exc.strerror or exc}"
        raise ConfigError([why], path) from None
    try:
        kind = _kind(os.fstat(fd).st_mode)
        if kind:
            raise ConfigError([f"expected a TOML file, got {kind}"], path)
        chunks, size = [], 0
        while size <= limit:  # st_size is not trusted: /proc files say 0, files grow
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError([f"cannot read config file: {exc.strerror or exc}"], path) from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError([f"expected a TOML file of at most {limit:,} bytes, got a larger "
                           "one"], path)
    return b"".join(chunks)


def read_toml(path: str) -> dict[str, Any]:
    import tomllib

    raw = read_bytes(path)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not valid UTF-8: {exc.reason}"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], path) from None
    except ValueError:  # int() of more digits than Python converts (4300)
        raise ConfigError(["invalid TOML: a number too long to read (over 4,300 digits)"],
                          path) from None
    except RecursionError:
        raise ConfigError(["invalid TOML: nested too deeply"], path) from None


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
    for table, entries in (overrides or {}).items():
        for key in entries:
            flag = settings.flag_for(f"{table}.{key}")
            if flag:
                labels[f"{table}.{key}"] = flag
    return build(merge(data, overrides or {}), source=path or "", labels=labels)
