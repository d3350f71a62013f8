"""The configured shutdown plan: phases, hooks and probes, and their worst cases.

    [shutdown.notify]      hooks that tell the service to stop background work
    [shutdown.deregister]  hooks that take the instance out of registries / LBs
    [shutdown.propagate]   a fixed sleep, or an adaptive wait for quiet traffic
    [shutdown.drain]       a probe polled until in-flight work is zero

Each piece is a frozen dataclass; `read_plan` validates the TOML tables into
them, and `worst_case` is the budget arithmetic that `gracerun check` prints
and start-up warns about.  Strings in hooks and probes expand ${VAR} and
${VAR:-default} from the environment here, at start-up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gracerun.config import values
from gracerun.config.reader import Reader, boolean, choice, describe, list_of, positive_duration

HOOK_PHASES = ("notify", "deregister")
FAILURE_POLICIES = ("continue", "stop")


# ------------------------------------------------------------------- hooks


@dataclass(frozen=True, kw_only=True)
class Hook:
    name: str
    timeout: float
    on_failure: str = "continue"  # or "stop": skip straight to the stop phase

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Hook").lower()

    def worst_case(self) -> float:
        return self.timeout


@dataclass(frozen=True, kw_only=True)
class ExecHook(Hook):
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None


@dataclass(frozen=True, kw_only=True)
class HttpHook(Hook):
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    expect_status: frozenset[int] = frozenset()  # empty: any 2xx
    retries: int = 0
    backoff: float = 0.2  # doubles after each failed attempt

    def worst_case(self) -> float:
        waits = sum(self.backoff * 2**i for i in range(self.retries))
        return self.timeout * (self.retries + 1) + waits


@dataclass(frozen=True, kw_only=True)
class SleepHook(Hook):
    duration: float

    def worst_case(self) -> float:
        return min(self.duration, self.timeout)


@dataclass(frozen=True, kw_only=True)
class SignalHook(Hook):
    signal: int
    group: bool = False  # the service's whole process group


@dataclass(frozen=True, kw_only=True)
class HaproxyHook(Hook):
    """`set server backend/server state drain|maint` on HAProxy's Runtime API."""

    socket: str | None = None  # the stats socket's path, or
    address: str | None = None  # its "HOST:PORT"
    backend: str
    server: str
    state: str = "drain"  # or "maint"

    @property
    def target(self) -> str:
        return self.socket if self.socket is not None else self.address or ""


@dataclass(frozen=True)
class HookPhase:
    hooks: tuple[Hook, ...] = ()
    parallel: bool = False
    timeout: float | None = None  # cap on the whole phase

    def worst_case(self) -> float:
        costs = [h.worst_case() for h in self.hooks]
        total = (max(costs) if self.parallel else sum(costs)) if costs else 0.0
        return min(total, self.timeout) if self.timeout is not None else total


# ------------------------------------------------------------------ probes


@dataclass(frozen=True, kw_only=True)
class Probe:
    timeout: float = 2.0

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Probe").lower()


@dataclass(frozen=True, kw_only=True)
class ConnectionsProbe(Probe):
    """Reads the service's TCP connections on `ports` from the kernel (sockdiag)."""

    ports: tuple[int, ...]
    idle: float = 1.0  # a connection with no bytes moving for this long is not in flight


@dataclass(frozen=True, kw_only=True)
class HttpProbe(Probe):
    """GET url; the reading is a number in the body, or the status code's verdict."""

    url: str
    value: str = "body"  # "body": a number (or JSON field); "status": 0 when status ok
    field: str | None = None  # JSON key holding the number, e.g. "inflight"
    ok_status: frozenset[int] = frozenset({200})


@dataclass(frozen=True, kw_only=True)
class ExecProbe(Probe):
    """Runs a command: exit 0 reads as 0 (drained), anything else as 1."""

    command: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TcpProbe(Probe):
    """Connects to host:port: 0 when it accepts, 1 when not (readiness gating)."""

    host: str = "127.0.0.1"
    port: int


@dataclass(frozen=True, kw_only=True)
class HaproxyProbe(Probe):
    """A server's row of HAProxy's `show stat`: drain reads its current sessions (scur,
    plus its queue), propagate its cumulative sessions (stot)."""

    socket: str | None = None
    address: str | None = None
    backend: str
    server: str

    @property
    def target(self) -> str:
        return self.socket if self.socket is not None else self.address or ""


# ------------------------------------------------------------- the phases


@dataclass(frozen=True)
class PropagateConfig:
    """A fixed `sleep`, or adaptive: end once traffic was quiet for `quiet`,
    no sooner than `min`, no later than `max`."""

    sleep: float | None = None
    quiet: float = 1.0
    min: float = 0.0
    max: float = 30.0
    interval: float = 0.1
    probe: Probe | None = None  # None with no sleep: the drain probe's ports, if any

    def worst_case(self) -> float:
        return self.sleep if self.sleep is not None else self.max


@dataclass(frozen=True)
class DrainConfig:
    probe: Probe | None = None
    interval: float = 0.2
    timeout: float = 30.0

    def worst_case(self) -> float:
        return self.timeout if self.probe is not None else 0.0


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


# ---------------------------------------------------------------- reading

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def text(env: Mapping[str, str] | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {describe(value)}")
        expanded = values.expand_env(value, env)
        try:
            expanded.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("expected text that is valid UTF-8") from None
        return expanded

    return parse


def argv(env: Mapping[str, str] | None = None) -> Callable[[Any], tuple[str, ...]]:
    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            raise ValueError(f'expected an array of strings like ["curl", "-sf", URL], '
                             f"got a string {value!r}")
        if not isinstance(value, list) or not value:
            raise ValueError(f"expected a non-empty array of strings, got {describe(value)}")
        if not all(isinstance(v, str) for v in value):
            bad = next(v for v in value if not isinstance(v, str))
            raise ValueError(f"expected an array of strings, found {describe(bad)}")
        if not value[0]:
            raise ValueError("expected a command name as the first element, got an empty string")
        return tuple(values.expand_env(v, env) for v in value)

    return parse


def string_table(env: Mapping[str, str] | None = None) -> Callable[[Any], dict[str, str]]:
    def parse(value: Any) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table of strings, got {describe(value)}")
        out = {}
        for k, v in value.items():
            if not isinstance(v, str):
                raise ValueError(f"expected a string for {k!r}, got {describe(v)}")
            out[k] = values.expand_env(v, env)
        return out

    return parse


def whole(low: int, high: int, env: Mapping[str, str] | None = None) -> Callable[[Any], int]:
    """An integer in [low, high]; a string is accepted after ${VAR} expansion (ports)."""

    def parse(value: Any) -> int:
        if isinstance(value, str) and "$" in value:
            expanded = values.expand_env(value, env).strip()
            if expanded.isascii() and expanded.isdigit() and len(expanded) <= 6:
                value = int(expanded)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got "
                             f"{describe(value)}")
        return value

    return parse


def url(env: Mapping[str, str] | None) -> Callable[[Any], str]:
    """An http(s) URL the client can call, checked now rather than mid-shutdown."""
    expand = text(env)

    def parse(value: Any) -> str:
        from gracerun.clients.http import HttpError, parse_url

        expanded = expand(value)
        try:
            parse_url(expanded)
        except HttpError as exc:
            why = str(exc).rpartition("': ")[2]
            raise ValueError(f"expected an http:// or https:// URL, got {expanded!r} "
                             f"({why})") from None
        return expanded

    return parse


def _statuses(value: Any) -> frozenset[int]:
    return frozenset(list_of(whole(100, 599))(value))


def _ports(r: Reader, env: Mapping[str, str] | None) -> tuple[int, ...]:
    port = r.get("port", whole(1, 65535, env), None)
    ports = r.get("ports", list_of(whole(1, 65535, env)), None)
    found = tuple(ports or ()) + ((port,) if port is not None else ())
    if not found and "port" not in r.data and "ports" not in r.data:
        r.error("", 'expected "port" or "ports"')
    return found


def _haproxy_name(what: str, env: Mapping[str, str] | None) -> Callable[[Any], str]:
    expand = text(env)

    def parse(value: Any) -> str:
        from gracerun.clients.haproxy import NAME

        expanded = expand(value)
        if not NAME.match(expanded):
            raise ValueError(f"expected an HAProxy {what} name (letters, digits, '_', '-', "
                             f"'.', ':'), got {expanded!r}")
        return expanded

    return parse


def _haproxy_socket(env: Mapping[str, str] | None) -> Callable[[Any], str]:
    expand = text(env)

    def parse(value: Any) -> str:
        path = expand(value)
        if not path or "\0" in path:
            raise ValueError(f"expected the path of HAProxy's stats socket, got {path!r}")
        return path if "/" in path else f"./{path}"  # a "/" is what marks a socket path

    return parse


def _haproxy_address(env: Mapping[str, str] | None) -> Callable[[Any], str]:
    expand = text(env)

    def parse(value: Any) -> str:
        from gracerun.clients.haproxy import HaproxyError, parse_address

        address = expand(value)
        try:
            parse_address(address)
        except HaproxyError:
            raise ValueError('expected the "HOST:PORT" of HAProxy\'s stats socket, such as '
                             f'"127.0.0.1:9999", got {address!r}') from None
        return address

    return parse


def _haproxy_server(r: Reader, env: Mapping[str, str] | None) -> dict[str, Any]:
    """The keys the haproxy hook and probe share: socket or address, backend, server."""
    found = [key for key in ("socket", "address") if key in r.data]
    if not found:
        r.error("", 'expected "socket" (the path of HAProxy\'s stats socket) or "address" '
                    '(its "HOST:PORT")')
    elif len(found) == 2:
        r.error("address", 'expected either "socket" or "address", not both')
    out: dict[str, Any] = {"socket": r.get("socket", _haproxy_socket(env), None),
                           "address": r.get("address", _haproxy_address(env), None)}
    for key, example in (("backend", "app"), ("server", "web1")):
        if key not in r.data:
            r.error(key, f'missing; expected the {key} name in HAProxy\'s configuration, '
                         f'e.g. "{example}"')
        out[key] = r.get(key, _haproxy_name(key, env), "")
    return out


_PROBE_KINDS = ("connections", "http", "exec", "tcp", "haproxy")


def read_probe(r: Reader, env: Mapping[str, str] | None, kinds: tuple[str, ...] = _PROBE_KINDS
               ) -> Probe | None:
    kind = r.get("type", choice(*kinds), None)
    if kind is None:
        if "type" not in r.data:
            r.error("type", f"missing; expected one of {', '.join(kinds)}")
        return None
    timeout = r.get("timeout", positive_duration, 2.0)
    probe: Probe | None
    if kind == "connections":
        probe = ConnectionsProbe(ports=_ports(r, env), idle=r.get("idle", values.duration, 1.0),
                                 timeout=timeout)
    elif kind == "http":
        target = r.get("url", url(env), None)
        if target is None and "url" not in r.data:
            r.error("url", "missing; expected the URL to GET")
        probe = HttpProbe(url=target or "", timeout=timeout,
                          value=r.get("value", choice("body", "status"), "body"),
                          field=r.get("field", text(env), None),
                          ok_status=r.get("ok_status", _statuses, frozenset({200})))
    elif kind == "exec":
        command = r.get("command", argv(env), None)
        if command is None and "command" not in r.data:
            r.error("command", 'missing; expected an array like ["test", "-f", "/tmp/idle"]')
        probe = ExecProbe(command=command or ("true",), timeout=timeout)
    elif kind == "haproxy":
        probe = HaproxyProbe(**_haproxy_server(r, env), timeout=timeout)
    else:
        probe = TcpProbe(host=r.get("host", text(env), "127.0.0.1"),
                         port=r.get("port", whole(1, 65535, env), 0), timeout=timeout)
        if "port" not in r.data:
            r.error("port", "missing; expected the TCP port to connect to")
    r.finish()
    return probe


_HOOK_KINDS = ("exec", "http", "sleep", "signal", "haproxy")


def _read_hook(r: Reader, index: int, env: Mapping[str, str] | None) -> Hook | None:
    kind = r.get("type", choice(*_HOOK_KINDS), None)
    if kind is None:
        if "type" not in r.data:
            r.error("type", f"missing; expected one of {', '.join(_HOOK_KINDS)}")
        r.seen.update(r.data)  # no point reporting unknown keys of an unknown kind
        return None

    def name_check(value: Any) -> str:
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError("expected a name of 1-64 letters, digits, '_', '-', '.', ':', "
                             f"got {describe(value)}")
        return value

    common: dict[str, Any] = {
        "name": r.get("name", name_check, f"{kind}-{index + 1}"),
        "timeout": r.get("timeout", positive_duration, 5.0),
        "on_failure": r.get("on_failure", choice(*FAILURE_POLICIES), "continue"),
    }
    hook: Hook | None = None
    if kind == "exec":
        command = r.get("command", argv(env), None)
        if "command" not in r.data:
            r.error("command", 'missing; expected an array like ["/bin/deregister", "--now"]')
        hook = ExecHook(command=command or ("true",), env=r.get("env", string_table(env), {}),
                        cwd=r.get("cwd", text(env), None), **common)
    elif kind == "http":
        if "url" not in r.data:
            r.error("url", "missing; expected the URL to call")
        body = r.get("body", text(env), None)
        hook = HttpHook(
            url=r.get("url", url(env), ""),
            method=r.get("method", lambda v: choice("GET", "POST", "PUT", "DELETE", "PATCH",
                                                    "HEAD")(str(v).upper()), "GET"),
            headers=r.get("headers", string_table(env), {}),
            body=body.encode() if body is not None else None,  # expand_env checked UTF-8
            expect_status=r.get("expect_status", _statuses, frozenset()),
            retries=r.get("retries", whole(0, 10), 0),
            backoff=r.get("backoff", values.duration, 0.2),
            **common,
        )
    elif kind == "sleep":
        if "duration" not in r.data:
            r.error("duration", 'missing; expected a duration like "2s"')
        duration = r.get("duration", values.duration, 0.0)
        if "timeout" not in r.data:
            common["timeout"] = max(duration, 0.001)
        hook = SleepHook(duration=duration, **common)
    elif kind == "haproxy":
        hook = HaproxyHook(**_haproxy_server(r, env),
                           state=r.get("state", choice("drain", "maint"), "drain"), **common)
    else:
        if "timeout" not in r.data:
            common["timeout"] = 1.0  # sending a signal is instant; don't book 5s for it
        if "signal" not in r.data:
            r.error("signal", 'missing; expected a signal name like "SIGUSR1"')
        hook = SignalHook(signal=r.get("signal", values.signal_number, 0),
                          group=r.get("group", boolean, False), **common)
    r.finish()
    return hook


def _read_hook_phase(r: Reader, env: Mapping[str, str] | None) -> HookPhase:
    raw_hooks = r.data.get("hooks", [])
    r.seen.add("hooks")
    hooks: list[Hook] = []
    if not isinstance(raw_hooks, list):
        r.error("hooks", f"expected an array of tables ([[...hooks]]), got {describe(raw_hooks)}")
        raw_hooks = []
    names: set[str] = set()
    for i, raw in enumerate(raw_hooks[:100]):
        hr = Reader(raw, f"{r.path}.hooks[{i}]", r.problems, r.labels)
        hook = _read_hook(hr, i, env)
        if hook is None:
            continue
        if hook.name in names:
            hr.error("name", f"duplicate hook name {hook.name!r} in this phase")
        names.add(hook.name)
        hooks.append(hook)
    if len(raw_hooks) > 100:
        r.error("hooks", f"expected at most 100 hooks, got {len(raw_hooks)}")
    phase = HookPhase(hooks=tuple(hooks), parallel=r.get("parallel", boolean, False),
                      timeout=r.get("timeout", positive_duration, None))
    r.finish()
    return phase


def _read_propagate(r: Reader, env: Mapping[str, str] | None) -> PropagateConfig:
    sleep = r.get("sleep", values.duration, None)
    adaptive = {k for k in ("quiet", "min", "max", "probe", "interval") if k in r.data}
    if sleep is not None and adaptive:
        r.error("sleep", f"expected either a fixed sleep or an adaptive wait "
                         f"({', '.join(sorted(adaptive))}), not both")
    probe = None
    if "probe" in r.data:
        probe = read_probe(r.table("probe"), env, ("connections", "http", "haproxy"))
    cfg = PropagateConfig(
        sleep=sleep,
        quiet=r.get("quiet", positive_duration, 1.0),
        min=r.get("min", values.duration, 0.0),
        max=r.get("max", positive_duration, 30.0),
        interval=r.get("interval", positive_duration, 0.1),
        probe=probe,
    )
    if cfg.min > cfg.max:
        r.error("min", f"expected at most max ({cfg.max:g}s), got {cfg.min:g}s")
    if cfg.quiet > cfg.max:
        r.error("quiet", f"expected at most max ({cfg.max:g}s), got {cfg.quiet:g}s")
    r.finish()
    return cfg


def _read_drain(r: Reader, env: Mapping[str, str] | None) -> DrainConfig:
    probe = None
    if "probe" in r.data:
        probe = read_probe(r.table("probe"), env, ("connections", "http", "exec", "haproxy"))
    else:
        r.error("probe", 'missing; expected e.g. probe = { type = "connections", port = 8080 }')
    cfg = DrainConfig(probe=probe, interval=r.get("interval", positive_duration, 0.2),
                      timeout=r.get("timeout", positive_duration, 30.0))
    r.finish()
    return cfg


def read_plan(sd: Reader, env: Mapping[str, str] | None = None) -> Plan:
    """Read the phase tables of [shutdown] (the caller reads its scalar keys)."""
    phases: dict[str, Any] = {}
    for name in HOOK_PHASES:
        phases[name] = _read_hook_phase(sd.table(name), env) if name in sd.data \
            else HookPhase()
    if "propagate" in sd.data:
        phases["propagate"] = _read_propagate(sd.table("propagate"), env)
    if "drain" in sd.data:
        phases["drain"] = _read_drain(sd.table("drain"), env)
    return Plan(**phases)
