"""The walker over TOML data: key paths, expected types, did-you-mean.

Every problem is collected (not raised) so that one run reports them all.  The
value parsers it calls live in values.py; which keys a table has, and their
parsers and defaults, in settings.py (gracerun's own tables) and plan.py (the
phases, hooks and probes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gracerun.config.values import describe

_BARE_KEY = r"[A-Za-z0-9_-]*"


def _quote(key: str) -> str:
    """A key as TOML would write it in a dotted path: quoted when not bare."""
    if re.fullmatch(_BARE_KEY, key):  # fullmatch: "$" would let a trailing newline through
        return key
    import json  # only for a key that needs quoting: json costs ~2 ms of start-up

    return json.dumps(key, ensure_ascii=True)


class Reader:
    """Walks one TOML table, collecting problems with their key paths."""

    def __init__(self, data: Any, path: str, problems: list[str],
                 labels: Mapping[str, str]) -> None:
        self.path = path
        self.problems = problems
        self.labels = labels  # key path -> the flag it came from, for flag values
        self.seen: set[str] = set()
        self.is_table = data is None or isinstance(data, dict)
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
        """The parsed value of `key`, or `default` when it is absent or invalid."""
        self.seen.add(key)
        if key not in self.data:
            return default
        try:
            return parse(self.data[key])
        except ValueError as exc:
            self.error(key, str(exc))
            return default

    def require(self, key: str, expected: str) -> None:
        """Report `key` as missing unless it is there."""
        if key not in self.data:
            self.error(key, f"missing; expected {expected}")

    def table(self, key: str) -> Reader:
        self.seen.add(key)
        path = f"{self.path}.{_quote(key)}" if self.path else _quote(key)
        return Reader(self.data.get(key), path, self.problems, self.labels)

    def finish(self) -> None:
        """Report every key of the table that nothing read, with a did-you-mean."""
        known = sorted(self.seen)
        for key in self.data:
            if key in self.seen:
                continue
            import difflib  # only when there is a mistake to explain (start-up time)

            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f' (did you mean "{hint[0]}"?)' if hint else ""
            expected = ", ".join(known) if known else "nothing"
            self.error(key, f"unknown key{suggestion}; expected one of: {expected}")
