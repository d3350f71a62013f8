"""Parsing of the value types shared by the command line and gracerun.toml.

Each parser takes raw input and returns a typed value or raises ValueError
whose message says what was expected; the caller adds where (a key path or
a flag).  Pure functions: unit-tested without processes.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping

from gracerun.core import signals
from gracerun.errors import UsageError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_DURATION = 7 * 24 * 3600.0
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$")


def duration(value: object) -> float:
    """Seconds from "250ms", "2s", "1m30s", "1.5h" or a number of seconds (>= 0)."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "20s", got {value!r}')
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"expected a duration of at most 7 days, got {value!r}") from None
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if m is None:
                break
            if len(m.group(1)) > 30:
                break  # absurdly long numbers are rejected below, not converted
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if not text or pos != len(text):
            try:
                seconds = float(text) if len(text) <= 30 else float("nan")
            except ValueError:
                raise ValueError(
                    f'expected a duration like "250ms", "20s" or "1m30s", got {value!r}'
                ) from None
    else:
        raise ValueError(f'expected a duration like "20s", got {value!r}')
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f'expected a duration like "20s", got {value!r}')
    if seconds > _MAX_DURATION:
        raise ValueError(f"expected a duration of at most 7 days, got {value!r}")
    return seconds


def signal_number(value: object, *, allow_zero: bool = False) -> int:
    """A signal number from a name ("SIGTERM", "TERM") or a number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected a signal name like "SIGTERM", got {value!r}')
    try:
        return signals.parse(value, allow_zero=allow_zero)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def rewrite_rule(text: str) -> tuple[int, int]:
    """'TERM:QUIT' or '15:3' -> (15, 3); 'TERM:0' drops SIGTERM (-> (15, 0))."""
    src, sep, dst = text.partition(":")
    if not sep or not src or not dst:
        raise ValueError(f'expected FROM:TO such as "TERM:QUIT" or "15:3", got {text!r}')
    frm = signal_number(src)
    to = signal_number(dst, allow_zero=True)
    if frm in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        raise ValueError(f"{signals.name(frm)} cannot be caught, so it cannot be rewritten")
    return frm, to


def exit_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an exit code from 0 to 255, got {value!r}")
    try:
        code = int(value)
    except ValueError:
        raise ValueError(f"expected an exit code from 0 to 255, got {value!r}") from None
    if not 0 <= code <= 255:
        raise ValueError(f"expected an exit code from 0 to 255, got {value!r}")
    return code


def expand_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ${VAR} and ${VAR:-default}; $$ is a literal $.

    A variable that is unset (and has no default) raises ValueError naming it,
    so a missing variable fails at start-up, not in the middle of a shutdown.
    """
    env = os.environ if environ is None else environ

    def substitute(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        var, default = m.group(1), m.group(2)
        if var in env and (env[var] != "" or default is None):
            value = env[var]
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # os.environ keeps undecodable bytes as surrogates
                raise ValueError(f"environment variable {var} is not valid UTF-8") from None
            return value
        if default is not None:
            return default
        raise ValueError(f"environment variable {var} is not set (use ${{{var}:-default}})")

    return _ENV_REF.sub(substitute, text)
