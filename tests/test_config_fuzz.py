"""Property tests: whatever the input, validation returns a Config or raises ConfigError.

Anything else (OverflowError, RecursionError, UnicodeEncodeError, TypeError, ...)
would reach the user as a traceback instead of a `gracerun: error:` line.  The
data includes scalars where tables belong, huge integers, control characters, and
files that are not regular files.  The @example cases are inputs these properties
found or that random data rarely reaches.
"""

from __future__ import annotations

import datetime
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gracerun.config import load as config
from gracerun.config import values
from gracerun.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TABLES = ["shutdown", "signals", "process", "log", "server", "state", "control", "notify",
          "deregister", "propagate", "drain", "probe", "ready_probe", "pushgateway", "rewrite",
          "env", "headers", "grouping"]
KEYS = ["budget", "stop_signal", "stop_grace", "triggers", "hooks", "parallel", "timeout",
        "type", "name", "on_failure", "command", "cwd", "url", "method", "body",
        "expect_status", "retries", "backoff", "duration", "signal", "group", "sleep", "quiet",
        "min", "max", "interval", "port", "ports", "idle", "value", "field", "ok_status", "host",
        "subreaper", "pdeathsig", "success_codes", "verbosity", "format", "warn_orphans",
        "listen", "ready_interval", "file", "textfile", "job", "socket", "TERM", "SIGHUP"]
HOOK_KEYS = ["name", "timeout", "on_failure", "command", "env", "cwd", "url", "method",
             "headers", "body", "expect_status", "retries", "backoff", "duration", "signal",
             "group"]
WORDS = ["exec", "http", "sleep", "signal", "connections", "tcp", "SIGTERM", "TERM", "USR1",
         "15", "0", "2s", "250ms", "1m30s", "-3", "1e400", "nan", "inf", "continue", "stop",
         "GET", "put", "text", "json", "body", "status", "127.0.0.1:9102", ":0", "[::1]:80",
         "http://127.0.0.1:8080/inflight", "https://h", "http://:99999", "ftp://x",
         "${HOME}", "${GRACERUN_FUZZ_UNSET}", "${GRACERUN_FUZZ_UNSET:-8080}", "$$", "${",
         "", " ", "\x00", "\u00b2", "a\x00b", "a\r\nX-Injected: 1", "\x1b[31m", "X Token",
         "\u20ac", "..:80", "a" * 64 + ".example:80", "[::1", "/tmp/\x00"]
NUMBERS = [0, 1, -1, 8080, 65536, 2**63, -(2**63), 0.0, -0.0, 1e308, 1e-320,
           math.inf, -math.inf, math.nan]
# Built lazily so that hypothesis's reports stay readable.
HUGE = st.sampled_from([400, -400, 5000]).map(lambda e: 10**abs(e) * (1 if e > 0 else -1))
LONG = st.just(5000).map(lambda n: "9" * n)

scalars = st.one_of(
    st.sampled_from(WORDS), st.sampled_from(NUMBERS), st.text(max_size=20), st.integers(),
    st.floats(), st.booleans(), st.dates(), st.times(), st.datetimes(), HUGE, LONG,
)
keys = st.one_of(st.sampled_from(TABLES + KEYS), st.text(max_size=10))


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=4),
                     st.dictionaries(keys, children, max_size=5))


toml_values = st.recursive(scalars, _containers, max_leaves=25)


def _table(names: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(names), keys), toml_values, max_size=6)


def _or_scalar(table: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A table, or (found in issue 11) a scalar or an array where the table belongs."""
    return st.one_of(table, scalars, st.lists(scalars, max_size=2))


HEADERS = st.dictionaries(st.sampled_from(["X-A", "X Token", "Host", "", "\u00e9"]),
                          st.sampled_from(WORDS), max_size=3)
hook = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["exec", "http", "sleep", "signal",
                                                    "haproxy", "x"])},
                          optional={**{k: toml_values for k in HOOK_KEYS},
                                    "headers": st.one_of(HEADERS, toml_values),
                                    "env": st.one_of(HEADERS, toml_values)}),
    toml_values,
)
probe = _or_scalar(
    st.fixed_dictionaries({"type": st.sampled_from(["connections", "http", "exec", "tcp",
                                                    "haproxy"])},
                          optional={k: toml_values for k in
                                    ["port", "ports", "idle", "url", "value", "field",
                                     "ok_status", "command", "host", "timeout", "socket",
                                     "address", "backend", "server"]}),
)
phase = _or_scalar(st.fixed_dictionaries({}, optional={
    "hooks": st.one_of(st.lists(hook, max_size=4), toml_values),
    "parallel": toml_values, "timeout": toml_values}))
shutdown = _or_scalar(st.fixed_dictionaries({}, optional={
    "budget": toml_values, "stop_grace": toml_values, "stop_signal": toml_values,
    "triggers": toml_values, "notify": phase, "deregister": phase,
    "propagate": _or_scalar(st.fixed_dictionaries({}, optional={
        k: (probe if k == "probe" else toml_values)
        for k in ["sleep", "quiet", "min", "max", "interval", "probe"]})),
    "drain": _or_scalar(st.fixed_dictionaries({}, optional={
        "probe": probe, "interval": toml_values, "timeout": toml_values})),
}))
shaped = st.fixed_dictionaries({}, optional={
    "shutdown": shutdown,
    "signals": _or_scalar(_table(["group", "rewrite"])),
    "process": _or_scalar(_table(["subreaper", "pdeathsig", "success_codes"])),
    "log": _or_scalar(_table(["verbosity", "format", "warn_orphans"])),
    "server": _or_scalar(st.fixed_dictionaries({}, optional={
        "listen": toml_values, "ready_probe": probe, "ready_interval": toml_values})),
    "state": _or_scalar(st.fixed_dictionaries({}, optional={
        "file": toml_values, "textfile": toml_values,
        "pushgateway": _or_scalar(_table(["url", "job", "grouping", "timeout"]))})),
    "control": _or_scalar(_table(["socket"])),
})
anything = st.dictionaries(keys, toml_values, max_size=6)


def _outcome(run: Any) -> config.Config | ConfigError:
    try:
        cfg = run()
    except ConfigError as exc:
        assert exc.problems, "a ConfigError names at least one problem"
        assert all(isinstance(p, str) and p and "\n" not in p for p in exc.problems), \
            exc.problems
        return exc
    assert isinstance(cfg, config.Config)
    return cfg


@FUZZ
@given(st.one_of(shaped, anything))
@example({"shutdown": {"budget": 10**400}})  # found: OverflowError in values.duration
@example({"shutdown": {"notify": {"hooks": [{"type": "http", "url": "http://h/",
                                             "body": "\udcff"}]}}})  # found: UnicodeEncodeError
@example({"shutdown": {"budg\net": 1}})  # found: a problem over two lines
@example({"signals": {"group": [], "\n": []}})  # found: a key path over two lines
@example({"shutdown": {"propagate": 5}})  # found (issue 11): TypeError
@example({"shutdown": {"stop_signal": 10**5000}})  # a repr() Python refuses to make
@example({"shutdown": {"propagate": {"probe": {"type": "connections", "port": 1}},
                       "drain": {"probe": {"type": "http", "url": "http://h/"}}}})
def test_build_returns_config_or_config_error(data: dict[str, Any]) -> None:
    _outcome(lambda: config.build(data))


# Pieces of gracerun.toml, valid and not, joined into files line by line.
LINES = [
    "[shutdown]", 'budget = "30s"', "budget = -3", 'stop_grace = "5s"', 'stop_signal = "QUIT"',
    "[[shutdown.notify.hooks]]", "[[shutdown.deregister.hooks]]", 'type = "signal"',
    'signal = "SIGUSR1"', 'type = "http"', 'url = "http://127.0.0.1:8500/x"', 'method = "PUT"',
    'url = "${GRACERUN_FUZZ_UNSET:-http://h}/x"', 'url = "${GRACERUN_FUZZ_UNSET}"',
    'type = "exec"', 'command = ["true"]', 'command = "true"', 'type = "sleep"',
    'duration = "2s"', "retries = 3", 'name = "a"', "[shutdown.propagate]", 'sleep = "2s"',
    'quiet = "1s"', 'max = "10s"', 'probe = { type = "connections", port = 8080 }',
    "[shutdown.drain]", 'probe = { type = "http", url = "http://127.0.0.1:8080/inflight" }',
    'timeout = "10s"', "[server]", 'listen = "127.0.0.1:9102"', "[signals]",
    'rewrite = { TERM = "QUIT" }', "[state]", 'file = "/tmp/x.json"', "[log]",
    'format = "json"', "x = 1979-05-27T07:32:00Z", "x = [1, [2, [3]]]", "x = {a = {b = {}}}",
    "budget = 1" + "0" * 400, "= 1", "[", '"', "a.b.c = 1", "[shutdown.notify]",
    "parallel = true",
    # issue 11: scalars where tables belong, huge integers, control characters
    "propagate = 5", "drain = 5", "notify = 5", "probe = 5", "hooks = [5]",
    "budget = " + "9" * 5000, 'listen = "..:80"', f'listen = "{"a" * 64}.x:80"',
    'headers = { "X A" = "b" }', 'headers = { X-A = "a\\r\\nB: c" }',
    'headers = { X-A = "\\u20ac" }', 'env = { A = "\\u0000" }', 'command = ["a\\u0000"]',
    'cwd = "\\u0000"', 'probe = { type = "connections", ports = [] }',
    'probe = { type = "http", url = "http://h/", ok_status = [] }', 'rewrite = { TERM = "0" }',
]
toml_text = st.one_of(
    st.lists(st.one_of(st.sampled_from(LINES), st.text(max_size=15)), max_size=14)
      .map("\n".join),
    st.text(),
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gracerun-fuzz-") as d:
        yield Path(d)


@FUZZ
@given(st.one_of(toml_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary()))
@example(f"[shutdown]\nbudget = 1{'0' * 400}\n".encode())  # found: OverflowError
@example(b"a = " + b"[" * 100_000 + b"]" * 100_000)  # found: RecursionError in tomllib
@example(b"[shutdown]\nbudget = \xff\n")
@example(b"[shutdown]\npropagate = 5\n")  # found (issue 11): TypeError
@example(f"x = {'9' * 5000}\n".encode())  # found (issue 11): ValueError from tomllib
def test_load_returns_config_or_config_error(scratch: Path, content: bytes) -> None:
    os.environ.pop("GRACERUN_FUZZ_UNSET", None)
    path = scratch / "gracerun.toml"
    path.write_bytes(content)
    outcome = _outcome(lambda: config.load(str(path)))
    if isinstance(outcome, ConfigError):
        assert outcome.source == str(path)


durations = st.one_of(
    st.text(),
    st.from_regex(r"\A\s*(\d{1,4}(\.\d{1,3})?(ms|s|m|h|d|S|M|H)){1,4}\s*\Z"),
    st.integers(), st.floats(), st.sampled_from(NUMBERS), HUGE, st.booleans(), st.none(),
    st.lists(st.integers(), max_size=2), st.dates(), st.timedeltas(),
)


@FUZZ
@given(durations)
@example(10**400)  # found: OverflowError instead of ValueError
@example(-(10**400))
@example("9" * 400 + "s")
@example("1e400")
@example(datetime.timedelta(seconds=1))
def test_duration_is_seconds_or_value_error(raw: object) -> None:
    try:
        seconds = values.duration(raw)
    except ValueError as exc:
        assert str(exc).startswith("expected a duration"), exc
        return
    assert isinstance(seconds, float)
    assert 0.0 <= seconds <= 7 * 24 * 3600.0


@FUZZ
@given(st.text(), st.dictionaries(st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,5}\Z"),
                                  st.text(max_size=5), max_size=4))
def test_expand_env_is_text_or_value_error(text: str, env: dict[str, str]) -> None:
    try:
        out = values.expand_env(text, env)
    except ValueError as exc:
        assert "is not set" in str(exc)
        return
    assert isinstance(out, str)
    if "$" not in text:
        assert out == text


# Files that are not regular files (issue 11: /dev/zero was a MemoryError, a FIFO hung).
def _fifo(d: Path) -> Path:
    os.mkfifo(d / "fifo")
    return d / "fifo"


def _socket(d: Path) -> Path:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(d / "sock"))
    return d / "sock"


def _link(d: Path) -> Path:
    (d / "link").symlink_to(_fifo(d))
    return d / "link"


NOT_REGULAR = {"fifo": _fifo, "socket": _socket, "link to a fifo": _link,
               "directory": lambda d: d, "/dev/zero": lambda d: Path("/dev/zero"),
               "/dev/null": lambda d: Path("/dev/null"),
               "/dev/urandom": lambda d: Path("/dev/urandom")}


@pytest.mark.parametrize("kind", NOT_REGULAR)
def test_a_file_that_is_not_regular_is_a_config_error(tmp_path: Path, kind: str) -> None:
    path = NOT_REGULAR[kind](tmp_path)
    started = time.monotonic()
    outcome = _outcome(lambda: config.load(str(path)))
    assert isinstance(outcome, ConfigError)
    assert outcome.problems[0].startswith("expected a TOML file, got "), outcome.problems
    assert time.monotonic() - started < 5, "refused at once, not after reading or waiting"
