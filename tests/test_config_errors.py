"""Bad configurations: every problem is reported with its key path and what was expected.

Each case is checked twice: through `config.load()` (ConfigError.problems) and
through the command line, where it must exit 2 with one `gracerun: error:`
line per problem on stderr and never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gracerun.config import load as config
from gracerun.errors import ConfigError

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
UNSET = "GRACERUN_TEST_UNSET_REGISTRY"  # never set: the missing-variable case names it
# Python's own wording must never reach the user as a configuration message.
LEAKS = ("Traceback", "invalid literal for int()", "set_int_max_str_digits", "Errno")

HTTP_HOOK = """
[[shutdown.deregister.hooks]]
type = "http"
"""

# (id, gracerun.toml text, fragments each expected in one problem line)
CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("negative budget", "[shutdown]\nbudget = -3\n",
     ('shutdown.budget: expected a duration like "20s", got -3',)),
    ("budget not a duration", '[shutdown]\nbudget = "20 sec"\n',
     ("shutdown.budget: expected a duration like \"250ms\", \"20s\" or \"1m30s\", "
      "got '20 sec'",)),
    ("zero budget", "[shutdown]\nbudget = 0\n",
     ("shutdown.budget: expected a duration greater than zero",)),
    ("budget over a week", '[shutdown]\nbudget = "200h"\n',
     ("shutdown.budget: expected a duration of at most 7 days",)),
    ("unknown key", '[shutdown]\nbudgte = "20s"\n',
     ('shutdown.budgte: unknown key (did you mean "budget"?)',)),
    ("unknown top-level table", "[singals]\ngroup = true\n",
     ('singals: unknown key (did you mean "signals"?)',)),
    ("table expected", "shutdown = 5\n",
     ("shutdown: expected a table, got an integer 5",)),
    ("unknown hook type", '[[shutdown.notify.hooks]]\ntype = "smoke"\n',
     ("shutdown.notify.hooks[0].type: expected one of exec, http, sleep, signal, haproxy, "
      "got 'smoke'",)),
    ("hook without type", '[[shutdown.notify.hooks]]\nsignal = "SIGUSR1"\n',
     ("shutdown.notify.hooks[0].type: missing; expected one of exec, http, sleep, signal",)),
    ("unknown hook key", '[[shutdown.notify.hooks]]\ntype = "signal"\nsignal = "USR1"\n'
     'grup = true\n',
     ('shutdown.notify.hooks[0].grup: unknown key (did you mean "group"?)',)),
    ("http hook without url", HTTP_HOOK,
     ("shutdown.deregister.hooks[0].url: missing; expected the URL to call",)),
    ("http hook url not http", HTTP_HOOK + 'url = "ftp://registry/x"\n',
     ("shutdown.deregister.hooks[0].url: expected an http:// or https:// URL, "
      "got 'ftp://registry/x'",)),
    ("http hook bad method", HTTP_HOOK + 'url = "http://r/x"\nmethod = "FETCH"\n',
     ("shutdown.deregister.hooks[0].method: expected one of GET, POST, PUT, DELETE, PATCH, "
      "HEAD, got 'FETCH'",)),
    ("http hook retries", HTTP_HOOK + 'url = "http://r/x"\nretries = 11\n',
     ("shutdown.deregister.hooks[0].retries: expected a whole number from 0 to 10, "
      "got an integer 11",)),
    ("http hook on_failure", HTTP_HOOK + 'url = "http://r/x"\non_failure = "abort"\n',
     ("shutdown.deregister.hooks[0].on_failure: expected one of continue, stop, got 'abort'",)),
    ("exec command as a string", '[[shutdown.notify.hooks]]\ntype = "exec"\n'
     'command = "curl -sf http://x"\n',
     ("shutdown.notify.hooks[0].command: expected an array of strings like "
      '["curl", "-sf", URL], got a string \'curl -sf http://x\'',)),
    ("exec without command", '[[shutdown.notify.hooks]]\ntype = "exec"\n',
     ("shutdown.notify.hooks[0].command: missing; expected an array",)),
    ("exec empty command", '[[shutdown.notify.hooks]]\ntype = "exec"\ncommand = []\n',
     ("shutdown.notify.hooks[0].command: expected a non-empty array of strings",)),
    ("bad signal name", '[[shutdown.notify.hooks]]\ntype = "signal"\nsignal = "SIGFOO"\n',
     ("shutdown.notify.hooks[0].signal: unknown signal 'SIGFOO': expected a name such as "
      "TERM or SIGTERM, or a number",)),
    ("signal number out of range", '[shutdown]\nstop_signal = 99\n',
     ("shutdown.stop_signal: invalid signal number '99'",)),
    ("sleep without duration", '[[shutdown.notify.hooks]]\ntype = "sleep"\n',
     ('shutdown.notify.hooks[0].duration: missing; expected a duration like "2s"',)),
    ("duplicate hook names", HTTP_HOOK + 'name = "consul"\nurl = "http://a/x"\n'
     + HTTP_HOOK + 'name = "consul"\nurl = "http://b/x"\n',
     ("shutdown.deregister.hooks[1].name: duplicate hook name 'consul' in this phase",)),
    ("bad hook name", '[[shutdown.notify.hooks]]\ntype = "sleep"\nduration = 1\n'
     'name = "two words"\n',
     ("shutdown.notify.hooks[0].name: expected a name of 1-64 letters",)),
    ("hooks not an array", '[shutdown.notify]\nhooks = "x"\n',
     ("shutdown.notify.hooks: expected an array of tables",)),
    ("parallel not a boolean", '[shutdown.notify]\nparallel = "yes"\n',
     ("shutdown.notify.parallel: expected true or false, got a string 'yes'",)),
    ("propagate sleep and quiet", '[shutdown.propagate]\nsleep = "5s"\nquiet = "1s"\n',
     ("shutdown.propagate.sleep: expected either a fixed sleep or an adaptive wait (quiet), "
      "not both",)),
    ("propagate min > max", '[shutdown.propagate]\nmin = "5s"\nmax = "2s"\n'
     'probe = { type = "connections", port = 8080 }\n',
     ("shutdown.propagate.min: expected at most max (2s), got 5s",)),
    ("propagate adaptive without probe", '[shutdown.propagate]\nquiet = "1s"\n',
     ("shutdown.propagate: an adaptive wait needs a probe",)),
    ("propagate exec probe", '[shutdown.propagate]\n'
     'probe = { type = "exec", command = ["true"] }\n',
     ("shutdown.propagate.probe.type: expected one of connections, http, haproxy, "
      "got 'exec'",)),
    ("drain without probe", '[shutdown.drain]\ntimeout = "10s"\n',
     ("shutdown.drain.probe: missing; expected e.g. probe = ",)),
    ("drain probe without type", '[shutdown.drain]\nprobe = { port = 8080 }\n',
     ("shutdown.drain.probe.type: missing; expected one of connections, http, exec",)),
    ("connections probe without port", '[shutdown.drain]\nprobe = { type = "connections" }\n',
     ('shutdown.drain.probe: expected "port" or "ports"',)),
    ("port out of range", '[shutdown.drain]\nprobe = { type = "connections", port = 70000 }\n',
     ("shutdown.drain.probe.port: expected a whole number from 1 to 65535, "
      "got an integer 70000",)),
    ("port as a plain string", '[shutdown.drain]\n'
     'probe = { type = "connections", ports = ["8080"] }\n',
     ("shutdown.drain.probe.ports: expected a whole number from 1 to 65535, "
      "got a string '8080'",)),
    ("http probe without url", '[shutdown.drain]\nprobe = { type = "http" }\n',
     ("shutdown.drain.probe.url: missing; expected the URL to GET",)),
    ("tcp ready probe without port", '[server]\nready_probe = { type = "tcp" }\n',
     ("server.ready_probe.port: missing; expected the TCP port to connect to",)),
    ("bad listen", '[server]\nlisten = "localhost"\n',
     ('server.listen: expected "HOST:PORT" such as "127.0.0.1:9102", got \'localhost\'',)),
    ("listen port out of range", '[server]\nlisten = "127.0.0.1:70000"\n',
     ('server.listen: expected "HOST:PORT" such as "127.0.0.1:9102"',)),
    ("stop_grace > budget", '[shutdown]\nbudget = "10s"\nstop_grace = "20s"\n',
     ("shutdown.stop_grace: expected at most the budget (10s), got 20s",)),
    ("missing ${VAR} in a hook url", HTTP_HOOK + f'url = "${{{UNSET}}}/v1/deregister"\n',
     (f"shutdown.deregister.hooks[0].url: environment variable {UNSET} is not set "
      f"(use ${{{UNSET}:-default}})",)),
    ("missing ${VAR} in a state path", f'[state]\nfile = "${{{UNSET}}}/last.json"\n',
     (f"state.file: environment variable {UNSET} is not set",)),
    ("pushgateway without url", "[state.pushgateway]\njob = \"app\"\n",
     ("state.pushgateway.url: missing; expected the Pushgateway URL",)),
    ("rewrite of SIGKILL", '[signals.rewrite]\nKILL = "TERM"\n',
     ("signals.rewrite: SIGKILL cannot be caught, so it cannot be rewritten",)),
    ("exit code out of range", "[process]\nsuccess_codes = [143, 300]\n",
     ("process.success_codes: expected an exit code from 0 to 255, got 300",)),
    ("log format", '[log]\nformat = "xml"\n',
     ("log.format: expected one of text, json, got 'xml'",)),
    ("invalid TOML", '[shutdown]\nbudget = 20s\n',
     ("invalid TOML: ", "line 2")),
    ("several problems at once",
     '[shutdown]\nbudget = -3\nbudgte = "20s"\n[[shutdown.notify.hooks]]\ntype = "smoke"\n'
     '[server]\nlisten = "nowhere"\n[log]\nformat = "xml"\n',
     ('shutdown.budget: expected a duration like "20s", got -3',
      'shutdown.budgte: unknown key (did you mean "budget"?)',
      "shutdown.notify.hooks[0].type: expected one of exec, http, sleep, signal",
      'server.listen: expected "HOST:PORT"',
      "log.format: expected one of text, json")),
    # ---- found by these tests: gracerun gets them wrong (see the report) ----
    ("budget integer too large for a float", f"[shutdown]\nbudget = 1{'0' * 400}\n",
     ("shutdown.budget: expected a duration of at most 7 days",)),
    ("listen port of non-ASCII digits", '[server]\nlisten = "127.0.0.1:\u00b2"\n',
     ('server.listen: expected "HOST:PORT"',)),
    ("signal number of 5000 digits", f'[shutdown]\nstop_signal = "{"9" * 5000}"\n',
     ("shutdown.stop_signal: invalid signal number",)),
    ("http hook url port out of range", HTTP_HOOK + 'url = "http://127.0.0.1:99999/x"\n',
     ("shutdown.deregister.hooks[0].url: ",)),
    ("http hook url port not a number", HTTP_HOOK + 'url = "http://consul:port/x"\n',
     ("shutdown.deregister.hooks[0].url: ",)),
    ("http hook url with credentials", HTTP_HOOK + 'url = "http://user:pw@consul/x"\n',
     ("shutdown.deregister.hooks[0].url: ",)),
    ("http probe url broken IPv6", '[shutdown.drain]\n'
     'probe = { type = "http", url = "http://[::1/inflight" }\n',
     ("shutdown.drain.probe.url: ",)),
    ("pushgateway url not a URL", '[state.pushgateway]\nurl = "pushgateway:9091"\n',
     ("state.pushgateway.url: ",)),
    ("no trigger signal at all", "[shutdown]\ntriggers = []\n",
     ("shutdown.triggers: ",)),
    ("quoted key with a newline", '[shutdown]\n"budg\\net" = 1\n',
     ('unknown key (did you mean "budget"?)',)),
    ("misspelt phase table", '[shutdown.drian]\ntimeout = "5s"\n',
     ('shutdown.drian: unknown key (did you mean "drain"?)',
      "budget, deregister, drain, notify, propagate, stop_grace")),
    ("misspelt notify table", '[shutdown.notfy]\nparallel = true\n',
     ('shutdown.notfy: unknown key (did you mean "notify"?)',)),
    ("misspelt ready_probe", '[server]\nready_prob = { type = "tcp", port = 8080 }\n',
     ('server.ready_prob: unknown key (did you mean "ready_probe"?)',)),
    ("misspelt pushgateway", '[state.pushgatway]\nurl = "http://pg:9091"\n',
     ('state.pushgatway: unknown key (did you mean "pushgateway"?)',)),
    # ---- issue 11: tracebacks where a message belongs ----
    ("a scalar where the propagate table belongs", "[shutdown]\npropagate = 5\n",
     ("shutdown.propagate: expected a table, got an integer 5",)),
    ("a scalar where the drain table belongs", "[shutdown]\ndrain = 5\n",
     ("shutdown.drain: expected a table, got an integer 5",)),
    ("a scalar where a probe table belongs", "[shutdown.drain]\nprobe = 5\n",
     ("shutdown.drain.probe: expected a table, got an integer 5",)),
    ("a scalar where a hook table belongs", "[shutdown.notify]\nhooks = [5]\n",
     ("shutdown.notify.hooks[0]: expected a table, got an integer 5",)),
    ("a scalar where the pushgateway table belongs", "[state]\npushgateway = 5\n",
     ("state.pushgateway: expected a table, got an integer 5",)),
    ("an integer of 5000 digits", f"[shutdown]\nbudget = {'9' * 5000}\n",
     ("invalid TOML: a number too long to read",)),
    ("listen host with a label over 63 characters",
     f'[server]\nlisten = "{"a" * 64}.example:9102"\n',
     ('server.listen: expected "HOST:PORT"', "labels of 1-63 characters")),
    ("listen host of empty labels", '[server]\nlisten = "..:80"\n',
     ('server.listen: expected "HOST:PORT"',)),
    ("tcp probe host of empty labels", '[server]\nready_probe = { type = "tcp", '
     'host = "a..b", port = 8080 }\n',
     ("server.ready_probe.host: expected a host name or IP address",)),
    # ---- issue 11: hook values that used to fail mid-shutdown ----
    ("NUL in an exec command", '[[shutdown.notify.hooks]]\ntype = "exec"\n'
     'command = ["/bin/echo", "a\\u0000b"]\n',
     ("shutdown.notify.hooks[0].command: expected command arguments without NUL",)),
    ("NUL in an exec env value", '[[shutdown.notify.hooks]]\ntype = "exec"\n'
     'command = ["true"]\nenv = { A = "x\\u0000" }\n',
     ("shutdown.notify.hooks[0].env: expected a value for 'A' without NUL",)),
    ("'=' in an exec env name", '[[shutdown.notify.hooks]]\ntype = "exec"\n'
     'command = ["true"]\nenv = { "A=B" = "x" }\n',
     ("shutdown.notify.hooks[0].env: expected environment variable names without '='",)),
    ("NUL in an exec cwd", '[[shutdown.notify.hooks]]\ntype = "exec"\n'
     'command = ["true"]\ncwd = "/tmp\\u0000"\n',
     ("shutdown.notify.hooks[0].cwd: expected a file path without NUL",)),
    ("NUL in an exec probe command", '[shutdown.drain]\n'
     'probe = { type = "exec", command = ["test", "\\u0000"] }\n',
     ("shutdown.drain.probe.command: expected command arguments without NUL",)),
    ("header name with a space", HTTP_HOOK + 'url = "http://r/x"\nheaders = { "X Token" = "a" }\n',
     ("shutdown.deregister.hooks[0].headers: expected header names of letters",)),
    ("header value with CR LF", HTTP_HOOK + 'url = "http://r/x"\n'
     'headers = { X-A = "a\\r\\nInjected: 1" }\n',
     ("shutdown.deregister.hooks[0].headers: expected a one-line value for header 'X-A'",)),
    ("header value not latin-1", HTTP_HOOK + 'url = "http://r/x"\n'
     'headers = { X-A = "\\u20ac" }\n',
     ("shutdown.deregister.hooks[0].headers: expected a latin-1 value for header 'X-A'",)),
    ("no ports at all", '[shutdown.drain]\nprobe = { type = "connections", ports = [] }\n',
     ("shutdown.drain.probe.ports: expected at least one port",)),
    ("no ok_status at all", '[shutdown.drain]\nprobe = { type = "http", '
     'url = "http://127.0.0.1:1/x", ok_status = [] }\n',
     ("shutdown.drain.probe.ok_status: expected at least one status code",)),
    ("no expect_status at all", HTTP_HOOK + 'url = "http://r/x"\nexpect_status = []\n',
     ("shutdown.deregister.hooks[0].expect_status: expected at least one status code",)),
    # ---- issue 10: a trigger rewritten to 0 would leave the stop phase no signal ----
    ("trigger rewritten to 0", '[signals.rewrite]\nTERM = "0"\n',
     ("signals.rewrite: SIGTERM starts the shutdown and is rewritten to 0",
      "set shutdown.stop_signal (--stop-signal)")),
    ("preStop's SIGTERM rewritten to 0", '[shutdown]\ntriggers = ["SIGINT"]\n'
     '[signals.rewrite]\nTERM = "0"\n',
     ("signals.rewrite: SIGTERM stands for a shutdown started by gracerun prestop",)),
]

# (id, makes the --config path inside a temporary directory, expected fragments)
FILE_CASES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("a directory", lambda d: d, ("expected a TOML file, got a directory",)),
    ("a missing file", lambda d: d / "nope.toml", ("config file not found",)),
    ("non-UTF-8", lambda d: _write(d / "latin1.toml", b'[log]\nformat = "t\xe9xt"\n'),
     ("not valid UTF-8",)),
    # ---- found by these tests: tracebacks instead of one line ----
    ("below a regular file", lambda d: _write(d / "f", b"") / "gracerun.toml",
     ("gracerun.toml: ",)),
    ("a name too long", lambda d: d / ("x" * 300), ("x" * 300 + ": ",)),
    ("a symlink loop", lambda d: _symlink(d / "loop", d / "loop"), ("loop: ",)),
    ("nesting too deep", lambda d: _write(d / "deep.toml",
                                          b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n"),
     ("invalid TOML",)),
    # ---- issue 11: a MemoryError, a hang, 210 MB of memory ----
    ("a character device that never ends", lambda d: Path("/dev/zero"),
     ("/dev/zero: expected a TOML file, got a character device",)),
    ("a FIFO", lambda d: _fifo(d / "fifo.toml"), ("fifo.toml: expected a TOML file, got a FIFO",)),
    ("a symlink to a FIFO", lambda d: _symlink(d / "link.toml", _fifo(d / "fifo")),
     ("link.toml: expected a TOML file, got a FIFO",)),
    ("a unix socket", lambda d: _socket(d / "sock.toml"),
     ("sock.toml: expected a TOML file, got a socket",)),
    ("over 1 MiB", lambda d: _write(d / "big.toml", b"# padding\n" * 110_000),
     ("big.toml: expected a TOML file of at most 1,048,576 bytes",)),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _symlink(path: Path, target: Path) -> Path:
    path.symlink_to(target)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _socket(path: Path) -> Path:
    """A bound unix socket, closed again: the file stays, a socket inode."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GRACERUN_", "PYTEST_")) and k != "REGISTRY_URL"}
    env["PYTHONPATH"] = str(REPO)
    return env


def run_gracerun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gracerun", *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=30)


def problems_of(path: Path, overrides: dict[str, object] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.load(str(path), overrides)
    assert info.value.source == str(path)
    return info.value.problems


def assert_reported(problems: list[str], fragments: tuple[str, ...]) -> None:
    for fragment in fragments:
        assert any(fragment in p for p in problems), \
            f"no problem contains {fragment!r}; got {problems}"
    for problem in problems:
        assert not any(leak in problem for leak in LEAKS), problem
        assert "\n" not in problem, f"one problem over several lines: {problem!r}"


def assert_cli_error(proc: subprocess.CompletedProcess[str], fragments: tuple[str, ...]) -> None:
    """Exit 2; every stderr line is one `gracerun: error:` line; each fragment is there."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines, "nothing on stderr"
    assert all(line.startswith("gracerun: error: ") for line in lines), proc.stderr
    assert_reported(lines, fragments)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (UNSET, "REGISTRY_URL", config.CONFIG_ENV):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------ gracerun.toml


@pytest.mark.parametrize(("text", "fragments"), [pytest.param(t, f, id=i) for i, t, f in CASES])
def test_load_reports_the_problem(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "gracerun.toml"
    path.write_text(text)
    assert_reported(problems_of(path), fragments)


@pytest.mark.parametrize(("text", "fragments"), [pytest.param(t, f, id=i) for i, t, f in CASES])
def test_cli_reports_the_problem(tmp_path: Path, text: str, fragments: tuple[str, ...]) -> None:
    path = tmp_path / "gracerun.toml"
    path.write_text(text)
    proc = run_gracerun("--config", str(path), "--", "true", cwd=tmp_path)
    assert_cli_error(proc, fragments)
    lines = proc.stderr.splitlines()
    assert all(str(path) in line for line in lines), "each problem names the file"
    try:
        config.load(str(path))
    except ConfigError as exc:
        assert len(lines) == len(exc.problems), "one line per problem"


def test_several_problems_are_each_one_line(tmp_path: Path) -> None:
    """Every problem is reported in one run, one problem per stderr line, in file order."""
    text = next(t for i, t, _ in CASES if i == "several problems at once")
    path = tmp_path / "gracerun.toml"
    path.write_text(text)
    assert len(problems_of(path)) == 5
    proc = run_gracerun("--config", str(path), "--", "true", cwd=tmp_path)
    assert len(proc.stderr.splitlines()) == 5, proc.stderr


def test_check_exits_2_for_an_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "gracerun.toml"
    path.write_text("[shutdown]\nbudget = -3\n")
    proc = run_gracerun("check", "--config", str(path), cwd=tmp_path)
    assert_cli_error(proc, ('shutdown.budget: expected a duration like "20s", got -3',))
    assert proc.stdout == ""


def test_valid_probe_of_the_wrong_kind_gets_one_message(tmp_path: Path) -> None:
    """A propagate probe that is set but invalid is reported once, not also as "missing".

    Found by these tests: build() adds "an adaptive wait needs a probe: set
    shutdown.propagate.probe" although the file sets it.
    """
    path = tmp_path / "gracerun.toml"
    path.write_text('[shutdown.propagate]\nprobe = { type = "exec", command = ["true"] }\n')
    problems = problems_of(path)
    assert problems == ["shutdown.propagate.probe.type: expected one of connections, http, "
                        "haproxy, got 'exec'"]


def test_missing_variable_is_reported_at_load_not_at_shutdown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file loads once the variable is set (negative control for the case above)."""
    path = tmp_path / "gracerun.toml"
    path.write_text(HTTP_HOOK + f'url = "${{{UNSET}}}/v1/deregister"\n')
    assert_reported(problems_of(path), (f"environment variable {UNSET} is not set",))
    monkeypatch.setenv(UNSET, "http://consul:8500")
    cfg = config.load(str(path))
    assert cfg.plan.deregister.hooks[0].url == "http://consul:8500/v1/deregister"


def test_non_utf8_environment_value_in_a_body(tmp_path: Path) -> None:
    """An env value that is not UTF-8 (surrogate-escaped by Python) is a config error.

    Found by these tests: HttpHook.body = body.encode() raises UnicodeEncodeError
    outside the validator, so the run dies with a traceback.
    """
    path = tmp_path / "gracerun.toml"
    path.write_text(HTTP_HOOK + 'url = "http://127.0.0.1:9/x"\nbody = "${GRACERUN_TEST_BODY}"\n')
    env = _env()
    env_bytes = {os.fsencode(k): os.fsencode(v) for k, v in env.items()}
    env_bytes[b"GRACERUN_TEST_BODY"] = b"caf\xe9"
    proc = subprocess.run([sys.executable, "-m", "gracerun", "check", "--config", str(path)],
                          cwd=tmp_path, env=env_bytes, capture_output=True, text=True,
                          timeout=30)
    assert_cli_error(proc, ("shutdown.deregister.hooks[0].body: ",))


# ------------------------------------------------------------- the file itself


@pytest.mark.parametrize(("make", "fragments"),
                         [pytest.param(m, f, id=i) for i, m, f in FILE_CASES])
def test_load_reports_a_bad_file(tmp_path: Path, make: Callable[[Path], Path],
                                 fragments: tuple[str, ...]) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert_reported([str(info.value)], fragments)


@pytest.mark.parametrize(("make", "fragments"),
                         [pytest.param(m, f, id=i) for i, m, f in FILE_CASES])
def test_cli_reports_a_bad_file(tmp_path: Path, make: Callable[[Path], Path],
                                fragments: tuple[str, ...]) -> None:
    proc = run_gracerun("--config", str(make(tmp_path)), "--", "true", cwd=tmp_path)
    assert_cli_error(proc, fragments)


def test_missing_file_named_by_environment(tmp_path: Path) -> None:
    env = _env()
    env[config.CONFIG_ENV] = str(tmp_path / "from-env.toml")
    proc = subprocess.run([sys.executable, "-m", "gracerun", "--", "true"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=30)
    assert_cli_error(proc, ("from-env.toml: config file not found",))


# ------------------------------------------------------------------- flags

FLAG_CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("--budget -3", ["--budget", "-3"], ('--budget: expected a duration like "20s", got \'-3\'',)),
    ("-t 20 sec", ["-t", "20 sec"], ("--budget: expected a duration like",)),
    ("-r FOO:BAR", ["-r", "FOO:BAR"], ("--rewrite: unknown signal 'FOO'",)),
    ("-r TERM", ["-r", "TERM"], ('--rewrite: expected FROM:TO such as "TERM:QUIT"',)),
    ("-e 300", ["-e", "300"], ("--remap-exit: expected an exit code from 0 to 255, got '300'",)),
    ("--log-format xml", ["--log-format", "xml"],
     ("argument --log-format: invalid choice: 'xml'",)),
    ("--listen nowhere", ["--listen", "nowhere"], ('--listen: expected "HOST:PORT"',)),
    ("--trigger FOO", ["--trigger", "FOO"], ("--trigger: unknown signal 'FOO'",)),
    ("--stop-grace over budget", ["--budget", "10s", "--stop-grace", "20s"],
     ("--stop-grace: expected at most the budget (10s), got 20s",)),
    ("-p 0", ["-p", "0"], ("--pdeathsig: invalid signal number '0'",)),
    ("unknown flag", ["--budjet", "10s"], ("unrecognized arguments: --budjet",)),
    ("no command", [], ("no command given",)),
    # found by these tests: an empty --config is ignored and the run goes on
    ("--config ''", ["--config", ""], ("--config",)),
    # issue 10: the stop signal would be 0, and the service would meet SIGKILL instead
    ("-r TERM:0", ["-r", "TERM:0"],
     ("--rewrite: SIGTERM starts the shutdown and is rewritten to 0", "(--stop-signal)")),
    ("--trigger INT -r TERM:0", ["--trigger", "INT", "-r", "TERM:0"],
     ("--rewrite: SIGTERM stands for a shutdown started by gracerun prestop",)),
    ("--listen with a long label", ["--listen", f"{'b' * 70}:9102"],
     ('--listen: expected "HOST:PORT"',)),
]


@pytest.mark.parametrize(("args", "fragments"),
                         [pytest.param(a, f, id=i) for i, a, f in FLAG_CASES])
def test_cli_flag_errors(tmp_path: Path, args: list[str], fragments: tuple[str, ...]) -> None:
    command = [] if args == [] else ["--", "true"]
    proc = run_gracerun(*args, *command, cwd=tmp_path)
    assert_cli_error(proc, fragments)


def test_flag_problem_names_the_flag_not_the_key(tmp_path: Path) -> None:
    """A bad value from a flag is labelled with the flag; from the file, with the key."""
    path = tmp_path / "gracerun.toml"
    path.write_text("[shutdown]\nbudget = -3\n")
    flagged = problems_of(path, {"shutdown": {"budget": "-4"}})
    assert flagged == ["--budget: expected a duration like \"20s\", got '-4'"]


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGCHLD", "SIGTTOU", "SIGPIPE", "SIGSEGV"])
def test_trigger_that_can_never_arrive_is_rejected(tmp_path: Path, sig: str) -> None:
    """A trigger gracerun cannot catch, ignores or keeps for itself would leave
    no way to start the shutdown (and so no budget): rejected with its key path."""
    path = tmp_path / "gracerun.toml"
    path.write_text(f'[shutdown]\ntriggers = ["{sig}"]\n')
    assert_reported(problems_of(path), ("shutdown.triggers: ", "cannot start the shutdown"))


def test_check_reports_a_scalar_where_a_table_belongs(tmp_path: Path) -> None:
    """Found in issue 11: `gracerun check` died with a TypeError (exit 1)."""
    path = tmp_path / "gracerun.toml"
    path.write_text("[shutdown]\npropagate = 5\n")
    proc = run_gracerun("check", "--config", str(path), cwd=tmp_path)
    assert_cli_error(proc, ("shutdown.propagate: expected a table, got an integer 5",))
    assert proc.stdout == ""


def test_config_read_stops_after_the_limit(tmp_path: Path) -> None:
    """The size limit holds for files whose size fstat does not tell (/proc says 0)."""
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0 and len(status.read_bytes()) > 64
    with pytest.raises(ConfigError) as info:
        config.read_bytes(str(status), limit=64)
    assert info.value.problems == ["expected a TOML file of at most 64 bytes, got a larger one"]
    small = _write(tmp_path / "small.toml", b"[log]\n")
    assert config.read_bytes(str(small), limit=64) == b"[log]\n"  # the control


def test_rewriting_a_trigger_to_0_is_fine_with_a_stop_signal(tmp_path: Path) -> None:
    """The negative control of the issue-10 cases: with a stop signal, -r TERM:0 loads."""
    path = _write(tmp_path / "gracerun.toml", b'[shutdown]\nstop_signal = "QUIT"\n')
    cfg = config.load(str(path), {"signals": {"rewrite": {"TERM": "0"}}})
    assert cfg.signals.rewrite == {15: 0}
    assert cfg.shutdown.stop_signal_for(15, cfg.signals.rewrite) == 3
