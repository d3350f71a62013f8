"""The walker that validates TOML data: key paths, expected types, did-you-mean.

Every problem is collected (not raised) so that one run reports them all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from gracerun.config import values

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]*$")


def _quote(key: str) -> str:
    """A key as TOML would write it in a dotted path: quoted when not bare."""
    if _BARE_KEY.match(key):
        return key
    return json.dumps(key, ensure_ascii=True)


class Reader:
    """Walks one TOML table, collecting problems with their key paths."""

    def __init__(self, data: Any, path: str, problems: list[str],
                 labels: Mapping[str, str]) -> None:
        self.path = path
        self.problems = problems
        self.labels = labels
        self.seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.error("", f"expected a table, got {describe(data)}")
            data = {}
        self.data: dict[str, Any] = data

    def where(self, key: str) -> str:
        key = _quote(key)
        full = f"{self.path}.{key}" if self.path and key else (self.path or key)
        return self.labels.get(full, full)

    def error(self, key: str, message: str) -> None:
        self.problems.append(f"{self.where(key)}: {message}")

    def get(self, key: str, parse: Callable[[Any], Any], default: Any = None) -> Any:
        self.seen.add(key)
        if key not in self.data:
            return default
        try:
            return parse(self.data[key])
        except ValueError as exc:
            self.error(key, str(exc))
            return default

    def table(self, key: str) -> Reader:
        self.seen.add(key)
        path = f"{self.path}.{_quote(key)}" if self.path else _quote(key)
        return Reader(self.data.get(key), path, self.problems, self.labels)

    def finish(self) -> None:
        known = sorted(self.seen)
        for key in self.data:
            if key in self.seen:
                continue
            import difflib  # only when there is a mistake to explain (start-up time)

            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
            expected = ", ".join(known) if known else "nothing"
            self.error(key, f"unknown key{suggestion}; expected one of: {expected}")


def describe(value: Any) -> str:
    kind = type(value).__name__
    names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
             "list": "an array", "dict": "a table"}
    return f"{names.get(kind, kind)} {value!r}" if kind != "dict" else "a table"


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return parse


def list_of(parse: Callable[[Any], Any]) -> Callable[[Any], list[Any]]:
    def parse_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            value = [value]
        return [parse(item) for item in value]

    return parse_list


def positive_duration(value: Any) -> float:
    seconds = values.duration(value)
    if seconds <= 0:
        raise ValueError(f'expected a duration greater than zero like "20s", got {value!r}')
    return seconds
