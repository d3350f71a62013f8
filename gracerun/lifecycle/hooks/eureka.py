"""eureka: take this instance out of Eureka at shutdown, put it back at start-up.

    run()      mode "out_of_service" (default): PUT .../status?value=OUT_OF_SERVICE, then
               read the instance back until its status is OUT_OF_SERVICE.
               mode "cancel": DELETE the instance, then read back until the server answers
               404.
    restore()  (either mode) read the instance; while an override is in force, DELETE
               .../status?value=UP; done once the instance reads back UP with no override.

Why the override and not the cancel: the service's own Eureka client renews its lease every
30 s, and a renewal of an instance the server does not know answers 404, on which the client
registers again (DiscoveryClient.renew): a cancel lasts until the next heartbeat.  The
OUT_OF_SERVICE override is kept by the server apart from the registration, and every renewal
re-applies it (AbstractInstanceRegistry.renew with OverrideExistsRule), so the instance stays
out of every client's list until the override is removed.  It also survives the same
instance registering again while its lease exists, which is why restore() removes it: a
service restarted under the same instance ID would otherwise come back OUT_OF_SERVICE.

Restore waits for the instance to be registered (the service's client registers it soon
after start-up) and to read back UP within the hook's timeout; a status the service itself
reports (STARTING, DOWN) is left alone and reported when the time runs out.

"Already gone" (404: not registered, lease cancelled or expired) is success for run(), once
GET {base}/apps has shown that the URL is Eureka's API: a wrong base path answers 404 too,
and must fail rather than pass silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gracerun.config import strings, values
from gracerun.config.kinds import Hook, opt
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut

if TYPE_CHECKING:
    from collections.abc import Callable

    from gracerun.clients.eureka import Endpoint, Instance
    from gracerun.core.service import Service

MODES = ("out_of_service", "cancel")
_POLL = 0.1  # read-back interval; the registry changes synchronously, so one read usually does


class EurekaHook(Hook):
    """An instance in Eureka: OUT_OF_SERVICE override (soft) or cancel (hard)."""

    # The Eureka server's URL with its path: "http://eureka:8761/eureka" (Spring Cloud) or
    # "http://eureka:8080/eureka/v2" (Netflix's WAR); http or https; no credentials in it.
    url: str = opt("http://127.0.0.1:8761/eureka", expand=strings.url,
                   help='the Eureka server with its path: `"http://eureka:8761/eureka"` '
                        '(Spring Cloud) or `".../eureka/v2"` (Netflix); no credentials in it')
    app: str = opt(expand=strings.text, expect="the application name (spring.application.name)",
                   help="the application name the instance registers under; any case")
    instance_id: str = opt(expand=strings.text,
                           expect='the instance id, e.g. "${HOSTNAME}:orders:8080"',
                           help="the instance's ID (eureka.instance.instance-id)")
    mode: str = opt("out_of_service", parse=values.Choice(*MODES),
                    help='`"out_of_service"` (soft: a status override that heartbeats keep; '
                         'removed at start-up) or `"cancel"` (hard: deregister, which the '
                         "client's next heartbeat undoes)")
    username: str = opt("", expand=strings.text,
                        help="HTTP basic auth user, when the server requires one")
    password: str = opt("", expand=strings.text, secret=True,
                        help='its password: write `"${EUREKA_PASSWORD}"`; never logged')

    @property
    def endpoint(self) -> Endpoint:
        from gracerun.clients.eureka import Endpoint

        return Endpoint(self.url, self.app, self.instance_id, self.username, self.password)



RECORD = EurekaHook  # the config record of this kind (lifecycle/hooks/__init__.py: KINDS)

async def run(hook: EurekaHook, service: Service) -> str:
    """Take the instance out; "already gone" (not registered) is success."""
    import asyncio

    from gracerun.clients import eureka

    ep = hook.endpoint
    left = _clock(hook, ep)
    try:
        if hook.mode == "cancel":
            if not await eureka.cancel(ep, left()):
                await eureka.check_api(ep, left())
                return f"{_name(ep)}: not registered (already gone)"
            while True:
                now = await eureka.instance(ep, left())
                if now is None:
                    return f"{_name(ep)}: cancelled, read back: not registered"
                if left() <= _POLL:
                    raise HookFailed(f"{ep.where}: still registered ({now.status}) after the "
                                     "cancel: its client registered it again")
                await asyncio.sleep(_POLL)
        if not await eureka.set_status(ep, "OUT_OF_SERVICE", left()):
            await eureka.check_api(ep, left())
            return f"{_name(ep)}: not registered (already gone)"
        while True:
            now = await eureka.instance(ep, left())
            if now is None:
                return f"{_name(ep)}: not registered any more (gone)"
            # Clients list only UP instances; DOWN or STARTING (the service's own report,
            # which wins over an override: DownOrStartingRule) is out of their lists too.
            if now.status != "UP":
                return f"{_name(ep)}: {now.status} (override {now.overridden})"
            if left() <= _POLL:
                raise HookFailed(f"{ep.where}: still UP after setting the OUT_OF_SERVICE "
                                 "override")
            await asyncio.sleep(_POLL)
    except eureka.EurekaTimeout as exc:
        raise HookTimedOut(str(exc)) from None
    except eureka.EurekaError as exc:
        raise HookFailed(str(exc)) from None


async def restore(hook: EurekaHook, service: Service) -> str:
    """Remove any override and wait until the instance reads back UP."""
    import asyncio

    from gracerun.clients import eureka

    ep = hook.endpoint
    left = _clock(hook, ep)
    removed = checked = False
    try:
        while True:
            now = await eureka.instance(ep, left())
            if now is None and not checked:  # a wrong URL reads as "not registered" too
                await eureka.check_api(ep, left())
                checked = True
            if now is not None and (now.has_override or now.status == "OUT_OF_SERVICE"):
                # A 404 here means it vanished between the two calls: read again.
                removed = await eureka.remove_override(ep, left()) or removed
                now = await eureka.instance(ep, left())
            if now is not None and now.status == "UP" and not now.has_override:
                return f"{_name(ep)}: UP" + (" (override removed)" if removed else "")
            if left() <= _POLL:
                raise HookFailed(f"{ep.where}: {_state(now)} after {hook.timeout:g}s")
            await asyncio.sleep(_POLL)
    except eureka.EurekaTimeout as exc:
        raise HookTimedOut(str(exc)) from None
    except eureka.EurekaError as exc:
        raise HookFailed(str(exc)) from None


def _clock(hook: EurekaHook, ep: Endpoint) -> Callable[[], float]:
    """left(): the seconds left of the hook's timeout; HookTimedOut once none are."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + hook.timeout

    def left() -> float:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise HookTimedOut(f"{ep.where}: timed out after {hook.timeout:g}s")
        return remaining

    return left


def _name(ep: Endpoint) -> str:
    return f"{ep.app.upper()}/{ep.instance_id}"


def _state(now: Instance | None) -> str:
    if now is None:
        return "not registered (its Eureka client has not registered it)"
    if now.has_override:
        return f"status {now.status}, override {now.overridden} still in force"
    return f"status {now.status}, not UP (the status its own client reports)"
