"""The subcommands beside running a service: check, prestop, report, help-config.

Also the argument-parser factory that cli.py uses for the run flags, so that
cli.py imports this module and never the other way round."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from gracerun.config import load as config
from gracerun.errors import GracerunError, UsageError


def make_parser(**kwargs: Any) -> argparse.ArgumentParser:
    """An argparse parser whose errors are one line and raise UsageError.

    argparse is imported here, not at the top: `gracerun -- CMD` never needs it.
    """
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            raise UsageError(f"{message} (see '{self.prog} --help')")

    return Parser(**kwargs)


def _grace_period(text: str) -> float:
    from gracerun.config import values
    try:
        return values.duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def planned_timeline(cfg: config.Config, grace_period: float | None) -> tuple[list[str], bool]:
    """The planned shutdown, worst case per phase, and whether it fits (`gracerun check`).

    Not to be confused with observe/report.py, which draws a recorded shutdown.
    """
    sd = cfg.shutdown
    grace = sd.effective_stop_grace
    from gracerun.config.plan import Plan

    rows = (cfg.plan or Plan()).worst_cases()
    lines = [f"{'phase':<12} {'worst case':>11} {'starts by':>10}  notes"]
    at = 0.0
    for phase, seconds in rows:
        note = "" if seconds else "(not configured)"
        lines.append(f"{phase:<12} {seconds:>10.3f}s {at:>9.3f}s  {note}")
        at += seconds
    lines.append(f"{'stop':<12} {grace:>10.3f}s {at:>9.3f}s  stop grace: the service's own "
                 f"shutdown after its stop signal")
    total = at + grace
    lines.append(f"{'kill':<12} {'':>11} {sd.budget:>9.3f}s  SIGKILL to the whole tree")
    lines.append("")
    fits = True
    if total <= sd.budget + 1e-9:
        lines.append(f"fits: worst case {total:.3f}s within budget {sd.budget:.3f}s "
                     f"({sd.budget - total:.3f}s spare)")
    else:
        fits = False
        lines.append(f"DOES NOT FIT: worst case {total:.3f}s exceeds budget {sd.budget:.3f}s "
                     f"by {total - sd.budget:.3f}s; pre-stop phases would be cut short so the "
                     f"service keeps its {grace:.3f}s stop grace")
    lines.extend(f"warning: {w}" for w in plan_warnings(cfg))
    if grace_period is not None:
        margin = grace_period - sd.budget
        if margin >= 1.0:
            lines.append(f"fits Kubernetes: budget {sd.budget:.3f}s within "
                         f"terminationGracePeriodSeconds {grace_period:g} ({margin:.3f}s spare "
                         f"for the final report)")
        else:
            fits = False
            lines.append(f"DOES NOT FIT Kubernetes: budget {sd.budget:.3f}s needs "
                         f"terminationGracePeriodSeconds of at least {sd.budget + 1:g} (1s "
                         f"spare); with {grace_period:g} the kubelet SIGKILLs first and the "
                         f"service may get only {max(0.0, grace_period - (total - grace)):.3f}s "
                         f"after its stop signal")
    return lines, fits


def plan_warnings(cfg: config.Config) -> list[str]:
    """What is valid but probably not what the user wants."""
    from gracerun.config.kinds import ConnectionsProbe

    out = []
    plan = cfg.plan
    if plan is not None and plan.drain is not None and not plan.deregister.hooks \
            and plan.propagate is None \
            and any(isinstance(p, ConnectionsProbe) for p in plan.drain.all_probes):
        out.append("drain relies on a connections probe with no deregister and no propagate "
                   "phase before it: traffic that never stops keeps it busy until its "
                   "timeout (take the instance out of rotation first)")
    su = cfg.startup
    if cfg.has_startup and su is not None and su.restore and su.probe is None \
            and su.delay is None and plan is not None and plan.deregister.hooks:
        out.append("the start-up puts the instance back into rotation as soon as the service "
                   "is started, before it may be able to take work: set startup.probe (or "
                   "startup.delay)")
    return out


def check(argv: list[str]) -> int:
    parser = make_parser(prog="gracerun check",
                     description="Validate a configuration and print the planned shutdown "
                                 "timeline against the budget. Exit 0 when it fits, 1 when "
                                 "not, 2 for an invalid configuration.")
    parser.add_argument("-c", "--config", metavar="FILE")
    parser.add_argument("--grace-period", type=_grace_period, metavar="SECONDS",
                        help="Kubernetes terminationGracePeriodSeconds to check against")
    ns = parser.parse_args(argv)
    path = config.find_path(ns.config)
    cfg = config.load(path)
    lines, fits = planned_timeline(cfg, ns.grace_period)
    print(f"config: {path or '(built-in defaults)'}: valid")
    for line in lines:
        print(line)
    return 0 if fits else 1


def prestop(argv: list[str]) -> int:
    from gracerun.lifecycle import control
    parser = make_parser(prog="gracerun prestop",
                     description="Kubernetes preStop hook: start the running gracerun's "
                                 "shutdown and wait until it reaches the stop phase.")
    parser.add_argument("-c", "--config", metavar="FILE")
    parser.add_argument("--socket", metavar="PATH", help="control socket (default: "
                        f"control.socket, ${config.CONTROL_SOCKET_ENV}, "
                        f"{config.default_control_socket()})")
    parser.add_argument("--timeout", type=_grace_period, default=None, metavar="DURATION",
                        help="give up after this long, more than 0 (default: the budget "
                             "+ 5s)")
    ns = parser.parse_args(argv)
    if ns.timeout is not None and ns.timeout <= 0:
        # A preStop hook that does not wait is a blind trigger: the kubelet's SIGTERM
        # would follow at once, which is what running without prestop already does.
        raise UsageError("argument --timeout: must be more than 0, got "
                         f"{ns.timeout:g} (see 'gracerun prestop --help')")
    path = ns.socket
    cfg = None
    if path is None:
        cfg = config.load(config.find_path(ns.config))
        path = cfg.control.path(pid1=True)
    assert path is not None
    timeout = ns.timeout
    if timeout is None:
        if cfg is None:
            cfg = config.load(config.find_path(ns.config))
        timeout = cfg.shutdown.budget + 5.0
    reply = control.request_prestop(path, timeout)
    if reply != "stopping":
        raise GracerunError(f"unexpected answer from gracerun at {path}: {reply!r}")
    print("gracerun: shutdown reached the stop phase", file=sys.stderr)
    return 0


def report(argv: list[str]) -> int:
    from gracerun.observe import report as report_module
    return int(report_module.main(argv))


def help_config(argv: list[str]) -> int:
    if argv:
        raise UsageError(f"help-config takes no arguments, got {argv[0]!r}")
    from gracerun.config import reference

    sys.stdout.write(reference.reference())
    return 0
