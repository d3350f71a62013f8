"""The PID-1 core: run the service, forward signals, reap, enforce the budget.

The whole program, as in tini's main():

    configure process (subreaper, parent-death signal)
    install signal inbox          (before spawn: no signal can be lost)
    spawn the service             (own group, clean signals, terminal foreground)
    loop until the tree is gone:
        signal  -> forward it, or start the shutdown
        SIGCHLD -> reap; the service's exit starts the shutdown too
        budget  -> SIGKILL the whole tree
    exit with the service's code (128+N for signal N, remapped by -e)

The shutdown itself: the trigger arms the budget timer (the kill phase fires
whatever phase is running), runs the configured pre-stop phases if any
(shutdown.py, on asyncio), then the stop phase here: send the stop signal and
wait until no child is left.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gracerun.config.load import Config
from gracerun.core import linux, signals, tree
from gracerun.core.log import event
from gracerun.core.reaper import Reaper
from gracerun.core.spawn import spawn
from gracerun.core.timeline import Timeline

log = logging.getLogger("gracerun")

# After the SIGKILL, wait this long for the kernel to finish the tree before
# giving up on processes stuck in uninterruptible sleep.
_KILL_SETTLE_SECONDS = 5.0


class PreStop(Protocol):
    """The pre-stop pipeline (shutdown.py); it calls sup.begin_stop() when done."""

    def start(self, sup: Supervisor, service_exited: bool) -> None: ...
    def cancel(self) -> None: ...


class Supervisor:
    def __init__(self, loop: Any, cfg: Config, reaper: Reaper) -> None:
        self.loop = loop
        self.cfg = cfg
        self.reaper = reaper
        self.timeline = Timeline(loop.time, cfg.shutdown.budget)
        self.prestop: PreStop | None = None
        self.service_pid: int | None = None
        self.service_code: int | None = None
        self.shutdown_started = False
        self.stopping = False
        self.exit_code: int | None = None
        self.stop_signal = cfg.shutdown.stop_signal or signal.SIGTERM
        self._absorb_trigger = False
        self._kill_timer: Any = None
        self._settle_timer: Any = None
        # Observers for metrics: (signal name) and (exit code).
        self.on_forward: list[Callable[[int], None]] = []
        self.on_service_exit: list[Callable[[int], None]] = []
        # Run at the very end, before exit (state file, Pushgateway): synchronous,
        # each expected to bound itself by timeline.remaining().
        self.on_finish: list[Callable[[Timeline], None]] = []
        self.timeline.listeners.append(self._log_phase)

    # ------------------------------------------------------------ start-up

    def start(self, argv: Sequence[str]) -> None:
        tty_fd = _foreground_tty()
        pid = spawn(argv, new_group=True, tty_fd=tty_fd)
        self.reaper.watch(pid, self._service_exited)
        self.service_pid = pid
        event(logging.DEBUG, "started service", pid=pid, argv=" ".join(argv))

    # ------------------------------------------------------------- signals

    def on_signal(self, signum: int) -> None:
        """Dispatch one received signal (called from the loop, not the handler)."""
        if signum == signal.SIGCHLD:
            self._reap()
            return
        if signum in self.cfg.shutdown.triggers:
            self._on_trigger(signum)
            return
        self.forward(signum)

    def _on_trigger(self, signum: int) -> None:
        if not self.shutdown_started:
            self.begin_shutdown(f"signal {signals.name(signum)}", signum)
        elif self._absorb_trigger:
            # Kubernetes sends SIGTERM after the preStop hook we are serving:
            # the same shutdown, so neither restart nor cut it, nor forward it.
            self._absorb_trigger = False
            event(logging.INFO, "absorbed stop signal after preStop",
                  signal=signals.name(signum))
        elif not self.stopping:
            event(logging.WARNING, "second stop signal: skipping to the stop phase",
                  signal=signals.name(signum))
            self.begin_stop("second signal")
        else:
            self.forward(signum)

    def forward(self, signum: int) -> None:
        """Send signum (rewritten per -r) to the service, or its group with -g."""
        target = self.cfg.signals.rewrite.get(signum, signum)
        if target == 0:
            event(logging.DEBUG, "dropped signal", signal=signals.name(signum))
            return
        self.signal_service(target)
        for observer in self.on_forward:
            observer(target)
        event(logging.DEBUG, "forwarded signal", signal=signals.name(signum),
              sent=signals.name(target), group=self.cfg.signals.group)

    def signal_service(self, signum: int) -> bool:
        """Send a signal to the running service (group in -g mode)."""
        pid = self.service_pid
        if pid is None or self.service_code is not None:
            return False
        try:
            if self.cfg.signals.group:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    # ------------------------------------------------------------ shutdown

    @property
    def _phase_level(self) -> int:
        """Shutdown narration is info with a pipeline, debug (-v) for a bare wrapper."""
        return logging.INFO if self.prestop is not None else logging.DEBUG

    def begin_shutdown(self, trigger: str, signum: int | None = None,
                       from_prestop: bool = False) -> None:
        """Start the shutdown sequence once, whatever triggered it."""
        if self.shutdown_started:
            return
        self.shutdown_started = True
        self._absorb_trigger = from_prestop
        if self.cfg.shutdown.stop_signal is None:
            # The trigger's signal, rewritten (-r TERM:QUIT for nginx); a preStop
            # or the service's own exit stands for the usual SIGTERM.
            trigger_signal = signum if signum is not None else signal.SIGTERM
            self.stop_signal = self.cfg.signals.rewrite.get(trigger_signal, trigger_signal)
        self.timeline.begin_shutdown(trigger)
        event(self._phase_level, "shutdown started", trigger=trigger,
              budget=self.cfg.shutdown.budget)
        self._kill_timer = self.loop.call_later(self.cfg.shutdown.budget, self._budget_spent)
        service_exited = self.service_code is not None
        if self.prestop is not None:
            self.prestop.start(self, service_exited)
        else:
            self.begin_stop("no pre-stop phases")

    def begin_stop(self, reason: str) -> None:
        """The stop phase: send the stop signal, wait for the tree to go."""
        if self.stopping:
            return
        self.stopping = True
        if self.prestop is not None:
            self.prestop.cancel()
        self.timeline.begin("stop").detail["after"] = reason
        if self.service_code is None:
            if self.stop_signal:
                self.signal_service(self.stop_signal)
                event(logging.DEBUG, "sent stop signal", signal=signals.name(self.stop_signal))
                # A stopped service (Ctrl-Z stops its whole group) would sit on
                # the signal until SIGKILL: continue the whole group.
                if self.service_pid is not None:
                    tree.signal_group(self.service_pid, signal.SIGCONT)
        else:
            self._stop_leftovers()
        self._check_tree_gone()

    def _log_phase(self, kind: str, record: Any) -> None:
        if kind == "phase-start":
            event(self._phase_level, "phase started", phase=record.name, at=record.start,
                  remaining=self.timeline.remaining())
        elif kind == "phase-end":
            event(self._phase_level, "phase ended", phase=record.name, duration=record.duration,
                  reason=record.reason, **{k: v for k, v in record.detail.items()
                                           if k != "last_reading"})

    def _stop_leftovers(self) -> None:
        """The service is gone but processes it left behind are not: stop them too."""
        if not self.reaper.has_children():
            return
        pids = tree.descendants()
        sig = self.stop_signal or signal.SIGTERM
        if self.service_pid is not None:
            tree.signal_group(self.service_pid, sig)
        sent = tree.send(pids, sig)
        tree.send(pids, signal.SIGCONT)
        event(self._phase_level, "stopping processes left by the service", count=sent,
              signal=signals.name(sig))

    def _budget_spent(self) -> None:
        self.timeline.begin("kill")
        self.timeline.killed = True
        if self.prestop is not None:
            self.prestop.cancel()
        killed = tree.kill_all(self.service_pid if self.service_code is None else None)
        event(logging.WARNING, "budget spent: SIGKILL sent to the whole tree",
              budget=self.cfg.shutdown.budget, processes=killed)
        self.stopping = True
        self._settle_timer = self.loop.call_later(_KILL_SETTLE_SECONDS, self._give_up)
        self._check_tree_gone()

    def _give_up(self) -> None:
        event(logging.ERROR, "processes survived SIGKILL (uninterruptible sleep?); exiting")
        if self.service_code is None:
            self.service_code = 128 + signal.SIGKILL
        self._finish()

    # ----------------------------------------------------------- reaping

    def _reap(self) -> None:
        if self.reaper.reap():
            self.loop.call_soon(self._reap)  # a huge batch: continue next turn
            return
        self._check_tree_gone()

    def _service_exited(self, pid: int, code: int) -> None:
        self.service_code = code
        event(logging.DEBUG, "service exited", pid=pid, code=code)
        for observer in self.on_service_exit:
            observer(code)
        if not self.shutdown_started:
            self.begin_shutdown(f"service exited with {code}")
        elif self.stopping and not self.timeline.killed:
            self._stop_leftovers()

    def _check_tree_gone(self) -> None:
        if self.service_code is None or not self.stopping or self.exit_code is not None:
            return
        if self.reaper.has_children():
            return
        self._finish()

    def _finish(self) -> None:
        if self.exit_code is not None:
            return
        for timer in (self._kill_timer, self._settle_timer):
            if timer is not None:
                timer.cancel()
        code = self.service_code if self.service_code is not None else 128 + signal.SIGKILL
        self.exit_code = 0 if code in self.cfg.process.success_codes else code
        self.timeline.finish(self.exit_code)
        event(self._phase_level, "shutdown complete", exit_code=self.exit_code,
              duration=self.timeline.elapsed(), killed=self.timeline.killed,
              phases=self.timeline.summary())
        for callback in self.on_finish:
            try:
                callback(self.timeline)
            except Exception as exc:  # never lose the exit code to a reporting failure
                event(logging.ERROR, "end-of-shutdown action failed", error=repr(exc))
        self.loop.stop()


def _foreground_tty() -> int | None:
    """stdin, when it is a terminal whose foreground group is ours to hand over."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def configure_process(cfg: Config) -> None:
    """Subreaper when not PID 1 (or asked), parent-death signal when asked."""
    if os.getpid() != 1 or cfg.process.subreaper:
        try:
            linux.become_subreaper()
        except (OSError, AttributeError) as exc:
            event(logging.WARNING, "cannot become a child subreaper; orphans of the service "
                  "will not be reaped by gracerun", error=str(exc))
    if cfg.process.pdeathsig:
        linux.set_parent_death_signal(cfg.process.pdeathsig)


def run(cfg: Config, argv: Sequence[str], *, setup: Callable[[Supervisor], None] | None = None
        ) -> int:
    """Run the service to the end; return gracerun's exit code."""
    from gracerun.core.loop import new_loop

    configure_process(cfg)
    loop = new_loop(cfg.needs_asyncio)
    if cfg.needs_asyncio:
        import asyncio

        asyncio.set_event_loop(loop)
    reaper = Reaper(warn_on_orphans=cfg.log.warn_orphans)
    sup = Supervisor(loop, cfg, reaper)
    signals.SignalInbox(loop, sup.on_signal).install()
    if setup is not None:
        setup(sup)
    sup.start(argv)
    loop.run_forever()
    assert sup.exit_code is not None
    return sup.exit_code
