"""The shutdown sequence, phase by phase.

    trigger (SIGTERM, preStop, or the service exiting on its own)
      1. notify      tell the service to stop background work (MQ, schedulers)
      2. deregister  take the instance out of registries and load balancers
      3. propagate   wait until the world stopped sending (fixed, or adaptive)
      4. drain       wait until in-flight work is zero
      5. stop        send the stop signal, wait for the tree   (supervisor.py)
      6. kill        SIGKILL the tree when the budget is spent  (supervisor.py)

The supervisor arms the kill at the trigger, so phase 6 fires whatever phase
is running; this coroutine only has to keep its own phases inside the budget
minus the stop grace, so the service always gets its stop grace.  When the
service exits by itself only deregister runs: the registry must not point at
a dead instance, and there is nothing left to notify or drain.

Each phase is logged and timed through the timeline; each ends for a reason:
"done", "quiet", "drained", "timeout", "deadline", "service exited",
"hook failed".  A second stop signal or the budget cancels this coroutine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gracerun.config.kinds import Hook
from gracerun.config.plan import DrainConfig, HookPhase, PropagateConfig
from gracerun.core.lifecycle import State
from gracerun.core.log import ERROR, INFO, WARNING, event
from gracerun.core.supervisor import Supervisor
from gracerun.core.timeline import HookRecord
from gracerun.errors import GracerunError
from gracerun.lifecycle.hooks import HookTimedOut, runner
from gracerun.lifecycle.probes import InFlight, ProbeError, TrafficCounter, propagation

_MAX_POLLS = 1_000_000
_HOOK_SLACK = 0.1  # every polling loop is also bounded by its deadline


class _SkipToStop(Exception):
    """A hook with on_failure = "stop" failed."""


class Pipeline:
    """The pre-stop phases (1-4) on asyncio; implements supervisor.PreStop.

    Each phase enters its lifecycle state when it begins; the reason it ended
    is carried into the next transition (`self._reason`), so the timeline
    records it once, where the next state begins.
    """

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.cfg = sup.cfg
        assert sup.cfg.plan is not None
        self.plan = sup.cfg.plan
        self.lifecycle = sup.lifecycle
        self.service = sup.service
        self._task: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()
        self._reason = ""
        sup.on_service_exit.append(lambda _code: self._exited.set())

    def start(self, trigger: str, service_exited: bool) -> None:
        if service_exited:
            self._exited.set()
        self._reason = trigger
        first = self._first_phase(service_exited)
        if first is None:
            self.sup.begin_stop(trigger)
            return
        self._enter(first)  # now, not when the task first runs: the run is shutting down
        self._task = asyncio.ensure_future(self._run(service_exited))

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _first_phase(self, service_exited: bool) -> State | None:
        plan = self.plan
        if not service_exited and plan.notify.hooks:
            return State.NOTIFY
        if plan.deregister.hooks:
            return State.DEREGISTER
        if service_exited:
            return None
        if plan.propagate is not None:
            return State.PROPAGATE
        if plan.drain is not None and plan.drain.all_probes:
            return State.DRAIN
        return None

    def _enter(self, state: State) -> None:
        if self.lifecycle.state is not state:
            self.lifecycle.enter(state, self._reason)

    async def _run(self, service_exited: bool) -> None:
        loop = asyncio.get_running_loop()
        # Pre-stop phases must end here, leaving the stop phase its grace.
        deadline = (loop.time() + self.sup.timeline.remaining()
                    - self.cfg.shutdown.effective_stop_grace)
        try:
            if not service_exited:
                # 1. Tell the service to stop taking background work.
                await self._hook_phase(State.NOTIFY, self.plan.notify, deadline)
            # 2. Take the instance out of rotation (even when it already died).
            await self._hook_phase(State.DEREGISTER, self.plan.deregister, deadline)
            if not self._exited.is_set():
                # 3. Wait until the rest of the world has noticed.
                if self.plan.propagate is not None:
                    await self._propagate(self.plan.propagate, deadline)
                # 4. Let in-flight work finish.
                if self.plan.drain is not None and not self._exited.is_set():
                    await self._drain(self.plan.drain, deadline)
        except _SkipToStop as exc:
            self._reason = str(exc)
        except Exception as exc:  # a bug must not keep the service from its stop signal
            event(ERROR, "pre-stop pipeline failed; going to the stop phase",
                  error=f"{type(exc).__name__}: {exc}")
            self._reason = "pipeline error"
        # 5. Stop: the supervisor sends the stop signal and waits for the tree.
        self._task = None  # done: nothing left for begin_stop() to cancel
        self.sup.begin_stop(self._reason)

    # ------------------------------------------------------------- hooks

    async def _hook_phase(self, state: State, phase: HookPhase, deadline: float) -> None:
        hooks = phase.hooks
        startup = self.sup.startup
        if state is State.DEREGISTER and startup is not None:
            # What the start-up sequence never registered is not ours to take out.
            hooks = tuple(h for h in hooks if not startup.skip_at_shutdown(h))
        if not hooks:
            return
        loop = asyncio.get_running_loop()
        self._enter(state)
        name = state.label
        limit = deadline if phase.timeout is None else min(deadline, loop.time() + phase.timeout)
        if phase.parallel:
            outcomes = await asyncio.gather(*(self._run_hook(name, h, limit) for h in hooks))
        else:
            outcomes = []
            for hook in hooks:
                if state is State.NOTIFY and self._exited.is_set():
                    break  # nobody left to notify: on to deregister
                outcomes.append(await self._run_hook(name, hook, limit))
                if outcomes[-1] != "ok" and hook.on_failure == "stop":
                    break
        failed = [h.name for h, o in zip(hooks, outcomes, strict=False) if o != "ok"]
        stoppers = [h.name for h, o in zip(hooks, outcomes, strict=False)
                    if o != "ok" and h.on_failure == "stop"]
        if failed:
            self.lifecycle.note(failed=",".join(failed))
            self._reason = "hook failed"
        else:
            self._reason = "done"
        if stoppers:
            raise _SkipToStop(f"hook {stoppers[0]} failed (on_failure = stop)")

    async def _run_hook(self, phase: str, hook: Hook, limit: float) -> str:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A little slack over the hook's own worst case, so that a sleep hook
        # (whose worst case is its duration) is not cut at its own last instant.
        timeout = min(hook.worst_case() + _HOOK_SLACK, limit - started)
        outcome, detail = "ok", ""
        if timeout <= 0:
            outcome, detail = "timeout", "no time left in the phase"
        else:
            try:
                detail = await asyncio.wait_for(runner(hook)(hook, self.service), timeout)
            except (TimeoutError, HookTimedOut) as exc:
                outcome, detail = "timeout", str(exc) or f"no result within {timeout:.3g}s"
            except GracerunError as exc:
                outcome, detail = "failed", str(exc)
            except Exception as exc:  # whatever a hook raises, the sequence goes on
                outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        duration = loop.time() - started
        timeline = self.sup.timeline
        self.lifecycle.hook(HookRecord(phase=phase, name=hook.name, kind=hook.kind,
                                       start=started - (timeline.started_at or started),
                                       duration=duration, outcome=outcome, detail=detail))
        level = INFO if outcome == "ok" else WARNING
        event(level, "hook", phase=phase, hook=hook.name, kind=hook.kind, outcome=outcome,
              duration=duration, detail=detail)
        return outcome

    # ------------------------------------------------------------ waiting

    async def _pause(self, seconds: float) -> bool:
        """Wait up to `seconds`; True when the service exited meanwhile."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._exited.wait(), seconds)
            except TimeoutError:
                pass
        return self._exited.is_set()

    async def _propagate(self, cfg: PropagateConfig, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self._enter(State.PROPAGATE)
        start = loop.time()
        if cfg.sleep is not None:
            end = min(start + cfg.sleep, deadline)
            exited = await self._pause(end - start)
            self._reason = "service exited" if exited else (
                "slept" if end == start + cfg.sleep else "deadline")
            return
        probe = cfg.probe or (self.plan.drain.counting_probe() if self.plan.drain else None)
        assert probe is not None  # config validation guarantees a probe
        check = propagation(probe, self.service)
        if check is not None:
            await self._propagate_until(check, cfg, start, deadline)
            return
        counter = TrafficCounter(probe)
        hard_end = min(start + cfg.max, deadline)
        last_value: float | None = None
        last_change = start
        reason, warned, seen_any = "max reached", False, False
        for _ in range(_MAX_POLLS):
            value, error = await _read(counter.read, hard_end)
            if error and not warned:
                event(WARNING, "propagate probe failed; counting it as traffic",
                      error=error)
                warned = True
            now = loop.time()
            first = value is not None and not seen_any
            seen_any = seen_any or value is not None
            if value is None:
                last_change = now  # no reading: assume traffic (safe side)
            elif first:
                last_value = value  # the baseline: quiet is counted from the phase start
            elif value != last_value:
                last_change, last_value = now, value
            if now - start >= cfg.min and now - last_change >= cfg.quiet:
                reason = "quiet"
                break
            if now >= hard_end:
                reason = "deadline" if deadline < start + cfg.max else "max reached"
                break
            if await self._pause(min(cfg.interval, hard_end - now)):
                reason = "service exited"
                break
        self.lifecycle.note(quiet_for=loop.time() - last_change)
        self._reason = reason

    async def _propagate_until(self, check: Callable[[], Awaitable[bool]],
                               cfg: PropagateConfig, start: float, deadline: float) -> None:
        """Propagate on a probe that can tell when the world has noticed (kubernetes)."""
        loop = asyncio.get_running_loop()
        hard_end = min(start + cfg.max, deadline)
        reason, noticed_at, warned = "max reached", None, False
        for _ in range(_MAX_POLLS):
            if noticed_at is None:
                answer, error = await _read_bool(check, hard_end)
                if error and not warned:
                    event(WARNING, "propagate probe failed; retrying", error=error)
                    warned = True
                if answer:
                    noticed_at = loop.time()
                    self.lifecycle.note(noticed_after=noticed_at - start)
            now = loop.time()
            if noticed_at is not None and now - start >= cfg.min:
                reason = "noticed"
                break
            if now >= hard_end:
                reason = "deadline" if deadline < start + cfg.max else "max reached"
                break
            wait = cfg.interval if noticed_at is None else start + cfg.min - now
            if await self._pause(min(wait, hard_end - now)):
                reason = "service exited"
                break
        self._reason = reason

    async def _drain(self, cfg: DrainConfig, deadline: float) -> None:
        if not cfg.all_probes:
            return
        loop = asyncio.get_running_loop()
        self._enter(State.DRAIN)
        start = loop.time()
        end = min(start + cfg.timeout, deadline)
        readers = [InFlight(p, self.service) for p in cfg.all_probes]
        reason, value, warned = "timeout", None, False
        for _ in range(_MAX_POLLS):
            if loop.time() >= end:
                reason = "timeout" if end < deadline else "deadline"
                break
            # Every probe at once; the phase ends when all of them read zero.
            readings = await asyncio.gather(*(_read(r.read, end) for r in readers))
            errors = [error for _, error in readings if error]
            if errors and not warned:
                event(WARNING, "drain probe failed; retrying", error=errors[0])
                warned = True
            values = [v for v, _ in readings]
            value = None if any(v is None for v in values) else \
                sum(max(0.0, v) for v in values if v is not None)
            if len(values) > 1:
                self.lifecycle.note(readings=",".join("?" if v is None else f"{v:g}"
                                                      for v in values))
            if value is not None:
                self.lifecycle.probe("drain", value)
                if value <= 0:
                    reason = "drained"
                    break
            if await self._pause(min(cfg.interval, max(0.0, end - loop.time()))):
                reason = "service exited"
                break
        self.lifecycle.note(inflight=value if value is not None else -1)
        self._reason = reason


async def _read_bool(read: Callable[[], Awaitable[bool]], until: float) -> tuple[bool, str]:
    """One yes/no reading bounded by `until`: (answer, "") or (False, why)."""
    remaining = max(0.001, until - asyncio.get_running_loop().time())
    try:
        return bool(await asyncio.wait_for(read(), remaining)), ""
    except (ProbeError, TimeoutError) as exc:
        return False, str(exc) or f"no reading within {remaining:.3g}s"
    except Exception as exc:  # a probe bug reads as "not yet", never stops the phase
        return False, f"{type(exc).__name__}: {exc}"


async def _read(read: Callable[[], Awaitable[float]], until: float) -> tuple[float | None, str]:
    """One probe reading, bounded by the monotonic time `until`: (value, "") or (None, why)."""
    remaining = max(0.001, until - asyncio.get_running_loop().time())
    try:
        return await asyncio.wait_for(read(), remaining), ""
    except (ProbeError, TimeoutError) as exc:
        return None, str(exc) or f"no reading within {remaining:.3g}s"
    except Exception as exc:  # a probe bug reads as "no reading", never stops the phase
        return None, f"{type(exc).__name__}: {exc}"
