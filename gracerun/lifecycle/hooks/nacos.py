"""nacos: take this instance out of Nacos discovery at shutdown, put it back at start-up.

mode = "disable" (the default, the soft form) marks the instance ``enabled=false`` with the
instance update API (PUT /nacos/v1/ns/instance, as the Nacos console's offline button
does) and reads the instance list until discovery leaves it out.  The service's own Nacos
client cannot undo that: 1.x heartbeats refresh only the instance's health and last-beat
time, and 2.x keeps ``enabled`` in a metadata override that neither heartbeats nor
re-registration touch.  restore() sets ``enabled=true`` again, once the instance is
registered (the service's client registers it; restore waits for that within its timeout).

mode = "deregister" (the hard form) DELETEs the instance and reads until Nacos no longer
has it.  A 1.x client undoes that on its next heartbeat (every 5 s): the server answers
20404 and the client registers again (BeatReactor).  On 2.x an instance a 2.x client
registered over gRPC cannot be deleted over HTTP at all (the server looks for an HTTP
client at ip:port, finds none, and answers "ok"); the read-back reports that.  restore()
registers the instance (POST) if Nacos does not have it, then enables it.

"Already gone" is success: an instance Nacos does not have is out of discovery.  The
detail returned and every error name the instance and the server's scheme://host:port/path,
never the token, the password or a query string.  Nothing outlives a cancelled run: each
request closes its connection on every path out.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gracerun.config import strings, values
from gracerun.config.kinds import Hook, opt
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from gracerun.clients.nacos import Client, Instance, InstanceKey
    from gracerun.core.service import Service

MODES = ("disable", "deregister")
API_VERSIONS = ("v1", "v2")
MAX_WEIGHT = 10000.0  # naming Constants.MAX_WEIGHT_VALUE; the minimum is 0
_FIRST_POLL = 0.05  # read-back interval, doubling up to _MAX_POLL
_MAX_POLL = 0.5


class NacosHook(Hook):
    """Take the instance out of Nacos discovery (run) and put it back (restore)."""

    server: str = opt(expand=strings.text, expect='the Nacos server URL, e.g. "http://${NACOS_ADDR}"',
                      help='the Nacos server, `"http://10.0.0.5:8848"`; several comma-separated '
                           "for a cluster; a path replaces the context path `/nacos`")
    service_name: str = opt(expand=strings.text, expect="the service name, without its group",
                            help="the service name as the service registers it, without the "
                                 "group")
    ip: str = opt(expand=strings.text, expect='this instance\'s address, e.g. "${POD_IP}"',
                  help="this instance's address as registered")
    port: int = opt(expand=values.whole(1, 65535), expect="this instance's port",
                    help="this instance's port as registered, 1-65535")
    mode: str = opt("disable", parse=values.Choice(*MODES),
                    help='`"disable"` (soft: `enabled=false`, which heartbeats do not undo; '
                         'put back with `enabled=true`) or `"deregister"` (hard: DELETE, '
                         "register at start-up)")
    api_version: str = opt("v1", parse=values.Choice(*API_VERSIONS),
                           help='`"v1"` (`/nacos/v1/ns`, Nacos 1.x and 2.x) or `"v2"` '
                                "(`/nacos/v2/ns`, Nacos 2.2+)")
    group: str = opt("DEFAULT_GROUP", expand=strings.text, help="the service's group")
    namespace: str = opt("public", expand=strings.text,
                         help="the namespace id (not its name)")
    cluster: str = opt("DEFAULT", expand=strings.text, help="the instance's cluster")
    ephemeral: bool = opt(True, parse=values.boolean,
                          help="true for client-registered (heartbeat) instances, false for "
                               "persistent ones")
    weight: float = opt(1.0, parse=values.number(0.0, MAX_WEIGHT),
                        help='the weight when `mode = "deregister"` registers the instance, '
                             "0-10000")
    metadata: Mapping[str, str] = opt({}, expand=strings.string_table,
                                      help='metadata (a table of strings) when `mode = '
                                           '"deregister"` registers the instance')
    username: str | None = opt(None, expand=strings.text,
                               help="when Nacos auth is on: the user to log in as")
    password: str | None = opt(None, expand=strings.text, secret=True,
                               help='its password: write `"${NACOS_PASSWORD}"`, never the '
                                    "secret itself; never logged")



RECORD = NacosHook  # the config record of this kind (lifecycle/hooks/__init__.py: KINDS)

def problems(hook: NacosHook) -> list[str]:
    """What is wrong with `hook`, one line each as "key: expected ...", for the config reader."""
    found = []
    for raw in hook.server.split(","):
        url = raw.strip()
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018  (raises ValueError for a bad port)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            found.append("server: expected http(s)://HOST:PORT[/context-path], comma-separated")
            break
        if parts.username is not None or parts.password is not None:
            found.append("server: expected no credentials in the URL; use username and password")
            break
        if parts.query or parts.fragment:
            found.append("server: expected no query or fragment")
            break
    if hook.mode not in MODES:
        found.append(f"mode: expected one of {', '.join(MODES)}, not {hook.mode!r}")
    if hook.api_version not in API_VERSIONS:
        found.append(f"api_version: expected v1 or v2, not {hook.api_version!r}")
    if not hook.service_name or "@@" in hook.service_name:
        found.append("service_name: expected the service name without its group")
    for key in ("group", "cluster", "ip"):
        if not getattr(hook, key):
            found.append(f"{key}: expected a non-empty string")
    if not 1 <= hook.port <= 65535:
        found.append(f"port: expected 1 to 65535, not {hook.port}")
    if not 0.0 <= hook.weight <= MAX_WEIGHT:
        found.append(f"weight: expected 0 to {MAX_WEIGHT:g}, not {hook.weight:g}")
    if any(not isinstance(v, str) for v in hook.metadata.values()):
        found.append("metadata: expected string values")
    if bool(hook.username) != bool(hook.password):
        found.append("username, password: expected both or neither")
    return found


async def run(hook: NacosHook, service: Service) -> str:
    """Take the instance out of discovery; its detail for the log."""
    return await _Run(hook).out()


async def restore(hook: NacosHook, service: Service) -> str:
    """Put the instance back into discovery; its detail for the log."""
    return await _Run(hook).back()


class _Run:
    """One run of the hook: its client, the instance, and the deadline of its timeout."""

    def __init__(self, hook: NacosHook) -> None:
        import asyncio

        from gracerun.clients import nacos

        self.hook = hook
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.deadline = self.start + hook.timeout
        self.key: InstanceKey = nacos.InstanceKey(
            service=hook.service_name, ip=hook.ip, port=hook.port, group=hook.group,
            namespace=hook.namespace, cluster=hook.cluster)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            from gracerun.clients import nacos

            self._client = nacos.Client(self.hook.server, self.hook.api_version,
                                        username=self.hook.username,
                                        password=self.hook.password)
        return self._client

    def left(self) -> float:
        remaining = self.deadline - self.loop.time()
        if remaining <= 0:
            raise HookTimedOut(f"nacos {self.key}: timed out after {self.hook.timeout:g}s")
        return remaining

    def took(self) -> str:
        return f"{(self.loop.time() - self.start) * 1000:.0f} ms"

    async def out(self) -> str:
        return await self._guarded(self._disable if self.hook.mode == "disable"
                                   else self._deregister)

    async def back(self) -> str:
        return await self._guarded(self._enable)

    async def _guarded(self, step: Callable[[], Awaitable[str]]) -> str:
        from gracerun.clients import nacos

        try:
            return await step()
        except nacos.NacosTimeout as exc:
            raise HookTimedOut(str(exc)) from None
        except nacos.NacosError as exc:
            raise HookFailed(str(exc)) from None

    # --------------------------------------------------------------- shutdown

    async def _disable(self) -> str:
        listed = await self.client.listed(self.key, self.left())
        if listed is None:
            registered = await self.client.detail(self.key, self.left())
            state = "already disabled" if registered else "not registered (already gone)"
            return f"{self.key}: {state}, out of discovery"
        await self.client.update(self.key, enabled=False, weight=listed.weight,
                                 metadata=listed.metadata, ephemeral=self._ephemeral(listed),
                                 timeout=self.left())

        async def gone() -> bool:
            return await self.client.listed(self.key, self.left()) is None

        await self._until(gone, "still in discovery after PUT enabled=false")
        return f"{self.key}: enabled=false, out of discovery after {self.took()}"

    async def _deregister(self) -> str:
        if await self.client.detail(self.key, self.left()) is None:
            return f"{self.key}: not registered (already gone)"
        listed = await self.client.listed(self.key, self.left())
        await self.client.deregister(self.key, ephemeral=self._ephemeral(listed),
                                     timeout=self.left())

        async def gone() -> bool:
            return await self.client.detail(self.key, self.left()) is None

        await self._until(gone, 'still registered after DELETE: Nacos 2.x cannot delete over '
                                'HTTP an instance a 2.x client registered over gRPC '
                                '(alibaba/nacos#7070); use mode = "disable"')
        return f"{self.key}: deregistered after {self.took()}"

    # --------------------------------------------------------------- start-up

    async def _enable(self) -> str:
        """In discovery once registered and enabled.  mode = "deregister" registers the
        instance when Nacos does not have it; "disable" waits for the service's own
        client to.  A registered instance left out of discovery is disabled (on 2.x an
        override from before a restart survives re-registration): enable it."""
        registered = enabled = seen = False

        async def back() -> bool:
            nonlocal registered, enabled, seen
            if await self.client.listed(self.key, self.left()) is not None:
                return True
            found = await self.client.detail(self.key, self.left())
            if found is None:
                if self.hook.mode == "deregister" and not registered:
                    await self.client.register(self.key, weight=self.hook.weight,
                                               metadata=dict(self.hook.metadata),
                                               ephemeral=self.hook.ephemeral,
                                               timeout=self.left())
                    registered = True
                    return await self.client.listed(self.key, self.left()) is not None
                return False
            seen = True
            if not enabled:
                await self.client.update(self.key, enabled=True, weight=found.weight,
                                         metadata=found.metadata,
                                         ephemeral=self.hook.ephemeral, timeout=self.left())
                enabled = True
                return await self.client.listed(self.key, self.left()) is not None
            return False

        def failure() -> str:
            if seen or registered:
                return "still out of discovery after PUT enabled=true"
            return ('not registered: with mode = "disable" the service\'s own Nacos client '
                    "registers the instance and gracerun only enables it")

        await self._until(back, failure)
        done = "registered" if registered else "enabled=true" if enabled else "already enabled"
        return f"{self.key}: {done}, in discovery after {self.took()}"

    # ---------------------------------------------------------------- helpers

    def _ephemeral(self, listed: Instance | None) -> bool:
        """As Nacos says it is, when it says; else as configured.  The flag must match:
        Nacos keeps ephemeral and persistent instances apart."""
        if listed is not None and listed.ephemeral is not None:
            return listed.ephemeral
        return self.hook.ephemeral

    async def _until(self, check: Callable[[], Awaitable[bool]],
                     failure: str | Callable[[], str]) -> None:
        """Poll `check` (read-back) until it holds, or fail when the timeout ends first."""
        import asyncio

        from gracerun.clients import nacos

        delay = _FIRST_POLL
        checked = False
        while True:
            try:
                if await check():
                    return
                checked = True
                spent = False
            except (HookTimedOut, nacos.NacosTimeout):
                if not checked:
                    raise
                spent = True  # the last read ran into the deadline: report what was read
            remaining = self.deadline - self.loop.time()
            if spent or remaining <= 0.01:
                text = failure if isinstance(failure, str) else failure()
                raise HookFailed(f"nacos {self.key}: {text} "
                                 f"(read back for {self.hook.timeout:g}s)")
            await asyncio.sleep(min(delay, remaining / 2))
            delay = min(delay * 2, _MAX_POLL)


def registers(hook: NacosHook) -> bool:
    """In deregister mode the start-up registers the instance; a shutdown before that
    has nothing of ours to take out.  In disable mode the service's own client registers
    it, so the shutdown always disables it."""
    return hook.mode == "deregister"
