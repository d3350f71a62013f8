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

import os
import signal
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gracerun.config.load import Config
from gracerun.core import signals, tree
from gracerun.core.lifecycle import Event, Lifecycle, State, Transition
from gracerun.core.log import DEBUG, ERROR, INFO, WARNING, event
from gracerun.core.reaper import Reaper
from gracerun.core.service import Service
from gracerun.core.spawn import foreground_tty, spawn
from gracerun.core.timeline import Timeline
from gracerun.core.tuples import NamedTuple

# After the SIGKILL, wait this long for the kernel to finish the tree before
# giving up on processes stuck in uninterruptible sleep.
_KILL_SETTLE_SECONDS = 5.0


class PreStop(Protocol):
    """The pre-stop pipeline (lifecycle/shutdown.py).

    start() enters the first pre-stop state before it returns (or calls
    sup.begin_stop() when there is nothing to run), so the run is never
    between "triggered" and "shutting down"; it calls sup.begin_stop() when
    its phases are done.  cancel() stops it wherever it is.
    """

    def start(self, trigger: str, service_exited: bool) -> None: ...
    def cancel(self) -> None: ...


class StartUp(Protocol):
    """The start-up sequence (lifecycle/startup.py): enters READY when it is done."""

    def start(self) -> None: ...
    def cancel(self) -> None: ...
    def skip_at_shutdown(self, hook: Any) -> bool: ...


class Processes:
    """The process operations the supervisor performs, in one replaceable place.

    The real ones spawn and signal real processes (spawn.py, tree.py); the
    in-process lifecycle tests pass a fake, so that every transition can be
    driven in milliseconds without a real service.
    """

    def spawn(self, argv: Sequence[str], tty_fd: int | None) -> int:
        return spawn(argv, new_group=True, tty_fd=tty_fd)

    def signal_group(self, pgid: int, signum: int) -> bool:
        return tree.signal_group(pgid, signum)

    def descendants(self) -> list[int]:
        return tree.descendants()

    def send(self, pids: list[int], signum: int) -> int:
        return tree.send(pids, signum)

    def kill_all(self, service_pgid: int | None) -> int:
        return tree.kill_all(service_pgid)

    def continue_stopped(self, pgid: int | None, pids: Sequence[int] = ()) -> int:
        """SIGCONT to the processes of group `pgid` (and of `pids`) that are stopped.

        Only to those in job-control stop (state T): a running service must see
        exactly the signals it was sent, as under tini and dumb-init, while a
        service stopped by ^Z must still wake to act on its stop signal.
        """
        wanted = set(pids)
        sent = 0
        for pid, (_ppid, pgrp, state) in tree.processes().items():
            if state == "T" and (pgrp == pgid or pid in wanted):
                try:
                    os.kill(pid, signal.SIGCONT)
                    sent += 1
                except (ProcessLookupError, PermissionError):
                    continue
        return sent


class Trigger(NamedTuple):
    """What started the shutdown; set once."""

    reason: str  # "signal SIGTERM", "preStop hook", "service exited with 3"
    prestop: bool  # started by `gracerun prestop` (Kubernetes sends SIGTERM after it)


class Supervisor:
    """Drives the lifecycle from signals, exits and timers; owns the budget."""

    def __init__(self, loop: Any, cfg: Config, reaper: Reaper, *,
                 service: Service | None = None, processes: Processes | None = None) -> None:
        self.loop = loop
        self.cfg = cfg
        self.reaper = reaper
        self.service = service or Service(reaper, loop, group=cfg.signals.group)
        self.processes = processes or Processes()
        self.lifecycle = Lifecycle(loop.time, cfg.shutdown.budget)
        self.prestop: PreStop | None = None
        self.startup: StartUp | None = None
        self.trigger: Trigger | None = None
        self.stop_signal = cfg.shutdown.stop_signal or signal.SIGTERM
        self._trigger_signals = 0  # trigger signals received after the shutdown began
        self._kill_timer: Any = None
        self._leftover_timer: Any = None
        self._settle_timer: Any = None
        # Observers for metrics: (signal sent) and (the service's exit code).
        self.on_forward: list[Callable[[int], None]] = []
        self.on_service_exit: list[Callable[[int], None]] = []
        # Run at the very end, before exit (state file, Pushgateway): synchronous,
        # each expected to bound itself by timeline.remaining().
        self.on_finish: list[Callable[[Timeline], None]] = []
        self._suspended = False  # gracerun stopped itself for job control
        reaper.on_stopped = self._child_stopped
        self.lifecycle.subscribe(self._log)

    @property
    def timeline(self) -> Timeline:
        return self.lifecycle.timeline

    # ------------------------------------------------------------ start-up

    def start(self, argv: Sequence[str]) -> None:
        """Spawn the service and begin (the in-process tests' way; app.run spawns
        first, before the loop exists, then calls adopt() and begin())."""
        self.adopt(self.processes.spawn(argv, foreground_tty()), argv)
        self.begin()

    def adopt(self, pid: int, argv: Sequence[str]) -> None:
        """Take on the running service `pid`: its exit comes to us from here on.

        Call it before the loop runs: nothing reaps before then (SIGCHLD is
        held), so its exit cannot be collected before the watch exists."""
        self.reaper.watch(pid, self._service_exited)
        self.service.pid = pid
        event(DEBUG, "started service", pid=pid, argv=" ".join(argv))

    def begin(self) -> None:
        """The service runs: start the start-up sequence, or be READY at once."""
        if self.lifecycle.shutting_down:  # a trigger came first
            return
        if self.startup is not None:
            self.startup.start()  # enters READY once the service is ready and registered
        else:
            self.lifecycle.enter(State.READY, "service started")

    # ------------------------------------------------------------- signals

    def on_signal(self, signum: int) -> None:
        """Dispatch one received signal (called from the loop, not the handler)."""
        if signum == signal.SIGCHLD:
            self._reap()
            return
        if signum in self.cfg.shutdown.triggers:
            self._on_trigger(signum)
            return
        if signum in signals.JOB_CONTROL:
            self._job_control(signum)
            return
        self.forward(signum)
        if signum == signal.SIGCONT:
            self._resumed()

    # -------------------------------------------------------- job control

    def _job_control(self, signum: int) -> None:
        """SIGTSTP/SIGTTIN/SIGTTOU: forward, then stop ourselves (dumb-init.c,
        handle_signal), so that a shell sees its job stop; SIGCONT wakes both."""
        group = self.cfg.signals.group
        rewrite = self.cfg.signals.rewrite
        if group and signum not in rewrite:
            # The service's group may be orphaned (a service that called setsid
            # leaves gracerun's session): the kernel drops these three for it.
            self.service.signal(signal.SIGSTOP)
            event(DEBUG, "forwarded signal", signal=signals.name(signum),
                  sent="SIGSTOP", group=True)
        else:
            self.forward(signum)
        self._suspend(f"received {signals.name(signum)}")

    def _child_stopped(self, pid: int, signum: int) -> None:
        """The service was stopped by a job-control signal (^Z on the terminal goes
        to its group, the foreground, not to us): stop too, so the shell notices."""
        if pid != self.service.pid or signum not in signals.JOB_CONTROL:
            return
        procs = tree.processes()
        if procs.get(pid, (0, 0, ""))[2] != "T":
            return  # continued meanwhile: a stale report
        self._suspend(f"service stopped by {signals.name(signum)}")

    def _suspend(self, reason: str) -> None:
        if self.lifecycle.shutting_down:
            return  # the budget runs on: a shutdown is never paused
        if os.getpid() == 1:
            # The kernel ignores SIGSTOP sent to a namespace's init from inside
            # it: as PID 1 gracerun forwards but cannot stop (nor can dumb-init).
            event(DEBUG, "not stopping: PID 1 cannot stop itself", reason=reason)
            return
        event(DEBUG, "stopping for job control", reason=reason)
        self._suspended = True
        os.kill(os.getpid(), signal.SIGSTOP)

    def _resumed(self) -> None:
        """After SIGCONT (`fg`, `bg`): with the terminal ours again (`fg`), hand
        it back to the service, and continue what the terminal stopped in its group."""
        if not self._suspended:
            return
        self._suspended = False
        pid = self.service.pid
        if pid is None or not self.service.running:
            return
        if foreground_tty() is not None:
            try:
                os.tcsetpgrp(0, pid)
            except OSError:
                pass
        self.processes.continue_stopped(pid)

    def _on_trigger(self, signum: int) -> None:
        lifecycle = self.lifecycle
        if not lifecycle.shutting_down:
            self.begin_shutdown(f"signal {signals.name(signum)}", signum)
            return
        self._trigger_signals += 1
        if self.trigger is not None and self.trigger.prestop and self._trigger_signals == 1:
            # Kubernetes sends SIGTERM after the preStop hook we are serving:
            # the same shutdown, so neither restart nor cut it, nor forward it.
            event(INFO, "absorbed stop signal after preStop",
                  signal=signals.name(signum))
        elif not lifecycle.stopping:
            event(WARNING, "second stop signal: skipping to the stop phase",
                  signal=signals.name(signum))
            self.begin_stop("second signal")
        else:
            self.forward(signum)

    def forward(self, signum: int) -> None:
        """Send signum (rewritten per -r) to the service, or its group with -g."""
        target = self.cfg.signals.rewrite.get(signum, signum)
        if target == 0:
            event(DEBUG, "dropped signal", signal=signals.name(signum))
            return
        if not self.service.signal(target):
            event(DEBUG, "not forwarded: the service is gone",
                  signal=signals.name(signum))
            return
        for observer in self.on_forward:
            observer(target)
        event(DEBUG, "forwarded signal", signal=signals.name(signum),
              sent=signals.name(target), group=self.cfg.signals.group)

    # ------------------------------------------------------------ shutdown

    @property
    def _phase_level(self) -> int:
        """Shutdown narration is info with a pipeline, debug (-v) for a bare wrapper."""
        return INFO if self.prestop is not None else DEBUG

    def begin_shutdown(self, trigger: str, signum: int | None = None,
                       from_prestop: bool = False) -> None:
        """Start the shutdown sequence once, whatever triggered it."""
        if self.lifecycle.shutting_down:
            return
        self.trigger = Trigger(trigger, from_prestop)
        if self.startup is not None:
            self.startup.cancel()
        if self.cfg.shutdown.stop_signal is None:
            # The trigger's signal, rewritten (-r TERM:QUIT for nginx); a preStop
            # or the service's own exit stands for the usual SIGTERM.
            trigger_signal = signum if signum is not None else signal.SIGTERM
            self.stop_signal = self.cfg.signals.rewrite.get(trigger_signal, trigger_signal)
        self._kill_timer = self.loop.call_later(self.cfg.shutdown.budget, self._budget_spent)
        if self.prestop is not None:
            self.prestop.start(trigger, not self.service.running)
        else:
            self.begin_stop(trigger)

    def begin_stop(self, reason: str) -> None:
        """The stop phase: send the stop signal, wait for the tree to go."""
        if self.lifecycle.stopping:
            return
        if self.prestop is not None:
            self.prestop.cancel()
        self.lifecycle.enter(State.STOP, reason)
        self.lifecycle.note(after=reason)
        if self.service.running:
            if self.stop_signal:
                self.service.signal(self.stop_signal)
                event(DEBUG, "sent stop signal", signal=signals.name(self.stop_signal))
                # A stopped service (Ctrl-Z stops its whole group) would sit on
                # the signal until SIGKILL: continue what is stopped in its group.
                self.processes.continue_stopped(self.service.pid)
        elif self._stop_leftovers():
            # Processes the service left behind get the stop grace, not the whole
            # budget: nobody waits for them, so keep the exit prompt.
            grace = self.cfg.shutdown.effective_stop_grace
            if grace < self.timeline.remaining():
                self._leftover_timer = self.loop.call_later(grace, self._kill, "leftovers "
                                                            "outlived the stop grace")
        self._check_tree_gone()

    def _log(self, ev: Event) -> None:
        """The lifecycle's transitions as log lines."""
        if not isinstance(ev, Transition):
            return
        level = self._phase_level
        if ev.previous < State.NOTIFY <= ev.state and ev.state is not State.DONE:
            event(level, "shutdown started", trigger=ev.reason, budget=self.cfg.shutdown.budget)
        if ev.ended is not None:
            record = ev.ended
            event(level, "phase ended", phase=record.name, duration=record.duration,
                  reason=record.reason, **{k: v for k, v in record.detail.items()
                                           if k != "last_reading"})
        if ev.started is not None:
            event(level, "phase started", phase=ev.started.name, at=ev.started.start,
                  remaining=self.timeline.remaining())

    def _stop_leftovers(self) -> bool:
        """The service is gone but processes it left behind are not: stop them too.

        Returns whether there were any."""
        if not self.reaper.has_children():
            return False
        processes = self.processes
        pids = processes.descendants()
        sig = self.stop_signal or signal.SIGTERM
        if self.service.pid is not None:
            processes.signal_group(self.service.pid, sig)
        sent = processes.send(pids, sig)
        processes.continue_stopped(self.service.pid, pids)
        event(self._phase_level, "stopping processes left by the service", count=sent,
              signal=signals.name(sig))
        return True

    def _budget_spent(self) -> None:
        self._kill("budget spent")

    def _kill(self, reason: str) -> None:
        """SIGKILL the whole tree (the budget, or the leftovers' stop grace, ran out)."""
        if self.lifecycle.state >= State.KILL:
            return
        for timer in (self._kill_timer, self._leftover_timer):
            if timer is not None:
                timer.cancel()
        if self.prestop is not None:
            self.prestop.cancel()
        self.lifecycle.enter(State.KILL, reason)
        killed = self.processes.kill_all(self.service.pid if self.service.running else None)
        event(WARNING, f"{reason}: SIGKILL sent to the whole tree",
              budget=self.cfg.shutdown.budget, processes=killed)
        self._settle_timer = self.loop.call_later(_KILL_SETTLE_SECONDS, self._give_up)
        self._check_tree_gone()

    def _give_up(self) -> None:
        event(ERROR, "processes survived SIGKILL (uninterruptible sleep?); exiting")
        if self.service.exit_code is None:
            self.service.exit_code = 128 + signal.SIGKILL
        self._finish()

    # ----------------------------------------------------------- reaping

    def _reap(self) -> None:
        if self.reaper.reap():
            self.loop.call_soon(self._reap)  # a huge batch: continue next turn
            return
        self._check_tree_gone()

    def _service_exited(self, pid: int, code: int) -> None:
        self.service.exit_code = code
        event(DEBUG, "service exited", pid=pid, code=code)
        for observer in self.on_service_exit:
            observer(code)
        if not self.lifecycle.shutting_down:
            self.begin_shutdown(f"service exited with {code}")
        elif self.lifecycle.stopping and not self.lifecycle.killed:
            self._stop_leftovers()

    def _check_tree_gone(self) -> None:
        lifecycle = self.lifecycle
        if self.service.exit_code is None or not lifecycle.stopping or lifecycle.done:
            return
        if self.reaper.has_children():
            return
        self._finish()

    def _finish(self) -> None:
        if self.lifecycle.done:
            return
        for timer in (self._kill_timer, self._leftover_timer, self._settle_timer):
            if timer is not None:
                timer.cancel()
        code = self.service.exit_code
        if code is None:
            code = 128 + signal.SIGKILL
        exit_code = 0 if code in self.cfg.process.success_codes else code
        self.lifecycle.enter(State.DONE, "service tree gone", exit_code=exit_code)
        event(self._phase_level, "shutdown complete", exit_code=exit_code,
              duration=self.timeline.elapsed(), killed=self.lifecycle.killed,
              phases=self.timeline.summary())
        for callback in self.on_finish:
            try:
                callback(self.timeline)
            except Exception as exc:  # never lose the exit code to a reporting failure
                event(ERROR, "end-of-shutdown action failed", error=repr(exc))
        self.loop.stop()
