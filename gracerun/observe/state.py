"""What outlives the process: the state file, the textfile, the Pushgateway push.

A terminating pod's /metrics endpoint goes away with it, usually before
Prometheus scrapes the end of the shutdown.  So at the very end gracerun
leaves the record somewhere that survives it:

    state file   JSON: the timeline of the shutdown (timeline.to_dict()), the
                 service's exit code and a schema version.  Read back at the
                 next start (same volume) as gracerun_last_shutdown_*, and
                 rendered by `gracerun report`.
    textfile     the final metrics in node_exporter's textfile-collector format.
    Pushgateway  the final metrics, pushed once, best effort.

Each is written atomically or not at all, and a failure is one warning: the
exit code of the service matters more than the report of how it exited.

Safety (docs/security.md): files are written through files.write_atomic()
(never over a symlink, device or directory, only in directories of
gracerun's user or root); the state file is mode 0600, the textfile follows
the umask (node_exporter must read it).  Every string stored is scrubbed
(URLs redacted, control characters escaped).  Reading a state file back
trusts nothing in it: size, nesting depth, every field's type and range are
checked, and a bad file is one warning.  The Pushgateway push runs in a
thread that gracerun abandons at its deadline, so neither a resolver that
never answers nor a server that trickles its reply can hold the exit.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gracerun import __version__
from gracerun.core.log import DEBUG, WARNING, event
from gracerun.observe import files, redact

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gracerun.config.load import PushgatewayConfig
    from gracerun.core.timeline import Timeline

SCHEMA = 1
# Pushing after a SIGKILL finds the budget spent; the shutdown that ran out of
# time is the one most worth reporting, so it still gets this long: well inside
# the 1s that `gracerun check` asks terminationGracePeriodSeconds to leave
# beyond the budget, and ample for a Pushgateway that answers at all.
MIN_PUSH_SECONDS = 0.25

MAX_STATE_BYTES = 1024 * 1024  # a real record is a few kB
MAX_DEPTH = 8  # record > phases > phase > detail > value: 4
MAX_ITEMS = 1000  # phases, hooks
MAX_SECONDS = 1e7  # durations and offsets (115 days: far beyond any budget)
MAX_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z, the last second datetime shows
NAME_CHARS = 200
DETAIL_CHARS = 2000


def record(timeline: Timeline, service_exit_code: int | None) -> dict[str, Any]:
    """The state file's content for this shutdown: rounded, every string scrubbed."""
    data = {"schema": SCHEMA, "gracerun_version": __version__, **timeline.to_dict(),
            "service_exit_code": service_exit_code}
    return _safe(data)


def _safe(value: Any) -> Any:
    """Floats to the microsecond (0.002, not 0.0019999999999527063) and strings scrubbed."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, str):
        return redact.scrub(value)
    if isinstance(value, dict):
        return {redact.scrub(str(k)): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def write(path: str, data: Mapping[str, Any]) -> None:
    """Write data as JSON to path atomically, mode 0600 (files.write_atomic)."""
    files.write_atomic(path, (json.dumps(data, indent=2) + "\n").encode(), 0o600)


class StateFileError(ValueError):
    """The state file exists but is not one gracerun wrote."""


def load(path: str, *, trusted: bool = False) -> dict[str, Any]:
    """Read, check and clean a state file; raise OSError or StateFileError.

    With `trusted` (gracerun reading its own file back at start-up), the file
    must be reached through directories of gracerun's user or root, not be a
    symlink, and belong to one of them (files.read_regular).  The result holds only the fields
    gracerun uses, each of the expected type and range, strings scrubbed.
    """
    try:
        raw = files.read_regular(path, MAX_STATE_BYTES, trusted=trusted)
    except ValueError as exc:
        raise StateFileError(str(exc)) from None
    return parse(raw)


def parse(raw: bytes) -> dict[str, Any]:
    """The checked, cleaned record in `raw`; StateFileError saying what is wrong."""
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise StateFileError(f"nested {depth} levels deep, expected at most {MAX_DEPTH}")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise StateFileError(f"not valid JSON ({redact.text(exc, 200)})") from None
    return _checked(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in `raw` (strings skipped), without parsing it."""
    import re

    brackets = re.sub(rb'"(?:[^"\\]|\\.)*"', b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for b in brackets:
        depth += 1 if b in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
    return deepest


_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _checked(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StateFileError("expected a JSON object")
    schema = data.get("schema")
    if type(schema) is not int or schema != SCHEMA:
        raise StateFileError(f"expected schema {SCHEMA}, got {redact.text(repr(schema), 40)}")
    out: dict[str, Any] = {"schema": SCHEMA}
    out["gracerun_version"] = _string(data, "gracerun_version", NAME_CHARS, "")
    out["trigger"] = _string(data, "trigger", NAME_CHARS, "")
    out["started_at"] = _number(data, "started_at", 0.0, MAX_TIMESTAMP, optional=True)
    out["budget_seconds"] = _number(data, "budget_seconds", 0.0, MAX_SECONDS)
    out["duration_seconds"] = _number(data, "duration_seconds", 0.0, MAX_SECONDS)
    for key in ("exit_code", "service_exit_code"):
        value = data.get(key)
        if value is not None and (type(value) is not int or not 0 <= value <= 255):
            raise StateFileError(f"expected a whole number from 0 to 255 or null in {key!r}")
        out[key] = value
    if type(data.get("killed")) is not bool:
        raise StateFileError("expected true or false in 'killed'")
    out["killed"] = data["killed"]
    out["phases"] = [_phase(p) for p in _objects(data, "phases")]
    out["hooks"] = [_hook(h) for h in _objects(data, "hooks")]
    startup = data.get("startup")
    if startup is not None:  # the start-up's record, from gracerun versions that keep one
        if not isinstance(startup, dict):
            raise StateFileError("expected an object in 'startup'")
        out["startup"] = {
            "ready_after": _number(startup, "ready_after", 0.0, MAX_SECONDS, optional=True,
                                   where="startup"),
            "phases": [_phase(p) for p in _objects(startup, "phases", "startup.phases")],
            "hooks": [_hook(h) for h in _objects(startup, "hooks", "startup.hooks")]}
    return out


def _objects(data: Mapping[str, Any], key: str, name: str = "") -> list[Mapping[str, Any]]:
    items = data.get(key)
    name = name or key
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise StateFileError(f"expected a list of objects in {name!r}")
    if len(items) > MAX_ITEMS:
        raise StateFileError(f"expected at most {MAX_ITEMS} entries in {name!r}")
    return items


def _phase(p: Mapping[str, Any]) -> dict[str, Any]:
    detail = p.get("detail")
    return {"name": _string(p, "name", NAME_CHARS, where="phases[]"),
            "start": _number(p, "start", 0.0, MAX_SECONDS, where="phases[]"),
            "duration": _number(p, "duration", 0.0, MAX_SECONDS, optional=True,
                                where="phases[]"),
            "reason": _string(p, "reason", DETAIL_CHARS, "", where="phases[]"),
            # Scalars only: whatever else a newer gracerun may put there is not shown.
            "detail": {redact.scrub(k, NAME_CHARS): (redact.scrub(v, DETAIL_CHARS)
                                                     if isinstance(v, str) else v)
                       for k, v in (detail.items() if isinstance(detail, dict) else ())
                       if v is None or isinstance(v, str | bool)
                       or (isinstance(v, int | float) and math.isfinite(v))}}


def _hook(h: Mapping[str, Any]) -> dict[str, Any]:
    return {"phase": _string(h, "phase", NAME_CHARS, where="hooks[]"),
            "name": _string(h, "name", NAME_CHARS, where="hooks[]"),
            "kind": _string(h, "kind", NAME_CHARS, "", where="hooks[]"),
            "start": _number(h, "start", 0.0, MAX_SECONDS, where="hooks[]"),
            "duration": _number(h, "duration", 0.0, MAX_SECONDS, where="hooks[]"),
            "outcome": _string(h, "outcome", NAME_CHARS, where="hooks[]"),
            "detail": _string(h, "detail", DETAIL_CHARS, "", where="hooks[]")}


_MISSING = object()


def _string(data: Mapping[str, Any], key: str, limit: int, default: Any = _MISSING,
            where: str = "") -> str:
    value = data.get(key, _MISSING)
    name = f"{where}.{key}" if where else repr(key)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise StateFileError(f"missing {key!r} in {where or 'the record'}")
        return str(default)
    if not isinstance(value, str):
        raise StateFileError(f"expected a string in {name}")
    return redact.scrub(value, limit)


def _number(data: Mapping[str, Any], key: str, low: float, high: float, *,
            optional: bool = False, where: str = "") -> float | None:
    value = data.get(key)
    name = f"{where}.{key}" if where else repr(key)
    if value is None:
        if optional:
            return None
        raise StateFileError(f"expected a number in {name}" if key in data
                             else f"missing {key!r} in {where or 'the record'}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateFileError(f"expected a number in {name}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not low <= number <= high:  # NaN fails this too
        raise StateFileError(f"expected a number from {low:g} to {high:g} in {name}")
    return number


def read_previous(path: str) -> dict[str, Any] | None:
    """The previous run's record, or None when absent or unusable (one warning)."""
    try:
        return load(path, trusted=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # OSError, StateFileError, or a bug: never a failed start
        event(WARNING, "ignoring the previous state file", path=redact.text(path),
              error=_one_line(exc))
        return None


def save(path: str, timeline: Timeline, service_exit_code: int | None) -> None:
    """Write this shutdown's record; a failure is one warning."""
    try:
        write(path, record(timeline, service_exit_code))
    except OSError as exc:
        event(WARNING, "cannot write the state file", path=redact.text(path),
              error=_one_line(exc))


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """The final metrics for node_exporter's textfile collector; a failure is one warning.

    Mode 0666 less the umask: node_exporter usually runs as another user.
    """
    from prometheus_client import generate_latest

    umask = os.umask(0o022)
    os.umask(umask)
    try:
        files.write_atomic(path, generate_latest(registry), 0o666 & ~umask)
    except OSError as exc:
        event(WARNING, "cannot write the metrics textfile", path=redact.text(path),
              error=_one_line(exc))


def push(cfg: PushgatewayConfig, registry: CollectorRegistry, remaining: float) -> None:
    """Push the final metrics once, within push_timeout(); best effort, one warning.

    The whole push (name lookup, connect, send, the answer however slowly it
    comes) runs in a daemon thread that is abandoned at the deadline: urllib's
    timeout is per socket operation and does not cover getaddrinfo, and
    gracerun leaves with os._exit, so an abandoned thread holds nothing up.
    """
    import threading

    from prometheus_client import push_to_gateway
    from prometheus_client.exposition import default_handler

    timeout = push_timeout(cfg.timeout, remaining)
    where = redact.url(cfg.url)
    prepared: list[Any] = []

    def prepare(**request: Any) -> Any:  # URL and payload built here, on our thread
        prepared.append(request)
        return lambda: None

    failure: list[BaseException] = []

    def send() -> None:
        try:
            default_handler(**prepared[0])()
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    try:
        push_to_gateway(cfg.url, job=cfg.job, registry=registry,
                        grouping_key=dict(cfg.grouping), timeout=timeout, handler=prepare)
        worker = threading.Thread(target=send, name="pushgateway", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise TimeoutError(f"no answer within {timeout:g}s")
        if failure:
            raise failure[0]
    except Exception as exc:  # urllib raises OSError, HTTPError, ValueError, ...
        event(WARNING, "cannot push metrics to the Pushgateway", url=where,
              error=_one_line(exc))
    else:
        event(DEBUG, "pushed metrics to the Pushgateway", url=where, job=cfg.job)


def push_timeout(configured: float, remaining: float) -> float:
    """min(configured, remaining budget), but never under min(configured, MIN_PUSH_SECONDS)."""
    return max(min(configured, remaining), min(configured, MIN_PUSH_SECONDS))


def _one_line(exc: BaseException) -> str:
    text = (exc.strerror if isinstance(exc, files.UnsafePathError) else str(exc)) \
        or type(exc).__name__
    return redact.scrub(" ".join(str(text).split()), 300)
