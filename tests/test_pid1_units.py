"""Unit tests for the pure functions of the PID-1 core: no processes, no sleeping."""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gracerun.config import values
from gracerun.core import reaper, signals
from gracerun.errors import UsageError

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("250ms", 0.25),
    ("2s", 2.0),
    ("1m30s", 90.0),
    ("1.5h", 5400.0),
    ("1h2m3s4ms", 3723.004),
    ("0", 0.0),
    ("0s", 0.0),
    ("10", 10.0),
    ("2.5", 2.5),
    (" 2S ", 2.0),
    ("168h", 7 * 24 * 3600.0),
    (3, 3.0),
    (0.5, 0.5),
])
def test_duration_accepts(text: object, seconds: float) -> None:
    assert values.duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", [
    "-3", "-1s", "", "   ", "abc", "1x", "s", "5 s", "1m-30s", "1.5.2s", "nan", "inf",
    "-inf", "1e9", "169h", 604801, -1, float("nan"), float("inf"), True, None, [1], {"s": 1},
])
def test_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        values.duration(bad)


@given(st.integers(0, 7 * 24 * 3600))
def test_duration_whole_seconds_in_every_unit(n: int) -> None:
    assert values.duration(f"{n}s") == n
    assert values.duration(str(n)) == n
    assert values.duration(f"{n * 1000}ms") == pytest.approx(n)


@given(st.integers(0, 100), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999))
def test_duration_parts_add_up(h: int, m: int, s: int, ms: int) -> None:
    assert values.duration(f"{h}h{m}m{s}s{ms}ms") == pytest.approx(
        h * 3600 + m * 60 + s + ms / 1000)


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize(("text", "num"), [
    ("TERM", signal.SIGTERM),
    ("SIGTERM", signal.SIGTERM),
    ("sigterm", signal.SIGTERM),
    ("term", signal.SIGTERM),
    (" USR1 ", signal.SIGUSR1),
    ("15", 15),
    (15, 15),
    ("1", 1),
    ("64", 64),
    ("SIGRTMIN", signal.SIGRTMIN),
])
def test_signal_parse_accepts(text: str | int, num: int) -> None:
    assert signals.parse(text) == num


@pytest.mark.parametrize("bad", ["0", "65", "99", "-1", "", "FOO", "SIGFOO", "TERM2", "1.5"])
def test_signal_parse_rejects(bad: str) -> None:
    with pytest.raises(UsageError, match="signal"):
        signals.parse(bad)


def test_signal_parse_zero_only_when_allowed() -> None:
    assert signals.parse("0", allow_zero=True) == 0
    assert signals.parse(0, allow_zero=True) == 0
    with pytest.raises(UsageError):
        signals.parse(0)


@given(st.sampled_from(list(signal.Signals)))
def test_signal_parse_round_trips_every_name(sig: signal.Signals) -> None:
    assert signals.parse(sig.name) == sig
    assert signals.parse(sig.name.lower()) == sig
    assert signals.parse(sig.name[3:]) == sig
    assert signals.parse(str(int(sig))) == sig


# ------------------------------------------------------------ rewrite rules


@pytest.mark.parametrize(("text", "rule"), [
    ("TERM:QUIT", (signal.SIGTERM, signal.SIGQUIT)),
    ("SIGUSR1:sigusr2", (signal.SIGUSR1, signal.SIGUSR2)),
    ("10:12", (10, 12)),
    ("USR1:0", (signal.SIGUSR1, 0)),
    ("15:3", (15, 3)),
    ("HUP:40", (signal.SIGHUP, 40)),
])
def test_rewrite_rule_accepts(text: str, rule: tuple[int, int]) -> None:
    assert values.rewrite_rule(text) == rule


@pytest.mark.parametrize("bad", [
    "TERM", "TERM:", ":QUIT", ":", "", "FOO:BAR", "TERM:BAR", "0:TERM", "TERM:99",
    "KILL:TERM", "STOP:TERM", "CHLD:TERM", "9:15", "TERM:QUIT:HUP",
])
def test_rewrite_rule_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        values.rewrite_rule(bad)


# --------------------------------------------------------------- exit codes
# Wait statuses built with the Linux encoding: exited -> code << 8,
# killed by N -> N (| 0x80 with a core dump).


@given(st.integers(0, 255))
def test_exit_code_of_an_exit(code: int) -> None:
    status = code << 8
    assert os.WIFEXITED(status)
    assert reaper.exit_code(status) == code


@given(st.integers(1, 64), st.booleans())
def test_exit_code_of_a_signal_is_128_plus_n(num: int, core: bool) -> None:
    status = num | (0x80 if core else 0)
    assert os.WIFSIGNALED(status)
    assert reaper.exit_code(status) == 128 + num


@given(st.one_of(st.integers(0, 255).map(lambda c: c << 8), st.integers(1, 64)))
def test_exit_code_agrees_with_the_standard_library(status: int) -> None:
    code = os.waitstatus_to_exitcode(status)
    assert reaper.exit_code(status) == (code if code >= 0 else 128 - code)
