"""gracerun's own log on stderr: prefixed text (default) or one JSON object a line.

Events carry structured fields (`extra={"fields": {...}}`); the text format
renders them as key=value after the message so they stay grep-able.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

log = logging.getLogger("gracerun")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _render(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        line = f"gracerun: {level}{record.getMessage()}"
        extra = " ".join(f"{k}={_render(v)}" for k, v in _fields(record).items())
        return f"{line} {extra}" if extra else line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": "gracerun",
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        return json.dumps(entry, default=str)


def setup(verbosity: int, fmt: str) -> None:
    """Quiet by default (info and up); -v adds signals, reaps and escalations."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)


def event(level: int, msg: str, *args: Any, **fields: Any) -> None:
    """Log msg with structured fields."""
    log.log(level, msg, *args, extra={"fields": fields})
