"""The value parsers of gracerun.toml and the command line, and how defaults are shown.

A parser takes one raw value (from TOML, or a flag's string) and returns the typed
value or raises ValueError whose message says what was expected; the caller (the
walker in reader.py) adds where: a key path or a flag.  Parsers of strings that
expand ${VAR} (paths, commands, URLs, headers, hosts) are in strings.py, on
expand_env here.  Pure functions: unit-tested without processes.

This module is on the start-up path of every run: keep its imports cheap.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping
from typing import Any

from gracerun.core import signals
from gracerun.errors import UsageError

Parser = Callable[[Any], Any]
Env = Mapping[str, str] | None

_DURATION_PART = r"(\d+(?:\.\d+)?)(ms|s|m|h)"
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MAX_DURATION = 7 * 24 * 3600.0
_ENV_REF = r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\$"
_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean",
               "list": "an array", "dict": "a table"}


# ------------------------------------------------------------ wording


def brief(value: object) -> str:
    """repr() for a one-line message: 5,000-digit integers (whose repr Python refuses)
    and long values are cut short."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return f"an integer of {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, str) and len(value) > 80:
        return repr(value[:60]) + f"... ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an integer of too many digits somewhere inside
        return f"{type(value).__name__} too large to show"
    return text if len(text) <= 200 else text[:160] + "..."


def describe(value: object) -> str:
    """'an integer 5', 'a string 'x'', 'a table': what was found, for "expected X, got Y"."""
    kind = type(value).__name__
    if kind == "dict":
        return "a table"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 100:
        return brief(value)
    return f"{_TYPE_NAMES.get(kind, kind)} {brief(value)}"


def show_duration(seconds: float) -> str:
    """30.0 -> "30s", 0.2 -> "200ms": a default as a user would write it."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def show(value: object) -> str:
    """A default value as TOML text (floats are durations: every float option is one)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f'"{show_duration(value)}"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, frozenset | tuple | list):
        return "[" + ", ".join(show(v) for v in sorted(value)) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + " }" \
            if value else "{}"
    return str(value)


def show_signals(value: frozenset[int]) -> str:
    return "[" + ", ".join(f'"{signals.name(s)}"' for s in sorted(value)) + "]"


# ---------------------------------------------------------------- scalars


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


class Choice:
    """A parser accepting one of `options`; argparse reads them for its --help."""

    __slots__ = ("options", "upper")

    def __init__(self, *options: str, upper: bool = False) -> None:
        self.options = options
        self.upper = upper  # case-insensitive: compare (and return) in upper case

    def __call__(self, value: Any) -> str:
        if self.upper and isinstance(value, str):
            value = value.upper()
        if value not in self.options:
            raise ValueError(f"expected one of {', '.join(self.options)}, got {brief(value)}")
        return str(value)


def count(value: Any) -> int:
    """A whole number of 0 or more (the -v count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number of 0 or more, got {describe(value)}")
    return value


def whole(low: int, high: int) -> Callable[[Env], Parser]:
    """An integer in [low, high]; a string is accepted after ${VAR} expansion (ports)."""

    def factory(env: Env) -> Parser:
        def parse(value: Any) -> int:
            if isinstance(value, str) and "$" in value:
                expanded = expand_env(value, env).strip()
                if expanded.isascii() and expanded.isdigit() and len(expanded) <= 6:
                    value = int(expanded)
            if isinstance(value, bool) or not isinstance(value, int) \
                    or not low <= value <= high:
                raise ValueError(f"expected a whole number from {low} to {high}, got "
                                 f"{describe(value)}")
            return value

        return parse

    return factory


def number(low: float, high: float) -> Parser:
    """A number (integer or float, not a boolean) in [low, high]."""

    def parse(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not low <= value <= high:
            raise ValueError(f"expected a number from {low:g} to {high:g}, got "
                             f"{describe(value)}")
        return float(value)

    return parse


def exit_code(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an exit code from 0 to 255, got {brief(value)}")
    if isinstance(value, str) and not (value.strip().isascii() and value.strip().isdigit()
                                       and len(value.strip()) <= 3):
        raise ValueError(f"expected an exit code from 0 to 255, got {brief(value)}")
    code = int(value)
    if not 0 <= code <= 255:
        raise ValueError(f"expected an exit code from 0 to 255, got {brief(value)}")
    return code


def list_of(parse: Parser) -> Parser:
    """An array of `parse` values; a single value stands for an array of one."""

    def parse_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            value = [value]
        return [parse(item) for item in value]

    return parse_list


def exit_codes(value: Any) -> frozenset[int]:
    return frozenset(list_of(exit_code)(value))


def statuses(value: Any) -> frozenset[int]:
    """HTTP status codes: a number or a non-empty array of them."""
    found = frozenset(list_of(whole(100, 599)(None))(value))
    if not found:
        raise ValueError("expected at least one status code such as 200: with none, "
                         "no answer could ever count")
    return found


# -------------------------------------------------------------- durations


def duration(value: object) -> float:
    """Seconds from "250ms", "2s", "1m30s", "1.5h" or a number of seconds (>= 0)."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "20s", got {brief(value)}')
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"expected a duration of at most 7 days, got {brief(value)}"
                             ) from None
    elif isinstance(value, str):
        text = value.strip().lower()
        pos, seconds = 0, 0.0
        while pos < len(text):
            m = re.compile(_DURATION_PART).match(text, pos)
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
                    f'expected a duration like "250ms", "20s" or "1m30s", got {brief(value)}'
                ) from None
    else:
        raise ValueError(f'expected a duration like "20s", got {brief(value)}')
    if seconds != seconds or seconds < 0:  # NaN or negative
        raise ValueError(f'expected a duration like "20s", got {brief(value)}')
    if seconds > _MAX_DURATION:
        raise ValueError(f"expected a duration of at most 7 days, got {brief(value)}")
    return seconds


def positive_duration(value: Any) -> float:
    seconds = duration(value)
    if seconds <= 0:
        raise ValueError(f'expected a duration greater than zero like "20s", got {brief(value)}')
    return seconds


# ---------------------------------------------------------------- signals


def signal_number(value: object, *, allow_zero: bool = False) -> int:
    """A signal number from a name ("SIGTERM", "TERM") or a number."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f'expected a signal name like "SIGTERM", got {brief(value)}')
    if isinstance(value, int) and not -10**6 < value < 10**6:
        raise ValueError(f"invalid signal number: expected 1-{signal.NSIG - 1}, "
                         f"got {brief(value)}")
    try:
        return signals.parse(value, allow_zero=allow_zero)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def trigger(value: Any) -> int:
    """A signal that can start the shutdown: one gracerun's dispatcher can receive."""
    signum = signal_number(value)
    if signum in signals.NOT_TRIGGERS:
        raise ValueError(f"{signals.name(signum)} can never reach gracerun's dispatcher (it is "
                         "uncaught, ignored or reserved), so it cannot start the shutdown; "
                         'expected a signal such as "SIGTERM", "SIGINT" or "SIGQUIT"')
    return signum


def triggers(value: Any) -> frozenset[int]:
    found = frozenset(list_of(trigger)(value))
    if not found:
        raise ValueError('expected at least one signal such as "SIGTERM": with none, '
                         "nothing would start the shutdown")
    return found


def rewrite_rule(text: str) -> tuple[int, int]:
    """'TERM:QUIT' or '15:3' -> (15, 3); 'TERM:0' drops SIGTERM (-> (15, 0))."""
    src, sep, dst = text.partition(":")
    if not sep or not src or not dst:
        raise ValueError(f'expected FROM:TO such as "TERM:QUIT" or "15:3", got {brief(text)}')
    frm = signal_number(src)
    to = signal_number(dst, allow_zero=True)
    if frm in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
        raise ValueError(f"{signals.name(frm)} cannot be caught, so it cannot be rewritten")
    return frm, to


def rewrite_table(value: Any) -> dict[int, int]:
    """{ TERM = "QUIT" } -> {15: 3}; the -r flags arrive in the same shape (flag_rules)."""
    if not isinstance(value, dict):
        raise ValueError(f'expected a table like {{ SIGTERM = "SIGQUIT" }}, got '
                         f"{describe(value)}")
    rules = {}
    for src, dst in value.items():
        if dst is None:
            raise ValueError(f'expected FROM:TO such as "TERM:QUIT", got {brief(src)}')
        frm, to = rewrite_rule(f"{src}:{dst}")
        rules[frm] = to
    return rules


def flag_rules(flags: list[str]) -> dict[str, str | None]:
    """-r TERM:QUIT -r HUP:0 -> the TOML table { TERM = "QUIT", HUP = "0" }, so that the
    flags merge into the file's table; a rule without ':' is kept for rewrite_table to
    reject."""
    rules: dict[str, str | None] = {}
    for rule in flags:
        src, sep, dst = str(rule).partition(":")
        rules[src] = dst if sep else None
    return rules


# ------------------------------------------------------------ ${VAR}


def expand_env(text: str, environ: Env = None) -> str:
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

    return re.sub(_ENV_REF, substitute, text)
