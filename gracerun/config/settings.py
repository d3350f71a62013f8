"""Every option of gracerun.toml's own tables, declared once.

One `Setting` per key: its TOML key, its flags (if any), its parser (a function
of values.py), its real default (a value; or, where the default is a rule, the
rule, which renders itself for the docs), and its help.  From SETTINGS:

- load.py reads each table (key names, parsers, defaults) and its records take
  their default values;
- cli.py builds the run flags, and a flag's value goes through the same parser
  as the key's, so a bad flag and a bad key get the same kind of message;
- reference.py writes `gracerun help-config` and the tables of
  docs/configuration.md, which a test keeps in step with this file.

The pre-stop phases, hooks and probes are declared the same way, on the fields
of their records in plan.py.  This module is on the start-up path of every run
(load.py needs it): plain classes, no dataclasses, no argparse.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from gracerun.config import strings, values
from gracerun.config.values import Env, Parser

# ------------------------------------------------------------ rule defaults


class StopGraceRule:
    """stop_grace when it is not set: `cap`, or 1/`parts` of a budget shorter than that."""

    __slots__ = ("cap", "parts")

    def __init__(self, cap: float, parts: int) -> None:
        self.cap = cap
        self.parts = parts

    def __call__(self, budget: float) -> float:
        return min(self.cap, budget / self.parts)

    @property
    def text(self) -> str:
        share = {2: "half", 3: "a third", 4: "a quarter"}.get(self.parts, f"1/{self.parts}")
        return (f'"{values.show_duration(self.cap)}", or {share} of a budget under '
                f"{values.show_duration(self.cap * self.parts)}")


class ControlSocketRule:
    """control.socket when it is not set: $`env`, else default_path() as PID 1, else none."""

    __slots__ = ("env", "path")

    def __init__(self, env: str, path: str) -> None:
        self.env = env
        self.path = path  # root's default

    def __call__(self, configured: str | None, pid1: bool,
                 environ: Mapping[str, str] | None = None) -> str | None:
        if configured:
            return configured
        from_env = (os.environ if environ is None else environ).get(self.env)
        if from_env:
            return from_env
        return self.default_path(environ) if pid1 else None

    def default_path(self, environ: Mapping[str, str] | None = None) -> str:
        """In a directory only gracerun's user can create into (lifecycle/control.py
        makes it 0700 and checks it): `path` as root (/tmp/gracerun-0/... where there is
        no /run); another user's $XDG_RUNTIME_DIR/gracerun/..., else /tmp/gracerun-UID/...
        `gracerun prestop` in the same container (same user) computes the same path."""
        uid = os.geteuid()
        name = os.path.basename(self.path)
        if uid == 0 and os.path.isdir(os.path.dirname(os.path.dirname(self.path))):
            return self.path
        runtime = (os.environ if environ is None else environ).get("XDG_RUNTIME_DIR", "")
        if uid != 0 and os.path.isabs(runtime):
            return os.path.join(runtime, "gracerun", name)
        return f"/tmp/gracerun-{uid}/{name}"

    @property
    def text(self) -> str:
        return (f"${self.env}, else when PID 1 {self.path} as root, $XDG_RUNTIME_DIR/gracerun/ "
                f"or /tmp/gracerun-UID/ as another user (docs/security.md), else off")


class StopSignalRule:
    """stop_signal when it is not set: the trigger's signal after signals.rewrite; a
    shutdown with no signal (gracerun prestop, the service's own exit) stands for
    `stand_in`."""

    __slots__ = ("stand_in",)

    def __init__(self, stand_in: int) -> None:
        self.stand_in = stand_in

    def __call__(self, trigger: int | None, rewrite: Mapping[int, int]) -> int:
        sent = self.stand_in if trigger is None else trigger
        return rewrite.get(sent, sent)

    @property
    def text(self) -> str:
        name = signal.Signals(self.stand_in).name
        return (f"the trigger, after signals.rewrite ({name} for a shutdown started by "
                "gracerun prestop or the service's exit)")


_EMPTY: Mapping[Any, Any] = MappingProxyType({})  # an immutable {} for defaults
Rule = StopGraceRule | ControlSocketRule | StopSignalRule

STOP_GRACE = StopGraceRule(cap=5.0, parts=4)
CONTROL_SOCKET = ControlSocketRule(env="GRACERUN_CONTROL_SOCKET",
                                   path="/run/gracerun/control.sock")
STOP_SIGNAL = StopSignalRule(stand_in=signal.SIGTERM)


# ---------------------------------------------------------------- options


class Setting:
    """One option: a key of gracerun.toml and, when it has them, its flags."""

    __slots__ = ("action", "default", "expand", "expect", "flags", "from_flags", "help", "key",
                 "metavar", "more", "name", "parse", "rule", "show", "shown", "table")

    def __init__(self, key: str, *, help: str, parse: Parser | None = None,
                 expand: Callable[[Env], Parser] | None = None, default: Any = None,
                 rule: Rule | None = None, shown: str = "none", expect: str = "",
                 more: str = "", flags: tuple[str, ...] = (), metavar: str | None = None,
                 action: str = "store", from_flags: Callable[[Any], Any] | None = None,
                 show: Callable[[Any], str] = values.show) -> None:
        self.key = key  # dotted path in gracerun.toml
        self.table, _, self.name = key.rpartition(".")
        self.parse = parse  # neither parse nor expand: a table with a reader of its own
        self.expand = expand  # a parser factory: strings here expand ${VAR}
        self.default = default
        self.rule = rule  # how the default is worked out when it is None
        self.shown = shown  # the docs' words for a None default without a rule
        self.expect = expect  # required: what the "missing" message asks for
        self.help = help  # the meaning, for --help and every table
        self.more = more  # further sentences, for docs/configuration.md's tables
        self.flags = flags
        self.metavar = metavar
        self.action = action  # argparse: store, store_true, count, append
        self.from_flags = from_flags  # flag values -> the TOML value they stand for
        self.show = show  # a default value as TOML text

    def parser(self, env: Env) -> Parser | None:
        return self.expand(env) if self.expand is not None else self.parse

    def plain_help(self) -> str:
        """help without Markdown's backticks, for --help."""
        return self.help.replace("`", "")

    def default_text(self) -> str:
        """The default as the docs and --help say it."""
        if self.expect:
            return "required"
        if self.rule is not None:
            return self.rule.text
        if self.default is None:
            return self.shown
        return self.show(self.default)


SETTINGS: tuple[Setting, ...] = (
    # ---------------------------------------------------------- [shutdown]
    Setting("shutdown.budget", flags=("-t", "--budget"), metavar="DURATION",
            parse=values.positive_duration, default=30.0,
            help="time from the stop trigger to SIGKILL of the whole process tree; keep it "
                 "under Kubernetes' `terminationGracePeriodSeconds`",
            more="Everything, the pre-stop phases and the service's own shutdown, happens "
                 "inside it. Keep it at least 1 s under the pod's "
                 "`terminationGracePeriodSeconds`, or the kubelet's SIGKILL comes first. "
                 "Greater than zero."),
    Setting("shutdown.stop_grace", flags=("--stop-grace",), metavar="DURATION",
            parse=values.duration, rule=STOP_GRACE,
            help="time reserved for the stop phase: pre-stop phases are cut short so that "
                 "the service always gets this long between its stop signal and SIGKILL",
            more="At most the budget; may be 0."),
    Setting("shutdown.stop_signal", flags=("--stop-signal",), metavar="SIGNAL",
            parse=values.signal_number, rule=STOP_SIGNAL,
            help="the signal the service receives in the stop phase",
            more="Must be set when a trigger (or SIGTERM) is rewritten to 0, or the stop "
                 "phase would have no signal to send."),
    Setting("shutdown.triggers", flags=("--trigger",), metavar="SIGNAL", action="append",
            parse=values.triggers, default=frozenset({signal.SIGTERM}),
            show=values.show_signals,
            help="signal that starts the shutdown sequence instead of being forwarded "
                 "(repeatable; SIGINT is forwarded as-is unless listed)",
            more="A second trigger during the pre-stop phases skips to the stop phase."),
    # ----------------------------------------------------------- [signals]
    Setting("signals.group", flags=("-g", "--group"), action="store_true",
            parse=values.boolean, default=False,
            help="forward signals to the service's whole process group, not just the "
                 "service (tini `-g`; dumb-init's default)"),
    Setting("signals.rewrite", flags=("-r", "--rewrite"), metavar="FROM:TO", action="append",
            parse=values.rewrite_table, default=_EMPTY, from_flags=values.flag_rules,
            help="rewrite a received signal before forwarding, e.g. `TERM:QUIT` or `15:3`; "
                 "`FROM:0` drops it (repeatable)",
            more='In the file, a table `{ FROM = "TO" }` such as `{ TERM = "QUIT", 1 = "0" }`; '
                 "flags add rules to it. SIGKILL, SIGSTOP and SIGCHLD cannot be rewritten. A "
                 "rewritten trigger also becomes the stop signal unless "
                 "`shutdown.stop_signal` is set."),
    # ----------------------------------------------------------- [process]
    Setting("process.subreaper", flags=("-s", "--subreaper"), action="store_true",
            parse=values.boolean, default=False,
            help="register as a child subreaper (`PR_SET_CHILD_SUBREAPER`) even as PID 1; "
                 "it is automatic when gracerun is not PID 1"),
    Setting("process.event_loop", flags=("--event-loop",), metavar="LOOP",
            parse=values.Choice("asyncio", "uvloop"), default="asyncio",
            help="the event loop when the configuration needs asyncio (hooks, probes, the "
                 "endpoint, a Pushgateway): `asyncio` (the standard loop) or `uvloop`",
            more="uvloop must be installed (`pip install gracerun[uvloop]`); when it is not, "
                 "the standard loop runs and a warning says so. It is not faster for "
                 "gracerun's few connections and costs about 2.5 MB more memory "
                 "(docs/benchmarks.md). A run without any of those uses neither."),
    Setting("process.pdeathsig", flags=("-p", "--pdeathsig"), metavar="SIGNAL",
            parse=values.signal_number,
            help="the signal gracerun receives when its parent dies, e.g. SIGKILL (tini `-p`)"),
    Setting("process.success_codes", flags=("-e", "--remap-exit"), metavar="CODE",
            action="append", parse=values.exit_codes, default=frozenset(),
            help="report this exit code of the service as 0, e.g. 143 (repeatable, as "
                 "tini `-e`)",
            more="In the file, a number or an array; 0-255."),
    # --------------------------------------------------------------- [log]
    Setting("log.verbosity", flags=("-v", "--verbose"), action="count",
            parse=values.count, default=0,
            help="more detail: each forwarded signal, reap and escalation (`-vv` for more)",
            more="In the file, a whole number from 0."),
    Setting("log.format", flags=("--log-format",), parse=values.Choice("text", "json"),
            default="text", help="the format of log lines on stderr: `text` or `json`"),
    Setting("log.warn_orphans", flags=("-w", "--warn-orphans"), action="store_true",
            parse=values.boolean, default=False,
            help="warn when an orphaned process is reaped (tini `-w`)"),
    # ------------------------------------------------------------ [server]
    Setting("server.listen", flags=("--listen",), metavar="HOST:PORT",
            parse=strings.listen_address, shown="off",
            help="serve `/metrics`, `/ready` and `/live` here: `127.0.0.1:9102`, `[::1]:9102`, "
                 "or `:9102` for all addresses (bind it to an internal address)"),
    Setting("server.ready_probe",
            help="the older name of `startup.probe` (used when that is not set): an `http` or "
                 "`tcp` probe of the service's own readiness; `/ready` answers 503 until it "
                 "has passed and the start-up sequence is done",
            more="See [Probes](#probes) and [Start-up](#start-up). From the start of a shutdown "
                 "`/ready` answers 503 whatever the probe says, before any phase runs."),
    Setting("server.ready_interval", parse=values.positive_duration, default=1.0,
            help="how often `server.ready_probe` is tried until it passes"),
    # ------------------------------------------------------------- [state]
    Setting("state.file", expand=strings.path, shown="off",
            help="a JSON file with the timeline of the shutdown and the service's exit code",
            more="Read back at the next start (same volume) and rendered by "
                 "`gracerun report`."),
    Setting("state.textfile", expand=strings.path, shown="off",
            help="the final metrics, for node_exporter's textfile collector"),
    Setting("state.pushgateway", shown="off",
            help="a table: push the final metrics once to a Prometheus Pushgateway "
                 "(see [state.pushgateway])"),
    Setting("state.pushgateway.url", expand=strings.url,
            expect='the Pushgateway URL like "http://127.0.0.1:9091"',
            help='the Pushgateway, e.g. `"http://127.0.0.1:9091"`'),
    Setting("state.pushgateway.job", expand=strings.text, default="gracerun",
            help="the job label"),
    Setting("state.pushgateway.grouping", expand=strings.string_table, default=_EMPTY,
            help='further grouping labels, a table of strings, e.g. `{ pod = "${HOSTNAME}" }`'),
    Setting("state.pushgateway.timeout", parse=values.positive_duration, default=2.0,
            help="for the push. Greater than zero"),
    # ----------------------------------------------------------- [control]
    Setting("control.socket", flags=("--control-socket",), metavar="PATH",
            expand=strings.path, rule=CONTROL_SOCKET,
            help="the unix socket (mode 0600) behind `gracerun prestop`, the Kubernetes "
                 "preStop hook that starts the shutdown and returns once the stop phase "
                 "begins"),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
TABLES: dict[str, tuple[Setting, ...]] = {}
for _s in SETTINGS:
    TABLES[_s.table] = (*TABLES.get(_s.table, ()), _s)
del _s


def default(key: str) -> Any:
    """The declared default of `key`, for the fields of load.py's records."""
    return BY_KEY[key].default


def cli_overrides(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """argparse results (dest = key with dots as '__') as TOML-shaped data."""
    data: dict[str, Any] = {}
    for setting in SETTINGS:
        value = parsed.get(setting.key.replace(".", "__"))
        if value is None or (value in (False, [], 0) and setting.action != "store"):
            continue  # not given: the file's value (or the default) stands
        if setting.from_flags is not None:
            value = setting.from_flags(value)
        section = data
        for part in setting.table.split("."):
            section = section.setdefault(part, {})
        section[setting.name] = value
    return data


def flag_for(key: str) -> str | None:
    setting = BY_KEY.get(key)
    return setting.flags[-1] if setting is not None and setting.flags else None
