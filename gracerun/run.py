"""Assembling one run: the core supervisor plus whatever the config asks for.

Each optional part is imported only when configured, so a bare
`gracerun -- CMD` loads none of asyncio, prometheus-client or psutil.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from gracerun import supervisor
from gracerun.config import Config
from gracerun.log import event


def _wire(sup: supervisor.Supervisor) -> None:
    cfg = sup.cfg
    problem = cfg.budget_problem()
    if problem:
        event(logging.WARNING, problem)
    if not cfg.plan.empty:
        from gracerun.shutdown import Pipeline

        sup.prestop = Pipeline(cfg)
    from gracerun import control

    path = control.default_path(cfg.control.socket, os.getpid() == 1)
    if path is not None:
        control.ControlServer(sup, path).open()


def run(cfg: Config, command: Sequence[str]) -> int:
    """Run `command` under gracerun with `cfg`; return the exit code."""
    return supervisor.run(cfg, command, setup=_wire)
