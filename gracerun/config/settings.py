"""Every scalar option, declared once: TOML key, flags, default, documentation.

cli.py builds the argument parser from SETTINGS and `gracerun help-config`
prints the reference from it, so the flags, the config keys and the docs
cannot drift apart.  Imported only when there are flags to parse (start-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    """One scalar option: TOML key, flags, default and documentation."""

    key: str  # dotted path in gracerun.toml
    flags: tuple[str, ...]
    help: str
    default: str
    metavar: str | None = None
    action: str = "store"  # argparse action: store, store_true, count, append
    choices: tuple[str, ...] | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("shutdown.budget", ("-t", "--budget"), default="30s", metavar="DURATION",
            help="time from the stop trigger to SIGKILL of the whole tree; keep it under "
                 "Kubernetes' terminationGracePeriodSeconds"),
    Setting("shutdown.stop_signal", ("--stop-signal",), default="the trigger, rewritten",
            metavar="SIGNAL", help="signal the service receives in the stop phase"),
    Setting("shutdown.stop_grace", ("--stop-grace",), default="5s (a quarter of a budget "
            "under 20s)", metavar="DURATION",
            help="time reserved for the stop phase: pre-stop phases are cut short so that "
                 "the service always gets this long between its stop signal and SIGKILL"),
    Setting("shutdown.triggers", ("--trigger",), default='["SIGTERM"]', metavar="SIGNAL",
            action="append",
            help="signal that starts the shutdown sequence (repeatable; SIGINT is "
                 "forwarded as-is unless listed)"),
    Setting("signals.group", ("-g", "--group"), default="false", action="store_true",
            help="forward signals to the service's whole process group, not just the child "
                 "(tini -g; dumb-init's default)"),
    Setting("signals.rewrite", ("-r", "--rewrite"), default="{}", metavar="FROM:TO",
            action="append",
            help="rewrite a received signal before forwarding, e.g. TERM:QUIT or 15:3; "
                 "FROM:0 drops it (repeatable)"),
    Setting("process.success_codes", ("-e", "--remap-exit",), default="[]", metavar="CODE",
            action="append", help="report this exit code of the service as 0, e.g. 143 "
                                  "(repeatable, as tini -e)"),
    Setting("process.subreaper", ("-s", "--subreaper"), default="automatic when not PID 1",
            action="store_true", help="register as a child subreaper (PR_SET_CHILD_SUBREAPER)"),
    Setting("process.pdeathsig", ("-p", "--pdeathsig"), default="none", metavar="SIGNAL",
            help="signal gracerun receives when its parent dies, e.g. SIGKILL (as tini -p)"),
    Setting("log.verbosity", ("-v", "--verbose"), default="0", action="count",
            help="more detail: each forwarded signal, reap and escalation (repeatable)"),
    Setting("log.format", ("--log-format",), default="text", choices=("text", "json"),
            help="log line format on stderr"),
    Setting("server.listen", ("--listen",), default="off", metavar="ADDR:PORT",
            help="serve /metrics, /ready and /live here, e.g. 127.0.0.1:9102 (never face "
                 "the internet with it)"),
    Setting("control.socket", ("--control-socket",),
            default="/run/gracerun/control.sock when PID 1 (docs/security.md), else off",
            metavar="PATH",
            help="unix socket for 'gracerun prestop' (Kubernetes preStop hook)"),
    Setting("log.warn_orphans", ("-w", "--warn-orphans"), default="false",
            action="store_true", help="warn when an orphaned process is reaped (tini -w)"),
)


def cli_overrides(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Turn argparse results (dest = key with dots as '__') into TOML-shaped data."""
    data: dict[str, Any] = {}
    for setting in SETTINGS:
        value = parsed.get(setting.key.replace(".", "__"))
        if value in (None, False, [], 0) and setting.action != "store":
            continue
        if value is None:
            continue
        table, _, key = setting.key.rpartition(".")
        section = data.setdefault(table, {})
        if setting.key == "signals.rewrite":
            rules: dict[str, Any] = {}
            for rule in value:
                src, _, dst = str(rule).partition(":")
                rules[src] = dst if _ else None
            section[key] = rules
        else:
            section[key] = value
    return data


def flag_for(key: str) -> str | None:
    for setting in SETTINGS:
        if setting.key == key:
            return setting.flags[-1]
    return None


# ---------------------------------------------------------------- validation
