"""The configured shutdown plan: phases, hooks and probes, and their worst cases.

    [shutdown.notify]      hooks that tell the service to stop background work
    [shutdown.deregister]  hooks that take the instance out of registries / LBs
    [shutdown.propagate]   a fixed sleep, or an adaptive wait for quiet traffic
    [shutdown.drain]       a probe polled until in-flight work is zero

Each piece is a frozen dataclass whose fields are its TOML keys, each declared
once with `opt()`: default, parser, help.  plan_reader.py reads the tables into
these records from those declarations, reference.py documents them, and
`worst_case` is the budget arithmetic that `gracerun check` prints and start-up
warns about.  Imported only for configs with phases or probes (dataclasses cost
start-up time; see load.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

from gracerun.config import strings, values
from gracerun.config.values import Env, Parser


def opt(default: Any = MISSING, *, help: str, parse: Parser | None = None,
        expand: Callable[[Env], Parser] | None = None, expect: str = "", shown: str | None = None,
        rule: str = "", more: str = "", keys: tuple[str, ...] = (), secret: bool = False) -> Any:
    """A field that is a TOML key: its default, parser and documentation, once.

    parse / expand: the parser, or a factory of it taking the environment (the value
    expands ${VAR}); neither: a table the reader reads itself.  expect: what the
    "missing" message asks for (the field is required).  shown: the docs' words for
    the default when the value alone does not say it.  rule: a default worked out
    from other values (a format string of the kind and index for hook names).
    keys: the TOML keys, when they are not the field's name.  secret: a password or
    token: left out of the record's repr (and so of any log line that prints it).
    """
    meta = {"help": help, "parse": parse, "expand": expand, "expect": expect,
            "shown": shown, "rule": rule, "more": more, "keys": keys, "secret": secret}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta, repr=not secret)
    return field(default=default, metadata=meta, repr=not secret)


# ------------------------------------------------------------------- hooks

_TIMEOUT: dict[str, Any] = dict(
    parse=values.positive_duration,
    help="the longest the hook may take (for http, each attempt)",
    more="Greater than zero. A hook is also cut short by its phase's `timeout` and by the "
         "pre-stop deadline.")


@dataclass(frozen=True, kw_only=True)
class Hook:
    name: str = opt(parse=strings.hook_name, rule="{type}-{n}",
                    help="for the log, the timeline and metrics: 1-64 letters, digits, `_`, "
                         "`-`, `.`, `:`; unique within the phase",
                    more="`n` counts from 1 in the phase.")
    timeout: float = opt(5.0, **_TIMEOUT)
    on_failure: str = opt("continue", parse=values.Choice("continue", "stop"),
                          help='`"continue"`: log the failure and go on; `"stop"`: skip the '
                               "rest of the pre-stop phases and go straight to the stop phase")

    @property
    def kind(self) -> str:
        return kind_of(type(self))

    def worst_case(self) -> float:
        return self.timeout


@dataclass(frozen=True, kw_only=True)
class ExecHook(Hook):
    """Runs a command, in its own process group, with gracerun's environment plus `env`."""

    command: tuple[str, ...] = opt(expand=strings.argv,
                                   expect='an array like ["/bin/deregister", "--now"]',
                                   help='an array of strings, the program first: `["curl", '
                                        '"-sf", "http://..."]`',
                                   more="A single string is rejected (there is no shell; use "
                                        '`["sh", "-c", "..."]` for one).')
    env: Mapping[str, str] = opt({}, expand=strings.environment,
                                 help="a table of strings added to the environment")
    cwd: str | None = opt(None, expand=strings.path, shown="gracerun's",
                          help="the working directory")


@dataclass(frozen=True, kw_only=True)
class HttpHook(Hook):
    """Sends one HTTP request, with retries."""

    url: str = opt(expand=strings.url, expect="the URL to call",
                   help="an `http://` or `https://` URL")
    method: str = opt("GET", parse=values.Choice("GET", "POST", "PUT", "DELETE", "PATCH",
                                                 "HEAD", upper=True),
                      help="`GET`, `POST`, `PUT`, `DELETE`, `PATCH` or `HEAD`, in any case")
    headers: Mapping[str, str] = opt({}, expand=strings.headers,
                                     help="a table of strings: header names of token "
                                          "characters, one-line latin-1 values")
    body: bytes | None = opt(None, expand=strings.body, help="a string, sent as UTF-8")
    bearer_token_file: str | None = opt(None, expand=strings.path,
                                        help="a file holding a bearer token, read at every "
                                             "request (tokens rotate) and sent as "
                                             "`Authorization: Bearer ...`; never logged")
    ca_file: str | None = opt(None, expand=strings.path, shown="the system's store",
                              help="the CA certificates (PEM) that an `https://` server's "
                                   "certificate must chain to")
    expect_status: frozenset[int] = opt(frozenset(), parse=values.statuses, shown="any 2xx",
                                        help="the status codes that count as success: a "
                                             "number or an array of numbers (100-599)")
    retries: int = opt(0, parse=values.whole(0, 10)(None),
                       help="further attempts after a failed one (a connection error or an "
                            "unexpected status), 0 to 10")
    backoff: float = opt(0.2, parse=values.duration,
                         help="the wait before the first retry; it doubles before each "
                              "further one")

    def worst_case(self) -> float:
        waits = sum(self.backoff * 2**i for i in range(self.retries))
        return self.timeout * (self.retries + 1) + waits


@dataclass(frozen=True, kw_only=True)
class SleepHook(Hook):
    """Waits a fixed time: the blind wait, for when nothing better can be probed."""

    timeout: float = opt(None, rule="its `duration`", **_TIMEOUT)
    duration: float = opt(parse=values.duration, expect='a duration like "2s"',
                          help="how long. Its worst case is the duration itself")

    def __post_init__(self) -> None:
        if self.timeout is None:
            object.__setattr__(self, "timeout", max(self.duration, 0.001))

    def worst_case(self) -> float:
        return min(self.duration, self.timeout)


@dataclass(frozen=True, kw_only=True)
class SignalHook(Hook):
    """Sends a signal to the service, e.g. SIGUSR1 to stop its consumers."""

    timeout: float = opt(1.0, **_TIMEOUT)  # sending a signal is instant: don't book 5s
    signal: int = opt(parse=values.signal_number, expect='a signal name like "SIGUSR1"',
                      help="the signal (1-64, a name or a number)")
    group: bool = opt(False, parse=values.boolean,
                      help="send it to the service's whole process group instead of the "
                           "service alone")


_HAPROXY_SOCKET: dict[str, Any] = dict(
    expand=strings.haproxy_socket, shown="",
    help="the path of HAProxy's stats socket (a unix socket)")
_HAPROXY_ADDRESS: dict[str, Any] = dict(
    expand=strings.haproxy_address, shown="",
    help='the `"HOST:PORT"` of a TCP stats socket (`"127.0.0.1:9999"`, `"[::1]:9999"`). '
         "Exactly one of `socket` and `address` is required")
_HAPROXY_BACKEND: dict[str, Any] = dict(
    expand=strings.haproxy_name("backend"),
    expect='the backend name in HAProxy\'s configuration, e.g. "app"',
    help="the backend's name in HAProxy's configuration")
_HAPROXY_SERVER: dict[str, Any] = dict(
    expand=strings.haproxy_name("server"),
    expect='the server name in HAProxy\'s configuration, e.g. "web1"',
    help="this instance's server name in that backend. Like `backend`, letters, digits, "
         "`_`, `-`, `.`, `:` (HAProxy's own rule; anything else could not name a server, "
         "and a `;` would start another command)")


@dataclass(frozen=True, kw_only=True)
class HaproxyHook(Hook):
    """`set server backend/server state drain|maint` on HAProxy's Runtime API."""

    socket: str | None = opt(None, **_HAPROXY_SOCKET)
    address: str | None = opt(None, **_HAPROXY_ADDRESS)
    backend: str = opt(**_HAPROXY_BACKEND)
    server: str = opt(**_HAPROXY_SERVER)
    state: str = opt("drain", parse=values.Choice("drain", "maint"),
                     help='`"drain"`: no new connections, except those that persistence '
                          "(stick tables, cookies) sends to this server; connections already "
                          'open go on. `"maint"`: no new connections at all, persistent ones '
                          "included")

    @property
    def target(self) -> str:
        return self.socket if self.socket is not None else self.address or ""


@dataclass(frozen=True)
class HookPhase:
    hooks: tuple[Hook, ...] = opt((), help="an array of tables, written "
                                           "`[[shutdown.notify.hooks]]`; at most 100 per "
                                           "phase. See [Hooks](#hooks)")
    parallel: bool = opt(False, parse=values.boolean,
                         help="run the hooks at the same time instead of one after the other")
    timeout: float | None = opt(None, parse=values.positive_duration,
                                help="a cap on the whole phase; the hooks share it. Greater "
                                     "than zero")

    def worst_case(self) -> float:
        costs = [h.worst_case() for h in self.hooks]
        total = (max(costs) if self.parallel else sum(costs)) if costs else 0.0
        return min(total, self.timeout) if self.timeout is not None else total


# ------------------------------------------------------------------ probes


@dataclass(frozen=True, kw_only=True)
class Probe:
    timeout: float = opt(2.0, parse=values.positive_duration,
                         help="the longest one reading may take; a reading that takes longer "
                              "has failed. Greater than zero")

    @property
    def kind(self) -> str:
        return kind_of(type(self))


@dataclass(frozen=True, kw_only=True)
class ConnectionsProbe(Probe):
    """Reads the service's TCP connections on `ports` from the kernel (sockdiag)."""

    ports: tuple[int, ...] = opt(keys=("port", "ports"), expand=values.whole(1, 65535),
                                 help='`port`: a port, 1-65535 (or a string such as '
                                      '`"${PORT:-8080}"`); `ports`: an array of them. One of '
                                      "the two is required")
    idle: float = opt(1.0, parse=values.duration,
                      help="drain: a connection on which no byte moved for this long is not "
                           "in flight")


@dataclass(frozen=True, kw_only=True)
class HttpProbe(Probe):
    """GET url; the reading is a number in the body, or the status code's verdict."""

    url: str = opt(expand=strings.url, expect="the URL to GET",
                   help="an `http://` or `https://` URL")
    value: str = opt("body", parse=values.Choice("body", "status"),
                     help='`"body"`: the reading is the first number in the response body, or '
                          "the JSON field `field`; a status not in `ok_status` is a failed "
                          'reading. `"status"`: the reading is 0 when the status is in '
                          "`ok_status`, 1 otherwise")
    field: str | None = opt(None, expand=strings.text,
                            help='with `value = "body"`: the key of a JSON object holding the '
                                 'number, e.g. `"inflight"`')
    ok_status: frozenset[int] = opt(frozenset({200}), parse=values.statuses,
                                    help="a number or a non-empty array of numbers (100-599)")
    headers: Mapping[str, str] = opt({}, expand=strings.headers,
                                     help="a table of strings: request headers")
    bearer_token_file: str | None = opt(None, expand=strings.path,
                                        help="as for the http hook: a bearer token's file, "
                                             "read at every request")
    ca_file: str | None = opt(None, expand=strings.path, shown="the system's store",
                              help="as for the http hook: the CA for an `https://` URL")


@dataclass(frozen=True, kw_only=True)
class ExecProbe(Probe):
    """Runs a command: exit 0 reads as 0 (drained), anything else as 1."""

    command: tuple[str, ...] = opt(expand=strings.argv,
                                   expect='an array like ["test", "-f", "/tmp/idle"]',
                                   help='an array of strings, e.g. `["test", "-f", '
                                        '"/tmp/idle"]`')


@dataclass(frozen=True, kw_only=True)
class TcpProbe(Probe):
    """Connects to host:port: 0 when it accepts, 1 when not (readiness gating)."""

    host: str = opt("127.0.0.1", expand=strings.host, help="the host to connect to")
    port: int = opt(expand=values.whole(1, 65535), expect="the TCP port to connect to",
                    help="1-65535")


@dataclass(frozen=True, kw_only=True)
class HaproxyProbe(Probe):
    """A server's row of HAProxy's `show stat`: drain reads its current sessions (scur,
    plus its queue), propagate its cumulative sessions (stot)."""

    socket: str | None = opt(None, **_HAPROXY_SOCKET)
    address: str | None = opt(None, **_HAPROXY_ADDRESS)
    backend: str = opt(**_HAPROXY_BACKEND)
    server: str = opt(**_HAPROXY_SERVER)

    @property
    def target(self) -> str:
        return self.socket if self.socket is not None else self.address or ""


# ---------------------------------------------------------------- kinds


def kind_of(cls: type) -> str:
    """ExecHook -> "exec": the `type` a record stands for."""
    return cls.__name__.removesuffix("Hook").removesuffix("Probe").lower()


class Kinds(Mapping[str, type]):
    """kind -> record class, from a registry of kind modules (each holds RECORD).

    The registries are lifecycle/hooks/__init__.py's and lifecycle/probes/__init__.py's
    KINDS: a new kind is one new module there plus one line in KINDS.  Loaded on first
    use, so that importing this module imports no kind module.
    """

    def __init__(self, package: str) -> None:
        self.package = package
        self._records: dict[str, type] | None = None
        self._modules: dict[str, Any] = {}

    def _load(self) -> dict[str, type]:
        if self._records is None:
            import importlib

            registry = importlib.import_module(self.package).KINDS
            for kind, name in registry.items():
                self._modules[kind] = importlib.import_module(f"{self.package}.{name}")
            self._records = {kind: module.RECORD for kind, module in self._modules.items()}
        return self._records

    def module(self, kind: str) -> Any:
        self._load()
        return self._modules[kind]

    def __getitem__(self, kind: str) -> type:
        return self._load()[kind]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def able(self, *capabilities: str) -> tuple[str, ...]:
        """The kinds whose module offers any of `capabilities` (functions by name)."""
        return tuple(kind for kind in self if any(
            hasattr(self.module(kind), c) for c in capabilities))


HOOKS = Kinds("gracerun.lifecycle.hooks")
PROBES = Kinds("gracerun.lifecycle.probes")


def drain_probes() -> tuple[str, ...]:
    """Probe kinds that can read work in flight."""
    return PROBES.able("in_flight")


def propagate_probes() -> tuple[str, ...]:
    """Probe kinds that can count new traffic or tell when the world has noticed."""
    return PROBES.able("traffic", "propagated")


def ready_probes() -> tuple[str, ...]:
    """Probe kinds that can gate readiness."""
    return PROBES.able("ready")


# Where probes go, which kinds each place admits, and what the reading means there.
PROBE_PLACES = (
    ("shutdown.drain.probe", drain_probes, "work in flight; the phase ends at 0"),
    ("shutdown.propagate.probe", propagate_probes,
     "a traffic counter (the phase ends once it stops moving), or the cluster's own "
     "answer (kubernetes: the phase ends once the pod's endpoint is not ready)"),
    ("startup.probe", ready_probes, "the service's own readiness: the start-up sequence "
     "waits for it before it puts the instance back, and `/ready` answers 200 only after"),
    ("server.ready_probe", ready_probes, "the same as `startup.probe` (the older name; "
     "used when `startup.probe` is not set)"),
)
# Probes that can also count new traffic: an adaptive propagate may borrow them from drain.
COUNTING_PROBES = (ConnectionsProbe, HaproxyProbe)


# ------------------------------------------------------------- the phases


@dataclass(frozen=True)
class PropagateConfig:
    """A fixed `sleep`, or adaptive: end once traffic was quiet for `quiet`,
    no sooner than `min`, no later than `max`."""

    sleep: float | None = opt(None, parse=values.duration,
                              help="a fixed wait. Not together with `quiet`, `min`, `max` or "
                                   "`probe`")
    quiet: float = opt(1.0, parse=values.positive_duration,
                       help="the adaptive wait ends once the probe's reading has not changed "
                            "for this long...")
    min: float = opt(0.0, parse=values.duration,
                     help="...but no sooner than this after the phase began...")
    max: float = opt(30.0, parse=values.positive_duration,
                     help="...and no later than this. `min` and `quiet` must not exceed it")
    interval: float = opt(0.1, parse=values.positive_duration,
                          help="how often the probe is read")
    probe: Probe | None = opt(None, shown="the drain probe's ports",  # noqa: RUF009 (a field)
                              help="a `connections`, `http` or `haproxy` [probe](#probes) "
                                   "whose reading grows while new traffic arrives",
                              more="For `connections`, the number of new established "
                                   "connections on its ports; for `http`, the number the URL "
                                   "returns (a request counter, say); for `haproxy`, the "
                                   "sessions the load balancer has sent to this server so far "
                                   '(`stot`), the most direct answer to "has the load balancer '
                                   'stopped sending?" ([why](#why-haproxys-stot-is-the-signal-'
                                   "for-propagate)).")

    def worst_case(self) -> float:
        return self.sleep if self.sleep is not None else self.max


@dataclass(frozen=True)
class DrainConfig:
    probe: Probe | None = opt(None,  # noqa: RUF009 (opt() returns a dataclasses.field)
                              expect='e.g. probe = { type = "connections", port = 8080 }',
                              help="a `connections`, `http`, `exec` or `haproxy` "
                                   "[probe](#probes) whose reading is the work in flight. The "
                                   "phase ends when it reads 0 or less. `probe` or `probes` "
                                   "(or both) is required")
    probes: tuple[Probe, ...] = opt(
        (), help="an array of further probes (each as `probe`): the phase ends when every "
                 "one reads 0 or less, e.g. the connections probe and the service's own "
                 "in-flight counter")
    interval: float = opt(0.2, parse=values.positive_duration,
                          help="how often the probes are read")
    timeout: float = opt(30.0, parse=values.positive_duration,
                         help="the longest the phase waits")

    @property
    def all_probes(self) -> tuple[Probe, ...]:
        return ((self.probe,) if self.probe is not None else ()) + self.probes

    def counting_probe(self) -> Probe | None:
        """The first probe that can also count new traffic (for an adaptive propagate)."""
        return next((p for p in self.all_probes if isinstance(p, COUNTING_PROBES)), None)

    def worst_case(self) -> float:
        return self.timeout if self.all_probes else 0.0


@dataclass(frozen=True)
class StartupConfig:
    """[startup]: once the service is ready, put it (back) into rotation."""

    probe: Probe | None = opt(None,  # noqa: RUF009 (opt() returns a dataclasses.field)
                              help="an `http` or `tcp` [probe](#probes) that passes once the "
                                   "service can take work; polled every `interval`. Without "
                                   "it (and without `delay`) the service counts as ready as "
                                   "soon as it is started. `server.ready_probe` is the older "
                                   "name, used when this is not set")
    delay: float | None = opt(None, parse=values.duration,
                              help="instead of a probe: a fixed wait after the start")
    interval: float = opt(1.0, parse=values.positive_duration,
                          help="how often the probe is read")
    restore: bool = opt(True, parse=values.boolean,
                        help="put back what the deregister hooks take out (each kind that "
                             "can: haproxy, nacos, eureka, consul, etcd, nginx), so that a "
                             "rolling restart leaves every instance in rotation")
    hooks: tuple[Hook, ...] = opt((), help="further hooks to run once ready, written "
                                           "`[[startup.hooks]]` (exec, http, sleep, signal)")
    on_failure: str = opt("ready", parse=values.Choice("ready", "not-ready"),
                          help='when a start-up hook fails: `"ready"`: log and count it, '
                               'and become ready anyway; `"not-ready"`: `/ready` stays 503 '
                               "and the failed hooks are retried every `retry_interval`")
    retry_interval: float = opt(5.0, parse=values.positive_duration,
                                help='with `on_failure = "not-ready"`: the wait between '
                                     "retries")


@dataclass(frozen=True)
class Plan:
    notify: HookPhase = HookPhase()
    deregister: HookPhase = HookPhase()
    propagate: PropagateConfig | None = None
    drain: DrainConfig | None = None

    @property
    def empty(self) -> bool:
        return (not self.notify.hooks and not self.deregister.hooks
                and self.propagate is None and self.drain is None)

    def worst_cases(self) -> list[tuple[str, float]]:
        """(phase, worst-case seconds) in the order the phases run."""
        out = [("notify", self.notify.worst_case()), ("deregister", self.deregister.worst_case())]
        out.append(("propagate", self.propagate.worst_case() if self.propagate else 0.0))
        out.append(("drain", self.drain.worst_case() if self.drain else 0.0))
        return out

    def worst_case(self) -> float:
        return sum(seconds for _, seconds in self.worst_cases())


HOOK_PHASES = ("notify", "deregister")
PHASES: dict[str, type] = {"notify": HookPhase, "deregister": HookPhase,
                           "propagate": PropagateConfig, "drain": DrainConfig}
