"""The start-up sequence: once the service is ready, put it (back) into rotation.

    spawn                              (supervisor.py)                  STARTING
      1. wait until ready   the start-up probe passes (http or tcp), or a fixed delay
      2. register           put the instance back where the last shutdown took it
                            out (every deregister hook whose kind can restore),
                            then the explicit [[startup.hooks]]           REGISTER
      3. ready              /ready answers 200 from here on                READY

Why symmetric.  A registry or load balancer that the shutdown took the
instance out of stays that way when the process restarts: HAProxy keeps a
drained server in DRAIN, Nacos keeps a disabled instance disabled, Eureka
keeps an OUT_OF_SERVICE override.  A rolling restart of every instance then
ends with none in rotation.  So a deregister hook declared once knows both
directions: its kind's `run()` takes the instance out at shutdown and its
`restore()` puts it back here.

A trigger during start-up is an ordinary shutdown (the supervisor cancels
this sequence first).  What this sequence registered is taken out again; a
hook whose kind *creates* the registration (`registers(hook)` is true: a hard
register, an etcd lease) and that never ran here is skipped at shutdown,
because there is nothing of ours to take out (`Startup.skip_at_shutdown`).

A start-up hook that fails is logged and counted like a shutdown hook; with
`on_failure = "not-ready"` the run stays in REGISTER (/ready 503) and the
failed hooks are retried every `retry_interval` until they succeed; with the
default "ready" the service becomes ready anyway: it works, it is only
missing from that one registry, and keeping it out of every other route
would make a registry outage a service outage.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gracerun.core.lifecycle import State
from gracerun.core.log import ERROR, INFO, WARNING, event
from gracerun.core.timeline import HookRecord
from gracerun.errors import GracerunError
from gracerun.lifecycle.hooks import KINDS, HookTimedOut, runner

if TYPE_CHECKING:
    from gracerun.config.kinds import Hook
    from gracerun.config.plan import StartupConfig
    from gracerun.core.supervisor import Supervisor

_MAX_POLLS = 1_000_000  # readiness polls and retry rounds: bounded, if only by days
_HOOK_SLACK = 0.1


def _kind_module(hook: Hook) -> Any:
    return importlib.import_module(f"gracerun.lifecycle.hooks.{KINDS[hook.kind]}")


def restorer(hook: Hook) -> Callable[..., Any] | None:
    """The kind's restore() (the start-up direction), or None when it has none."""
    return getattr(_kind_module(hook), "restore", None)


def registers(hook: Hook) -> bool:
    """Does the start-up direction of this hook create the registration itself?"""
    check = getattr(_kind_module(hook), "registers", None)
    return bool(check(hook)) if check is not None else False


class Startup:
    """Runs the start-up sequence on asyncio; the supervisor starts and cancels it."""

    def __init__(self, sup: Supervisor, cfg: StartupConfig, restore: tuple[Hook, ...]) -> None:
        self.sup = sup
        self.cfg = cfg
        self.lifecycle = sup.lifecycle
        self.service = sup.service
        # The hooks that put back what the deregister phase takes out.
        self.restore_hooks = tuple(h for h in restore if restorer(h) is not None)
        self.restored: set[str] = set()  # hooks whose start-up direction succeeded
        self.attempted: set[str] = set()  # hooks whose start-up direction began
        self._task: asyncio.Task[None] | None = None
        # Registrations that need renewing while the service runs (an etcd lease): each
        # kind's keep_alive(), until its own run() ends it at shutdown.
        self.keepers: list[asyncio.Task[None]] = []

    # --------------------------------------------------------- the supervisor's

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def skip_at_shutdown(self, hook: Hook) -> bool:
        """True for a hook whose kind registers at start-up and never began to here."""
        return hook.name not in self.attempted and registers(hook) \
            and any(h.name == hook.name for h in self.restore_hooks)

    # --------------------------------------------------------------- the sequence

    async def _run(self) -> None:
        reason = "ready"
        try:
            # 1. Wait until the service can take work.
            reason = await self._wait_ready()
            if reason != "ready":
                return  # the service exited: the supervisor is shutting down
            # 2. Put it (back) into registries and load balancers.
            steps = [*((h, True) for h in self.restore_hooks),
                     *((h, False) for h in self.cfg.hooks)]
            if steps:
                self.lifecycle.enter(State.REGISTER, reason)
                reason = await self._register(steps)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not keep the service out of rotation
            event(ERROR, "start-up sequence failed; the service is ready anyway",
                  error=f"{type(exc).__name__}: {exc}")
            reason = "start-up error"
        # 3. Ready: /ready answers 200 from now on.
        self._task = None
        if self.lifecycle.can_enter(State.READY) and not self.lifecycle.shutting_down:
            self.lifecycle.enter(State.READY, reason)

    async def _wait_ready(self) -> str:
        cfg = self.cfg
        if cfg.delay is not None:
            await asyncio.sleep(cfg.delay)
            return "ready" if self.service.running else "service exited"
        if cfg.probe is None:
            return "ready"
        from gracerun.lifecycle.probes import passes

        for polls in range(_MAX_POLLS):
            if not self.service.running:
                return "service exited"
            if await passes(cfg.probe):
                self.lifecycle.note(polls=polls + 1)
                return "ready"
            await asyncio.sleep(cfg.interval)
        return "ready probe never passed"

    async def _register(self, steps: list[tuple[Hook, bool]]) -> str:
        pending = steps
        for round_ in range(_MAX_POLLS):
            failed = []
            for hook, restoring in pending:
                if await self._run_hook(hook, restoring) != "ok":
                    failed.append((hook, restoring))
            if not failed:
                return "registered" if round_ == 0 else f"registered after {round_ + 1} rounds"
            names = ",".join(h.name for h, _ in failed)
            self.lifecycle.note(failed=names)
            if self.cfg.on_failure != "not-ready":
                return "hook failed"
            event(WARNING, "start-up hooks failed; not ready, retrying",
                  hooks=names, retry_in=self.cfg.retry_interval)
            await asyncio.sleep(self.cfg.retry_interval)
            pending = failed
        return "hook failed"

    async def _run_hook(self, hook: Hook, restoring: bool) -> str:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.attempted.add(hook.name)
        run = restorer(hook) if restoring else runner(hook)
        assert run is not None
        outcome, detail = "ok", ""
        try:
            detail = await asyncio.wait_for(run(hook, self.service),
                                            hook.worst_case() + _HOOK_SLACK)
        except (TimeoutError, HookTimedOut) as exc:
            outcome, detail = "timeout", str(exc) or f"no result within {hook.timeout:g}s"
        except GracerunError as exc:
            outcome, detail = "failed", str(exc)
        except Exception as exc:  # whatever a hook raises, the sequence goes on
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        if outcome == "ok" and restoring:
            self.restored.add(hook.name)
        keep = getattr(_kind_module(hook), "keep_alive", None) if restoring else None
        if keep is not None:  # also after a failed restore: it registers once it can
            self.keepers.append(asyncio.ensure_future(keep(hook, self.service)))
        duration = loop.time() - started
        phase = State.REGISTER.label
        timeline = self.sup.timeline
        self.lifecycle.hook(HookRecord(phase=phase, name=hook.name, kind=hook.kind,
                                       start=started - timeline.run_started_at,
                                       duration=duration, outcome=outcome, detail=detail))
        level = INFO if outcome == "ok" else WARNING
        event(level, "hook", phase=phase, hook=hook.name, kind=hook.kind,
              direction="restore" if restoring else "run", outcome=outcome,
              duration=duration, detail=detail)
        return outcome
