"""The configured shutdown plan: phases, hooks and probes, and their worst cases.

    [shutdown.notify]      hooks that tell the service to stop background work
    [shutdown.deregister]  hooks that take the instance out of registries / LBs
    [shutdown.propagate]   a fixed sleep, or an adaptive wait for quiet traffic
    [shutdown.drain]       a probe polled until in-flight work is zero

Each piece is a frozen record (record.py) whose fields are its TOML keys, each declared
once with `opt()` (kinds.py, beside the records of the built-in hooks and
probes).  plan_reader.py reads the tables into these records from those
declarations, reference.py documents them, and `worst_case` is the budget
arithmetic that `gracerun check` prints and start-up warns about.  The kind
registries (HOOKS, PROBES) map each `type` to its record.  Imported only for
configs with phases or probes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gracerun.config import values
from gracerun.config.kinds import (
    ConnectionsProbe,
    HaproxyProbe,
    Hook,
    Probe,
    opt,
)
from gracerun.config.record import Record


class HookPhase(Record, kw_only=False):
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


class Kinds(Mapping[str, type]):
    """kind -> record class, from a registry of kind modules (each holds RECORD).

    The registries are lifecycle/hooks/__init__.py's and lifecycle/probes/__init__.py's
    KINDS: a new kind is one new module there plus one line in KINDS.  Loaded on first
    use, so that importing this module imports no kind module.
    """

    def __init__(self, package: str) -> None:
        self.package = package
        self._registry: dict[str, str] | None = None
        self._modules: dict[str, Any] = {}

    def _names(self) -> dict[str, str]:
        if self._registry is None:
            import importlib

            self._registry = dict(importlib.import_module(self.package).KINDS)
        return self._registry

    def module(self, kind: str) -> Any:
        """The kind's module, imported on first use (only the kinds a config names are)."""
        found = self._modules.get(kind)
        if found is None:
            import importlib

            found = self._modules[kind] = importlib.import_module(
                f"{self.package}.{self._names()[kind]}")
        return found

    def __getitem__(self, kind: str) -> type:
        record: type = self.module(kind).RECORD
        return record

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def offers(self, kind: str, *capabilities: str) -> bool:
        """Does the kind's module offer any of `capabilities` (functions by name)?"""
        return any(hasattr(self.module(kind), c) for c in capabilities)

    def able(self, *capabilities: str) -> tuple[str, ...]:
        """Every kind that offers any of `capabilities` (imports every kind's module)."""
        return tuple(kind for kind in self if self.offers(kind, *capabilities))


HOOKS = Kinds("gracerun.lifecycle.hooks")
PROBES = Kinds("gracerun.lifecycle.probes")


# What a probe must offer in each place (lifecycle/probes/__init__.py).
DRAIN = ("in_flight",)
PROPAGATE = ("traffic", "propagated")
READY = ("ready",)


def drain_probes() -> tuple[str, ...]:
    """Probe kinds that can read work in flight."""
    return PROBES.able(*DRAIN)


def propagate_probes() -> tuple[str, ...]:
    """Probe kinds that can count new traffic or tell when the world has noticed."""
    return PROBES.able(*PROPAGATE)


def ready_probes() -> tuple[str, ...]:
    """Probe kinds that can gate readiness."""
    return PROBES.able(*READY)


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


class PropagateConfig(Record, kw_only=False):
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
    probe: Probe | None = opt(None, shown="the drain probe's ports",
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


class DrainConfig(Record, kw_only=False):
    probe: Probe | None = opt(None,
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


class StartupConfig(Record, kw_only=False):
    """[startup]: once the service is ready, put it (back) into rotation."""

    probe: Probe | None = opt(None,
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


class Plan(Record, kw_only=False):
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
