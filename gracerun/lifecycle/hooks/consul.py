"""consul: take this instance out of Consul at shutdown, put it back at start-up.

    run()      mode "maintenance" (default): PUT /v1/agent/service/maintenance/:id?enable=true,
               then read the service's checks back until the maintenance check shows.
               mode "deregister": PUT /v1/agent/service/deregister/:id, then read back until
               the agent no longer knows the service.
    restore()  mode "maintenance": turn maintenance off (once the service is registered),
               read back until the maintenance check is gone.
               mode "deregister": register the service from this hook's fields when the
               agent does not know it (a service already registered, by its own client say,
               is left as it is), then as above, so a leftover maintenance check goes too.

Why maintenance and not deregister: maintenance adds a critical check of its own to the
service ("_service_maintenance:<id>"), so the instance leaves health queries, DNS and every
client that asks for passing instances, while its registration and its own checks stay.
The service's health checks, TTL heartbeats included, keep passing their own checks and
cannot clear it.  A deregistration, in contrast, lasts until something registers the service
again: Spring Cloud Consul's TTL heartbeat does, when the agent answers 404 for its check and
re-registration on failure is on (spring.cloud.consul.discovery.heartbeat.
reregister-service-on-failure), as does any client that registers periodically.

"Already gone" (the agent does not know the service) is success for run().  Restore waits,
within the hook's timeout, for the service to be registered (in maintenance mode its own
client registers it) and reports its aggregated health in the detail: passing its checks is
the service's business, not this hook's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gracerun.config import strings, values
from gracerun.config.kinds import Hook, opt
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut

if TYPE_CHECKING:
    from collections.abc import Callable

    from gracerun.clients.consul import Agent
    from gracerun.core.service import Service

MODES = ("maintenance", "deregister")
DEFAULT_REASON = "gracerun: shutting down"
_POLL = 0.1  # read-back interval; the agent applies a write before it answers


class ConsulHook(Hook):
    """A service instance on its Consul agent: maintenance (soft) or deregister (hard)."""

    # The Consul agent's HTTP API, "http://127.0.0.1:8500" (or https://...); no
    # credentials in it.
    address: str = opt("http://127.0.0.1:8500", expand=strings.url,
                       help="the Consul agent's HTTP API; no credentials in it")
    service_id: str = opt(expand=strings.text,
                          expect='the service instance\'s ID, e.g. "orders-${HOSTNAME}"',
                          help="the service instance's ID on that agent (not its name)")
    mode: str = opt("maintenance", parse=values.Choice(*MODES),
                    help='`"maintenance"` (soft: maintenance mode on, off at start-up; health '
                         'checks and heartbeats do not undo it) or `"deregister"` (hard: '
                         "deregister, register at start-up)")
    token: str = opt("", expand=strings.text, secret=True,
                     help='the ACL token, sent as `X-Consul-Token`: write `"${CONSUL_TOKEN}"`; '
                          "never logged")
    reason: str = opt(DEFAULT_REASON, expand=strings.text,
                      help="the maintenance reason Consul shows")
    service_name: str = opt("", expand=strings.text,
                            help='`mode = "deregister"`: the name to register at start-up '
                                 "(required there)")
    service_address: str = opt("", expand=strings.text,
                               help="its address (empty: the agent's node address)")
    service_port: int = opt(0, expand=values.whole(0, 65535), help="its port (0: none)")
    tags: tuple[str, ...] = opt((), expand=strings.text_list, help="its tags")
    check_http: str = opt("", expand=strings.text,
                          help='an HTTP check for Consul to run, `"http://${POD_IP}:8080/health"`')
    check_interval: float = opt(10.0, parse=values.positive_duration,
                                help="how often Consul runs `check_http`")
    check_ttl: float = opt(0.0, parse=values.duration,
                           help="a TTL check instead (the service reports to it); 0 for none")

    @property
    def agent(self) -> Agent:
        from gracerun.clients.consul import Agent

        return Agent(self.address, self.token)

    def registration(self) -> dict[str, Any]:
        """The JSON body of PUT /v1/agent/service/register (api.AgentServiceRegistration)."""
        body: dict[str, Any] = {"ID": self.service_id, "Name": self.service_name,
                                "Tags": list(self.tags), "Meta": {"registered-by": "gracerun"}}
        if self.service_address:
            body["Address"] = self.service_address
        if self.service_port:
            body["Port"] = self.service_port
        if self.check_http:
            body["Check"] = {"HTTP": self.check_http, "Interval": _go_duration(
                self.check_interval)}
        elif self.check_ttl > 0:
            body["Check"] = {"TTL": _go_duration(self.check_ttl)}
        return body



RECORD = ConsulHook  # the config record of this kind (lifecycle/hooks/__init__.py: KINDS)

async def run(hook: ConsulHook, service: Service) -> str:
    """Take the instance out; "already gone" (unknown to the agent) is success."""
    import asyncio

    from gracerun.clients import consul

    agent, sid = hook.agent, hook.service_id
    left = _clock(hook)
    try:
        if hook.mode == "deregister":
            if not await consul.deregister(agent, sid, left()):
                return f"{sid}: not registered with the agent (already gone)"
            while True:
                now = await consul.service_health(agent, sid, left())
                if now is None:
                    return f"{sid}: deregistered, read back: unknown to the agent"
                if left() <= _POLL:
                    raise HookFailed(f"{agent.where} {sid}: still registered after the "
                                     "deregistration: something registered it again")
                await asyncio.sleep(_POLL)
        if not await consul.maintenance(agent, sid, True, hook.reason, left()):
            return f"{sid}: not registered with the agent (already gone)"
        while True:
            now = await consul.service_health(agent, sid, left())
            if now is None:
                return f"{sid}: unknown to the agent now (gone)"
            if now.in_maintenance:
                return f"{sid}: in maintenance"
            if left() <= _POLL:
                raise HookFailed(f"{agent.where} {sid}: no maintenance check after "
                                 "enabling maintenance")
            await asyncio.sleep(_POLL)
    except consul.ConsulTimeout as exc:
        raise HookTimedOut(str(exc)) from None
    except consul.ConsulError as exc:
        raise HookFailed(str(exc)) from None


async def restore(hook: ConsulHook, service: Service) -> str:
    """Put the instance back: register it if needed (deregister mode), maintenance off."""
    import asyncio

    from gracerun.clients import consul

    agent, sid = hook.agent, hook.service_id
    left = _clock(hook)
    registered = released = False
    try:
        while True:
            now = await consul.service_health(agent, sid, left())
            if now is None and hook.mode == "deregister" and not registered:
                if not hook.service_name:
                    raise HookFailed(f"{agent.where} {sid}: not registered, and no "
                                     "service_name to register it with")
                await consul.register(agent, hook.registration(), left())
                registered = True
                now = await consul.service_health(agent, sid, left())
            if now is not None and now.service_maintenance:
                released = await consul.maintenance(agent, sid, False, "", left()) or released
                now = await consul.service_health(agent, sid, left())
            if now is not None and not now.in_maintenance:
                done = ("registered" if registered else
                        "out of maintenance" if released else "not in maintenance")
                return f"{sid}: {done} ({now.aggregated})"
            if left() <= _POLL:
                if now is None and registered:
                    state = "registered, but the agent does not show it"
                elif now is None:
                    state = "not registered with the agent (its own client has not " \
                            "registered it)"
                elif now.service_maintenance:
                    state = "still in maintenance"
                else:
                    state = "its node is in maintenance (consul maint -disable on the node)"
                raise HookFailed(f"{agent.where} {sid}: {state} after {hook.timeout:g}s")
            await asyncio.sleep(_POLL)
    except consul.ConsulTimeout as exc:
        raise HookTimedOut(str(exc)) from None
    except consul.ConsulError as exc:
        raise HookFailed(str(exc)) from None


def _clock(hook: ConsulHook) -> Callable[[], float]:
    """left(): the seconds left of the hook's timeout; HookTimedOut once none are."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + hook.timeout

    def left() -> float:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise HookTimedOut(f"{hook.agent.where} {hook.service_id}: timed out after "
                               f"{hook.timeout:g}s")
        return remaining

    return left


def _go_duration(seconds: float) -> str:
    """A duration as Go's time.ParseDuration reads it: "10s", or "1500ms"."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(round(seconds * 1000), 1)}ms"


def registers(hook: ConsulHook) -> bool:
    """In deregister mode the start-up may register the service; a shutdown before that
    has nothing of ours to take out.  Maintenance mode is always safe to switch on."""
    return hook.mode == "deregister"
