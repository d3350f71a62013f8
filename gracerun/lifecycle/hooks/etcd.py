"""etcd: the instance's key in etcd v3, put at start-up and taken away at shutdown.

Two modes, chosen by `mode`:

    lease   (default) restore(): grant a lease of `ttl` seconds, put the key with it, and
            keep_alive() renews the lease every ttl/3 while the service runs.  run(): revoke
            the lease, which deletes the key in the same step.  If gracerun dies without
            running run() (SIGKILL, the node is lost), the key goes by itself when the lease
            expires: nothing stale stays in discovery for longer than `ttl`.
    delete  restore(): put the key without a lease.  run(): delete the key.  For keys that
            must outlive gracerun (nothing renews them, nothing expires them).

Both read back the key with a linearizable range until it shows (restore: our value, on our
lease) or is gone (run), within the hook's timeout.  "Already gone" is success: the lease
expired or was revoked, or the key was deleted.  There is no soft/hard pair as in Nacos or
Consul: nothing in etcd re-creates a deleted key, so revoking or deleting is final.

The registration's state (the lease ID between restore() and run(), the keep-alive task,
the auth token) lives in a module-level table keyed by what identifies the registration in
etcd: (endpoint, gateway, key, username); `registration(hook)` returns it.  Keying by the
registration rather than passing a state object keeps the one hook protocol
(`run(hook, service)`, `restore(hook, service)`) that the phase runner calls for every kind.

How the start-up sequence uses keep_alive() (lease mode; it returns at once in delete mode):

    await etcd.restore(hook, service)            # may fail: keep_alive() registers later
    stop = asyncio.Event()
    task = asyncio.create_task(etcd.keep_alive(hook, service, stop))
    ...                                          # the service runs
    await etcd.run(hook, service)                # stops the keep-alive itself, then revokes
    stop.set() (or task.cancel())                # harmless if run() already stopped it

keep_alive() never raises for etcd's failures (it logs them and retries), only returns when
`stop` is set or run() began, or raises CancelledError when cancelled.  If restore() failed
(etcd down at start-up) or the lease expired (etcd unreachable for longer than `ttl`),
keep_alive() grants a new lease and puts the key again once etcd answers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from gracerun.clients import etcd
from gracerun.config import strings, values
from gracerun.config.kinds import Hook, opt
from gracerun.core.log import INFO, WARNING, event
from gracerun.lifecycle.hooks import HookFailed, HookTimedOut

if TYPE_CHECKING:
    import asyncio

    from gracerun.core.service import Service

MODES = ("lease", "delete")
_POLL = 0.05  # read-back interval
_RETRY = 1.0  # keep-alive retry after a failed renewal, at most


class EtcdHook(Hook):
    """The instance's key in etcd v3, through etcd's JSON gateway."""

    # etcd's client URL, "http://127.0.0.1:2379" or https://...; no credentials in it.
    endpoint: str = opt(expand=strings.url, expect='etcd\'s client URL, e.g. "http://etcd:2379"',
                        help="etcd's client URL (http or https); no credentials in it")
    key: str = opt(expand=strings.text,
                   expect='the instance\'s key, e.g. "/services/web/${POD_IP}:8080"',
                   help="the instance's key")
    value: str = opt("", expand=strings.text, shown='{"host": H, "port": P}',
                     help='what to put (any text, usually JSON); empty: `{"host": H, '
                          '"port": P}` from the key\'s last segment `"H:P"`')
    ttl: float = opt(10.0, parse=values.positive_duration,
                     help="the lease's TTL, whole seconds (rounded up); lease mode only")
    mode: str = opt("lease", parse=values.Choice(*MODES),
                    help='`"lease"`: put at start-up with a lease kept alive while the service '
                         'runs, revoked at shutdown; `"delete"`: put without a lease, deleted '
                         "at shutdown")
    gateway: str = opt("v3", parse=values.Choice("v3", "v3beta", "v3alpha"),
                       help='the JSON gateway\'s prefix: `"v3"` (etcd 3.4+), `"v3beta"` '
                            '(3.3, 3.4), `"v3alpha"` (3.2, 3.3)')
    username: str = opt("", expand=strings.text, help="etcd user, when auth is enabled")
    password: str = opt("", expand=strings.text, secret=True,
                        help='its password: write `"${ETCD_PASSWORD}"`; never logged')



RECORD = EtcdHook  # the config record of this kind (lifecycle/hooks/__init__.py: KINDS)

def validate(hook: EtcdHook) -> list[str]:
    """Problems with the hook's fields, one "key: ..., expected ..." line each ([] if none)."""
    problems = []
    try:
        etcd.Etcd(hook.endpoint)
    except etcd.EtcdError as exc:
        problems.append(f"endpoint: {str(exc).partition(': ')[2]}")
    if hook.gateway not in etcd.GATEWAYS:
        problems.append(f"gateway: expected one of {', '.join(etcd.GATEWAYS)}, got "
                        f"{hook.gateway!r}")
    if not hook.key:
        problems.append('key: empty, expected the instance\'s key such as '
                        '"/services/web/10.0.0.5:8080"')
    elif not hook.value and _default_value(hook.key) is None:
        problems.append(f'value: missing, and the key\'s last segment {_last(hook.key)!r} is '
                        f'not "HOST:PORT" to build {{"host": ..., "port": ...}} from')
    if hook.mode not in MODES:
        problems.append(f"mode: expected one of {', '.join(MODES)}, got {hook.mode!r}")
    if not 0 < hook.ttl <= 9_000_000_000:  # etcd's MaxLeaseTTL
        problems.append(f'ttl: expected a duration greater than zero like "10s", got '
                        f'{hook.ttl:g}s')
    if bool(hook.username) != bool(hook.password):
        problems.append("username, password: expected both or neither")
    return problems


class Registration:
    """One key's registration, shared by restore(), keep_alive() and run()."""

    def __init__(self, hook: EtcdHook) -> None:
        self.client = etcd.Etcd(hook.endpoint, gateway=hook.gateway, username=hook.username,
                                password=hook.password)
        self.lease = 0  # ours, from restore() or keep_alive(); 0: none
        self.ttl = 0  # the TTL etcd granted it
        self.withdrawn = False  # run() began: nothing may put the key again
        self.keeper: asyncio.Task[None] | None = None  # the running keep_alive()


_registrations: dict[tuple[str, str, str, str], Registration] = {}


def registration(hook: EtcdHook) -> Registration:
    """The state of the registration `hook` names (created on first use)."""
    ident = (hook.endpoint.rstrip("/"), hook.gateway, hook.key, hook.username)
    reg = _registrations.get(ident)
    if reg is None:
        reg = _registrations[ident] = Registration(hook)
    return reg


async def restore(hook: EtcdHook, service: Service) -> str:
    """Put the key (lease mode: with a new lease); read it back."""
    import asyncio

    _check(hook)
    reg = registration(hook)
    reg.withdrawn = False
    value = _value(hook)
    try:
        async with asyncio.timeout(hook.timeout):
            detail = await _register(hook, reg, value, hook.timeout)
            while not reg.withdrawn:  # else run() began meanwhile: it decides
                kv = await reg.client.get(hook.key, hook.timeout)
                if kv is not None and kv.value == value and kv.lease == reg.lease:
                    return detail
                await asyncio.sleep(_POLL)
            return detail
    except TimeoutError:
        raise HookTimedOut(f"{reg.client.where}: {hook.key} not in place after "
                           f"{hook.timeout:g}s") from None
    except etcd.EtcdTimeout:
        raise HookTimedOut(f"{reg.client.where}: timed out after {hook.timeout:g}s") from None
    except etcd.EtcdError as exc:
        raise HookFailed(str(exc)) from None


async def run(hook: EtcdHook, service: Service) -> str:
    """Revoke the lease (lease mode) or delete the key; read back that the key is gone."""
    import asyncio

    _check(hook)
    reg = registration(hook)
    reg.withdrawn = True
    keeper, reg.keeper = reg.keeper, None
    try:
        async with asyncio.timeout(hook.timeout):
            if keeper is not None and keeper is not asyncio.current_task() \
                    and not keeper.done():
                # A renewal in flight could otherwise put the key back after the revoke.
                keeper.cancel()
                await asyncio.wait([keeper])
            if hook.mode == "lease" and reg.lease:
                lease, reg.lease = reg.lease, 0
                found = await reg.client.revoke(lease, hook.timeout)
                detail = (f"revoked lease {lease:x}" if found
                          else f"lease {lease:x} already gone")
            else:
                # Delete mode, or no lease of ours (restore() never succeeded): the key
                # alone, so that other keys on someone else's lease stay.
                deleted = await reg.client.delete(hook.key, hook.timeout)
                detail = "deleted" if deleted else "already gone"
            while await reg.client.get(hook.key, hook.timeout) is not None:
                await asyncio.sleep(_POLL)
    except TimeoutError:
        raise HookTimedOut(f"{reg.client.where}: {hook.key} still there after "
                           f"{hook.timeout:g}s") from None
    except etcd.EtcdTimeout:
        raise HookTimedOut(f"{reg.client.where}: timed out after {hook.timeout:g}s") from None
    except etcd.EtcdError as exc:
        raise HookFailed(str(exc)) from None
    return f"{hook.key}: {detail}"


async def keep_alive(hook: EtcdHook, service: Service,
                     stop: asyncio.Event | None = None) -> None:
    """Renew the lease every ttl/3 until `stop` is set or run() begins (lease mode only).

    Each renewal is bounded by min(ttl/3, the hook's timeout).  Failures are logged (once
    per streak) and retried sooner; a lease found gone, or never granted, is granted anew
    and the key put again.  Never raises but CancelledError.
    """
    import asyncio

    if hook.mode != "lease":
        return
    problems = validate(hook)
    if problems:
        event(WARNING, "etcd keep-alive not started", hook=hook.name,
              error=problems[0])
        return
    reg = registration(hook)
    reg.keeper = asyncio.current_task()
    stop = stop or asyncio.Event()
    value = _value(hook)
    failing = False
    delay = _interval(hook, reg)
    while not reg.withdrawn:
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            pass
        if reg.withdrawn:
            return
        bound = min(_interval(hook, reg), hook.timeout)
        try:
            if reg.lease and await reg.client.keepalive(reg.lease, bound) > 0:
                note = ""
            else:
                note = ("lease expired; registered again" if reg.lease
                        else "registered (the start-up registration had failed)")
                await _register(hook, reg, value, bound)
        except etcd.EtcdError as exc:
            if not failing:
                event(WARNING, "etcd keep-alive failed", hook=hook.name,
                      error=str(exc))
            failing = True
            delay = min(_interval(hook, reg), _RETRY)
            continue
        if failing or note:
            event(WARNING if note else INFO,
                  f"etcd keep-alive: {note or 'renewing again'}", hook=hook.name,
                  key=hook.key, lease=f"{reg.lease:x}")
        failing = False
        delay = _interval(hook, reg)


# ------------------------------------------------------------------ internals


async def _register(hook: EtcdHook, reg: Registration, value: bytes, timeout: float) -> str:
    """Put the key (with a new lease in lease mode); records the lease before the put."""
    import time

    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    if hook.mode == "delete":
        reg.lease = 0
        revision = await reg.client.put(hook.key, value, 0, left())
        return f"{hook.key}: put (revision {revision}, no lease)"
    # A lease we still hold (restore() after run() was cancelled, or twice) is reused.
    if not reg.lease or await reg.client.keepalive(reg.lease, left()) <= 0:
        reg.lease, reg.ttl = await reg.client.grant(math.ceil(hook.ttl), left())
    if reg.withdrawn:  # run() began while we were granting: do not put the key back
        return f"{hook.key}: withdrawn meanwhile"
    revision = await reg.client.put(hook.key, value, reg.lease, left())
    return f"{hook.key}: put (revision {revision}) with lease {reg.lease:x} (ttl {reg.ttl}s)"


def _interval(hook: EtcdHook, reg: Registration) -> float:
    return max(0.5, (reg.ttl or math.ceil(hook.ttl)) / 3)


def _check(hook: EtcdHook) -> None:
    problems = validate(hook)
    if problems:
        raise HookFailed(f"etcd hook {hook.name}: {problems[0]}")


def _value(hook: EtcdHook) -> bytes:
    if hook.value:
        return hook.value.encode()
    default = _default_value(hook.key)
    assert default is not None  # validate() said so
    return default


def _last(key: str) -> str:
    return key.rstrip("/").rpartition("/")[2]


def _default_value(key: str) -> bytes | None:
    """{"host": H, "port": P} from the key's last segment "H:P" ("[::1]:80" too), or None."""
    import json

    host, sep, port = _last(key).rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    document: dict[str, Any] = {"host": host, "port": int(port)}
    return json.dumps(document, separators=(",", ":")).encode()


def registers(hook: EtcdHook) -> bool:
    """gracerun puts the key itself at start-up: a shutdown before that has nothing of
    ours to delete (lifecycle/startup.py)."""
    return True
