"""Assembling one run: the core supervisor plus whatever the config asks for.

Each optional part is imported only when configured, so a bare
`gracerun -- CMD` loads none of asyncio, prometheus-client or psutil.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from gracerun.config.load import Config
from gracerun.core import supervisor
from gracerun.core.log import event
from gracerun.errors import UsageError


def _wire(sup: supervisor.Supervisor) -> None:
    cfg = sup.cfg
    problem = cfg.budget_problem()
    if problem:
        event(logging.WARNING, problem)
    from gracerun import observe
    observe.setup(sup)  # metrics, endpoint, state file: imports only what is configured
    if cfg.has_pipeline:
        from gracerun.lifecycle.shutdown import Pipeline

        sup.prestop = Pipeline(cfg)
    path = cfg.control.path(pid1=os.getpid() == 1)
    if path is None:
        return
    from gracerun.lifecycle import control
    try:
        control.ControlServer(sup, path).open()
    except UsageError as exc:
        if cfg.control.socket:  # asked for explicitly: a start-up error
            raise
        # The implicit PID-1 default must never keep the service from starting.
        event(logging.WARNING, "no control socket for 'gracerun prestop'", error=str(exc))


def run(cfg: Config, command: Sequence[str]) -> int:
    """Run `command` under gracerun with `cfg`; return the exit code."""
    return supervisor.run(cfg, command, setup=_wire)
