"""Reading [shutdown]'s phase tables, hooks and probes into plan.py's records.

Key names, parsers and defaults come from the records' field declarations
(`kinds.opt`): `read_record` walks a record's fields, so adding a key is adding a
field.  What is left here is what one field cannot say: which kind a `type`
names, the keys that stand in for another (`port` / `ports`), and the rules
between keys (`socket` or `address`; a fixed sleep or an adaptive wait).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from gracerun.config import values
from gracerun.config.kinds import ConnectionsProbe, Hook, Probe
from gracerun.config.plan import (
    COUNTING_PROBES,
    DRAIN,
    HOOK_PHASES,
    HOOKS,
    PROBES,
    PROPAGATE,
    READY,
    DrainConfig,
    HookPhase,
    Plan,
    PropagateConfig,
    StartupConfig,
)
from gracerun.config.reader import Reader
from gracerun.config.record import MISSING, fields
from gracerun.config.values import Env, describe

T = TypeVar("T")
MAX_HOOKS = 100


if TYPE_CHECKING:
    from gracerun.config.record import Field


def default_of(f: Field | Any) -> Any:
    """A field's declared default (a fresh one for a factory), MISSING when required
    (record.MISSING; dataclasses.MISSING for a field from dataclasses.fields())."""
    if callable(f.default_factory):
        return f.default_factory()
    return f.default


def read_record(r: Reader, cls: type[T], env: Env, given: Mapping[str, Any] | None = None,
                fallback: Mapping[str, Any] | None = None, before: int | None = None
                ) -> T | None:
    """The record `cls` from table `r`, or None when anything in it is wrong.

    Each field that declares a parser is read from the key of its name, with its
    declared default; `given` supplies the fields read otherwise, `fallback` the
    defaults worked out by a rule (a hook's name).  Problems since `before` (an
    index into r.problems; default: from now) make the result None.
    """
    before = len(r.problems) if before is None else before
    kwargs: dict[str, Any] = dict(given or {})
    for f in fields(cls):
        meta = f.metadata
        r.seen.update(meta["keys"] or (f.name,))  # known keys, for the did-you-mean
        parse = meta["expand"](env) if meta["expand"] else meta["parse"]
        if f.name in kwargs or parse is None:
            continue
        if meta["expect"]:
            r.require(f.name, meta["expect"])
        default = (fallback or {}).get(f.name, default_of(f))
        kwargs[f.name] = r.get(f.name, parse, None if default is MISSING else default)
    r.finish()
    if len(r.problems) > before:
        return None
    return cls(**kwargs)


def _kind(r: Reader, kinds: tuple[str, ...]) -> str | None:
    kind: str | None = r.get("type", values.Choice(*kinds), None)
    if kind is None and "type" not in r.data:
        r.error("type", f"missing; expected one of {', '.join(kinds)}")
    return kind


def _ports(r: Reader, env: Env) -> tuple[int, ...]:
    """`port = 8080` or `ports = [8080, 8443]` (or both): the field's parser reads one."""
    port = _PORTS.metadata["expand"](env)
    one = r.get("port", port, None)
    many = r.get("ports", values.list_of(port), None)
    if "port" not in r.data and "ports" not in r.data:
        r.error("", 'expected "port" or "ports"')
    elif many == [] and one is None:
        r.error("ports", "expected at least one port: with none, the probe would read 0 at "
                         "once and the phase end before any connection is drained")
    return tuple(many or ()) + ((one,) if one is not None else ())


_PORTS = next(f for f in fields(ConnectionsProbe) if f.name == "ports")


def _one_haproxy_target(r: Reader) -> None:
    found = [key for key in ("socket", "address") if key in r.data]
    if not found:
        r.error("", 'expected "socket" (the path of HAProxy\'s stats socket) or "address" '
                    '(its "HOST:PORT")')
    elif len(found) == 2:
        r.error("address", 'expected either "socket" or "address", not both')


def read_probe(r: Reader, env: Env, place: tuple[str, ...] = ()) -> Probe | None:
    """A probe table; `place`: what the probe must offer there (plan.DRAIN, ...).

    Only the named kind's module is imported (config validation runs before the
    service starts); every kind's, to list the alternatives, only for a wrong kind.
    """
    before = len(r.problems)
    kind = _kind(r, tuple(PROBES))
    if kind is None:
        return None
    if place and not PROBES.offers(kind, *place):
        r.error("type", f"expected one of {', '.join(PROBES.able(*place))}, got "
                        f"{values.brief(kind)}")
        r.seen.update(r.data)
        return None
    given: dict[str, Any] = {}
    if PROBES[kind] is ConnectionsProbe:
        given["ports"] = _ports(r, env)
    if kind == "haproxy":
        _one_haproxy_target(r)
    return read_record(r, PROBES[kind], env, given, before=before)


_NAME_RULE: str = next(f for f in fields(Hook) if f.name == "name").metadata["rule"]


# The kinds that do one thing in one direction; the others take an instance out and put
# it back, and belong in shutdown.deregister (the start-up puts them back).
GENERIC_HOOKS = ("exec", "http", "sleep", "signal")


def _read_hook(r: Reader, index: int, env: Env, kinds: tuple[str, ...] | None = None,
               what: str = "") -> Hook | None:
    before = len(r.problems)
    if kinds is not None and r.data.get("type") in HOOKS and r.data.get("type") not in kinds:
        r.error("type", f"{r.data['type']} takes the instance out and puts it back: declare it "
                        f"once in [[shutdown.deregister.hooks]], and the start-up puts it back; "
                        f"{what} takes one of {', '.join(kinds)}")
        r.seen.update(r.data)
        return None
    kind = _kind(r, tuple(HOOKS) if kinds is None else kinds)
    if kind is None:
        r.seen.update(r.data)  # no point reporting unknown keys of an unknown kind
        return None
    if kind == "haproxy":
        _one_haproxy_target(r)
    hook = read_record(r, HOOKS[kind], env, before=before,
                       fallback={"name": _NAME_RULE.format(type=kind, n=index + 1)})
    if hook is not None:
        # The rules between a kind's keys, from its own module (problems() or validate()).
        module = HOOKS.module(kind)
        check = getattr(module, "problems", None) or getattr(module, "validate", None)
        for line in check(hook) if check is not None else ():
            key, sep, message = line.partition(": ")
            if sep and key.replace("_", "").replace(", ", "").isalnum():
                r.error(key.split(", ")[0], message)
            else:
                r.error("", line)
        if len(r.problems) > before:
            return None
    return hook


def _read_hook_phase(r: Reader, env: Env) -> HookPhase | None:
    return read_record(r, HookPhase, env, {"hooks": _read_hooks(r, env)})


def _read_hooks(r: Reader, env: Env, kinds: tuple[str, ...] | None = None,
                what: str = "") -> tuple[Hook, ...]:
    """The `hooks` array of tables of `r` (marking the key seen)."""
    raw_hooks = r.data.get("hooks", [])
    r.seen.add("hooks")
    hooks: list[Hook] = []
    if not isinstance(raw_hooks, list):
        r.error("hooks", f"expected an array of tables ([[...hooks]]), got {describe(raw_hooks)}")
        raw_hooks = []
    if len(raw_hooks) > MAX_HOOKS:
        r.error("hooks", f"expected at most {MAX_HOOKS} hooks, got {len(raw_hooks)}")
    names: set[str] = set()
    for i, raw in enumerate(raw_hooks[:MAX_HOOKS]):
        hr = Reader(raw, f"{r.path}.hooks[{i}]", r.problems, r.labels)
        hook = _read_hook(hr, i, env, kinds, what)
        if hook is None:
            continue
        if hook.name in names:
            hr.error("name", f"duplicate hook name {hook.name!r} in this phase")
        names.add(hook.name)
        hooks.append(hook)
    return tuple(hooks)


def _read_propagate(r: Reader, env: Env) -> PropagateConfig | None:
    before = len(r.problems)
    adaptive = sorted(k for k in ("quiet", "min", "max", "probe", "interval") if k in r.data)
    if "sleep" in r.data and adaptive:
        r.error("sleep", f"expected either a fixed sleep or an adaptive wait "
                         f"({', '.join(adaptive)}), not both")
    probe = (read_probe(r.table("probe"), env, PROPAGATE) if "probe" in r.data
             else None)
    cfg = read_record(r, PropagateConfig, env, {"probe": probe}, before=before)
    if cfg is not None and cfg.min > cfg.max:
        r.error("min", f"expected at most max ({cfg.max:g}s), got {cfg.min:g}s")
    if cfg is not None and cfg.quiet > cfg.max:
        r.error("quiet", f"expected at most max ({cfg.max:g}s), got {cfg.quiet:g}s")
    return cfg


def _read_drain(r: Reader, env: Env) -> DrainConfig | None:
    before = len(r.problems)
    probe = None
    if "probe" in r.data:
        probe = read_probe(r.table("probe"), env, DRAIN)
    probes = _read_probe_list(r, "probes", env, DRAIN)
    if "probe" not in r.data and "probes" not in r.data:
        r.require("probe", _DRAIN_PROBE_EXPECT)
    elif probe is None and not probes and "probes" in r.data and not r.data["probes"]:
        r.error("probes", "expected at least one probe: with none, the phase would end at "
                          "once")
    return read_record(r, DrainConfig, env, {"probe": probe, "probes": probes}, before=before)


def _read_probe_list(r: Reader, key: str, env: Env, place: tuple[str, ...]
                     ) -> tuple[Probe, ...]:
    r.seen.add(key)
    raw = r.data.get(key, [])
    if not isinstance(raw, list):
        r.error(key, f"expected an array of probe tables, got {describe(raw)}")
        return ()
    if len(raw) > MAX_HOOKS:
        r.error(key, f"expected at most {MAX_HOOKS} probes, got {len(raw)}")
    out = []
    for i, item in enumerate(raw[:MAX_HOOKS]):
        probe = read_probe(Reader(item, f"{r.path}.{key}[{i}]", r.problems, r.labels), env,
                           place)
        if probe is not None:
            out.append(probe)
    return tuple(out)


def read_startup(r: Reader, env: Env, fallback_probe: Probe | None,
                 fallback_interval: float) -> StartupConfig | None:
    """[startup]; server.ready_probe (and its interval) stand in for startup.probe."""
    before = len(r.problems)
    probe = fallback_probe
    given: dict[str, Any] = {}
    if "probe" not in r.data and fallback_probe is not None and "interval" not in r.data:
        given["interval"] = fallback_interval
    if "probe" in r.data:
        probe = read_probe(r.table("probe"), env, READY)
    if "delay" in r.data and probe is not None:
        r.error("delay", "expected either a probe or a fixed delay, not both")
    hooks = _read_hooks(r, env, GENERIC_HOOKS, "[[startup.hooks]]")
    return read_record(r, StartupConfig, env, {**given, "probe": probe, "hooks": hooks},
                       before=before)


_DRAIN_PROBE_EXPECT: str = next(
    f for f in fields(DrainConfig) if f.name == "probe").metadata["expect"]


def read_plan(sd: Reader, env: Env = None) -> Plan:
    """Read the phase tables of [shutdown] (the caller reads its own keys).

    A phase with a problem is left out; the problem is in sd.problems, so the
    caller raises rather than run this plan.
    """
    phases: dict[str, Any] = {}
    for name in HOOK_PHASES:
        if name in sd.data:
            phases[name] = _read_hook_phase(sd.table(name), env) or HookPhase()
    propagate = sd.table("propagate") if "propagate" in sd.data else None
    if propagate is not None:
        phases["propagate"] = _read_propagate(propagate, env)
    if "drain" in sd.data:
        phases["drain"] = _read_drain(sd.table("drain"), env)
    plan = Plan(**phases)
    if propagate is not None and propagate.is_table and "sleep" not in propagate.data \
            and "probe" not in propagate.data:
        # An adaptive wait with no probe of its own watches the drain probe, when that
        # one can also count new traffic.
        drain_probes_ = plan.drain.all_probes if plan.drain is not None else ()
        if not any(isinstance(p, COUNTING_PROBES) for p in drain_probes_):
            propagate.error("", "an adaptive wait needs a probe: set shutdown.propagate.probe, "
                                "or sleep for a fixed wait, or use a connections or haproxy "
                                "probe in shutdown.drain (it is watched too)")
    return plan
