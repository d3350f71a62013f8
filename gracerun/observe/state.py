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
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gracerun import __version__
from gracerun.core.log import event

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from gracerun.config.load import PushgatewayConfig
    from gracerun.core.timeline import Timeline

SCHEMA = 1
# Pushing after a SIGKILL finds the budget spent; the shutdown that ran out of
# time is the one most worth reporting, so it still gets this long (the pod's
# terminationGracePeriodSeconds should leave that much slack past the budget).
MIN_PUSH_SECONDS = 1.0


def record(timeline: Timeline, service_exit_code: int | None) -> dict[str, Any]:
    """The state file's content for this shutdown."""
    data = {"schema": SCHEMA, "gracerun_version": __version__, **timeline.to_dict(),
            "service_exit_code": service_exit_code}
    return _rounded(data)


def _rounded(value: Any) -> Any:
    """Floats to the microsecond: 0.002, not 0.0019999999999527063, for readers of the file."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def write(path: str, data: Mapping[str, Any]) -> None:
    """Write data as JSON to path atomically (temporary file, fsync, rename)."""
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def atomic_write(path: str, content: bytes) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class StateFileError(ValueError):
    """The state file exists but is not one gracerun wrote."""


def load(path: str) -> dict[str, Any]:
    """Read and check a state file; raise OSError or StateFileError."""
    with open(path, "rb") as fh:
        raw = fh.read(16 * 1024 * 1024)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateFileError(f"not valid JSON ({exc})") from None
    problem = _check(data)
    if problem:
        raise StateFileError(problem)
    return data


def _check(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "expected a JSON object"
    if data.get("schema") != SCHEMA:
        return f"expected schema {SCHEMA}, got {data.get('schema')!r}"
    numbers = ("duration_seconds", "budget_seconds")
    for key in numbers:
        if not _is_number(data.get(key)):
            return f"expected a number in {key!r}"
    if data.get("started_at") is not None and not _is_number(data["started_at"]):
        return "expected a number or null in 'started_at'"
    for key in ("exit_code", "service_exit_code"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"expected a whole number or null in {key!r}"
    if not isinstance(data.get("killed"), bool):
        return "expected true or false in 'killed'"
    for key, fields in (("phases", ("name", "start")), ("hooks", ("name", "phase", "start",
                                                                   "duration", "outcome"))):
        items = data.get(key)
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            return f"expected a list of objects in {key!r}"
        for item in items:
            for name in fields:
                if name not in item:
                    return f"missing {name!r} in an entry of {key!r}"
            for name in ("start", "duration"):
                if item.get(name) is not None and not _is_number(item[name]):
                    return f"expected a number in {key}[].{name}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_previous(path: str) -> dict[str, Any] | None:
    """The previous run's record, or None when absent or unusable (one warning)."""
    try:
        return load(path)
    except FileNotFoundError:
        return None
    except (OSError, StateFileError) as exc:
        event(logging.WARNING, "ignoring the previous state file", path=path, error=str(exc))
        return None


def save(path: str, timeline: Timeline, service_exit_code: int | None) -> None:
    """Write this shutdown's record; a failure is one warning."""
    try:
        write(path, record(timeline, service_exit_code))
    except OSError as exc:
        event(logging.WARNING, "cannot write the state file", path=path, error=str(exc))


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """The final metrics for node_exporter's textfile collector; a failure is one warning."""
    from prometheus_client import write_to_textfile

    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_to_textfile(path, registry)  # itself a temporary file and a rename
    except OSError as exc:
        event(logging.WARNING, "cannot write the metrics textfile", path=path, error=str(exc))


def push(cfg: PushgatewayConfig, registry: CollectorRegistry, remaining: float) -> None:
    """Push the final metrics once, within min(timeout, remaining budget); best effort."""
    from prometheus_client import push_to_gateway

    timeout = push_timeout(cfg.timeout, remaining)
    try:
        push_to_gateway(cfg.url, job=cfg.job, registry=registry,
                        grouping_key=dict(cfg.grouping), timeout=timeout)
    except Exception as exc:  # urllib raises OSError, HTTPError, ValueError, ...
        event(logging.WARNING, "cannot push metrics to the Pushgateway", url=cfg.url,
              error=_one_line(exc))
    else:
        event(logging.DEBUG, "pushed metrics to the Pushgateway", url=cfg.url, job=cfg.job)


def push_timeout(configured: float, remaining: float) -> float:
    """min(configured, remaining budget), but never under min(configured, MIN_PUSH_SECONDS)."""
    return max(min(configured, remaining), min(configured, MIN_PUSH_SECONDS))


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
