"""One run, top to bottom: tini's main() plus whatever the config asks for.

    configure the process     subreaper (when not PID 1), parent-death signal
    choose the loop           MiniLoop, or uvloop when something needs asyncio
    install the signal inbox  before the spawn, so no signal is lost
    wire the options          pipeline, metrics/endpoint/state file, control socket
    spawn the service
    run the loop              until the lifecycle reaches DONE
    exit with its code

Each optional part is imported only when configured, so a bare
`gracerun -- CMD` loads neither asyncio nor prometheus-client.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from gracerun.config.load import Config
from gracerun.core import signals
from gracerun.core.log import event
from gracerun.core.reaper import Reaper
from gracerun.core.supervisor import Supervisor, configure_process
from gracerun.errors import UsageError


def run(cfg: Config, argv: Sequence[str]) -> int:
    """Run `argv` under gracerun with `cfg` to the end; return gracerun's exit code."""
    from gracerun.core.loop import new_loop

    configure_process(cfg)
    loop = new_loop(cfg.needs_asyncio)
    if cfg.needs_asyncio:
        import asyncio

        asyncio.set_event_loop(loop)
    sup = Supervisor(loop, cfg, Reaper(warn_on_orphans=cfg.log.warn_orphans))
    signals.SignalInbox(loop, sup.on_signal).install()
    _wire(sup)
    sup.start(argv)
    loop.run_forever()
    assert sup.lifecycle.exit_code is not None
    return sup.lifecycle.exit_code


def _wire(sup: Supervisor) -> None:
    """Attach what the configuration asks for, before the service starts."""
    cfg = sup.cfg
    problem = cfg.budget_problem()
    if problem:
        event(logging.WARNING, problem)
    from gracerun import observe

    observe.setup(sup)  # metrics, endpoint, state file: imports only what is configured
    if cfg.has_pipeline:
        from gracerun.lifecycle.shutdown import Pipeline

        sup.prestop = Pipeline(sup)
    if cfg.has_startup and cfg.startup is not None:
        from gracerun.lifecycle.startup import Startup

        restore = cfg.plan.deregister.hooks if cfg.plan is not None and cfg.startup.restore \
            else ()
        sup.startup = Startup(sup, cfg.startup, restore)
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
