"""Eureka's REST API, as the eureka hook uses it (Eureka server 1.10.x, and Spring Cloud
Netflix's Eureka server, which embeds the same resources).

    GET    {base}/apps/{APP}/{ID}                        the instance (Accept: application/json)
    PUT    {base}/apps/{APP}/{ID}/status?value=S         set a status override
    DELETE {base}/apps/{APP}/{ID}/status?value=UP        remove the override, status becomes UP
    DELETE {base}/apps/{APP}/{ID}                        cancel the lease (deregister)

`base` is the server's URL with its path: "http://eureka:8761/eureka" for Spring Cloud,
"http://eureka:8080/eureka/v2" for Netflix's WAR.  Every call answers 404 (empty body) for an
instance the server does not know; the write calls return False then, so that the caller can
treat "not registered" as "already gone".  Eureka has no auth of its own; a Spring Security
filter in front of it asks for HTTP basic auth (401), which `Endpoint.username/password`
answer.

Errors are one line, "eureka http://host:8761/eureka ORDERS/i-1: <what>", with the URL
reduced to scheme://host:port/path: no credentials and no query string ever appear in them.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from gracerun.clients import http
from gracerun.clients.http import display_url
from gracerun.errors import GracerunError

# The override value Eureka reports when there is none (InstanceInfo.overriddenStatus).
NO_OVERRIDE = "UNKNOWN"
_MAX_BODY = 256 * 1024  # one instance's JSON is about 1-2 kB
_MAX_REGISTRY = 32 * 1024 * 1024  # the whole registry, compact: ~200 bytes an instance


class EurekaError(GracerunError):
    """A request to Eureka failed: connection, HTTP status, or an answer we cannot read."""


class EurekaTimeout(EurekaError):
    """The request did not complete within its timeout."""


@dataclass(frozen=True)
class Endpoint:
    """One instance on one Eureka server."""

    base: str  # the server URL with its path, e.g. "http://127.0.0.1:8761/eureka"
    app: str  # application name; Eureka upper-cases it, so any case names the same app
    instance_id: str
    username: str = ""  # HTTP basic auth, when a Spring Security filter guards the server
    password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """The instance resource: {base}/apps/{APP}/{ID}, each segment percent-encoded."""
        app = urllib.parse.quote(self.app, safe="")
        iid = urllib.parse.quote(self.instance_id, safe="")
        return f"{self.base.rstrip('/')}/apps/{app}/{iid}"

    @property
    def where(self) -> str:
        """How messages name this instance: the server (redacted) and APP/ID."""
        return f"eureka {display_url(self.base)} {self.app.upper()}/{self.instance_id}"


@dataclass(frozen=True, slots=True)
class Instance:
    """What the server says about the instance."""

    status: str  # UP, DOWN, STARTING, OUT_OF_SERVICE or UNKNOWN
    overridden: str  # the override in force, NO_OVERRIDE when there is none

    @property
    def has_override(self) -> bool:
        return self.overridden not in (NO_OVERRIDE, "")


async def instance(ep: Endpoint, timeout: float) -> Instance | None:
    """GET the instance; None when the server does not know it (404)."""
    resp = await _call(ep, "GET", "", timeout)
    if resp.status == 404:
        return None
    _expect(ep, "GET", resp, 200)
    return parse_instance(ep, resp.body, resp.headers.get("content-type", ""))


async def set_status(ep: Endpoint, status: str, timeout: float) -> bool:
    """PUT the status override (OUT_OF_SERVICE); False when the instance is not registered.

    The override lives on the server, apart from the instance's own registration: renewals
    (heartbeats) keep it, and a re-registration of the same ID while the lease exists takes
    it on again.  Only a cancel, a lease expiry or removing it ends it.
    """
    resp = await _call(ep, "PUT", f"/status?value={status}", timeout)
    if resp.status == 404:
        return False
    _expect(ep, "PUT status", resp, 200)
    return True


async def remove_override(ep: Endpoint, timeout: float) -> bool:
    """DELETE the status override, leaving the instance UP; False when it is not registered.

    `value=UP` matters: without it the server sets the status to UNKNOWN, and the next
    heartbeat answers 404 so that the client registers again (InstanceResource.
    deleteStatusUpdate, AbstractInstanceRegistry.renew).  With it, the instance is UP at once.
    """
    resp = await _call(ep, "DELETE", "/status?value=UP", timeout)
    if resp.status == 404:
        return False
    _expect(ep, "DELETE status", resp, 200)
    return True


async def cancel(ep: Endpoint, timeout: float) -> bool:
    """DELETE the instance (cancel its lease); False when it was not registered."""
    resp = await _call(ep, "DELETE", "", timeout)
    if resp.status == 404:
        return False
    _expect(ep, "DELETE", resp, 200)
    return True


async def check_api(ep: Endpoint, timeout: float) -> None:
    """Make sure `base` is a Eureka server's API, or raise EurekaError naming the URL.

    The instance calls answer 404 both for an instance the server does not know and for a
    URL that is not Eureka's API at all (a base without "/v2" on a Netflix WAR, a typo):
    taking a 404 for "already gone" must not turn a misconfigured URL into silent success.
    GET {base}/apps (the compact form: a few hundred bytes per instance) answers
    {"applications": ...} on every Eureka server, whatever is registered.
    """
    import json

    url = f"{ep.base.rstrip('/')}/apps"
    resp = await _call(ep, "GET", "", timeout, url=url, max_body=_MAX_REGISTRY,
                       extra={"X-Eureka-Accept": "compact"})
    _expect(ep, "GET /apps", resp, 200, no_api=True)
    try:
        doc = json.loads(resp.body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict) or "applications" not in doc:
        raise EurekaError(f"{ep.where}: GET /apps: not Eureka's answer "
                          f"({_sample(resp.body, resp.headers.get('content-type', ''))}); "
                          "check the url")


def parse_instance(ep: Endpoint, body: bytes, content_type: str = "") -> Instance:
    """The status and override out of {"instance": {...}}.

    Eureka 1.x writes the override as "overriddenStatus"; some releases wrote
    "overriddenstatus" (Netflix/eureka #1051), which its own decoder still accepts, so do we.
    """
    import json

    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    info = doc.get("instance") if isinstance(doc, dict) else None
    status = info.get("status") if isinstance(info, dict) else None
    if not isinstance(info, dict) or not isinstance(status, str) or not status:
        raise EurekaError(f"{ep.where}: GET: the answer is not an instance's JSON "
                          f"({_sample(body, content_type)})")
    overridden = info.get("overriddenStatus", info.get("overriddenstatus", NO_OVERRIDE))
    return Instance(status=status, overridden=overridden if isinstance(overridden, str)
                    else NO_OVERRIDE)



async def _call(ep: Endpoint, method: str, tail: str, timeout: float, *,
                url: str | None = None, max_body: int = _MAX_BODY,
                extra: dict[str, str] | None = None) -> http.Response:
    headers = {"Accept": "application/json", **(extra or {})}
    if ep.username or ep.password:
        import base64

        pair = f"{ep.username}:{ep.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    url = url or ep.url + tail
    try:
        return await http.request(method, url, headers=headers, timeout=max(timeout, 0.0),
                                  max_body=max_body)
    except http.HttpTimeout:
        raise EurekaTimeout(f"{ep.where}: {method}: timed out after {timeout:.3g}s") from None
    except http.HttpError as exc:
        raise EurekaError(f"{ep.where}: {method}: {_reason(exc, method, url)}") from None


def _expect(ep: Endpoint, what: str, resp: http.Response, status: int,
            no_api: bool = False) -> None:
    if resp.status == status:
        return
    hint = ""
    if no_api and resp.status == 404:
        hint = (" (no Eureka API at this URL: it needs the server's path, such as "
                "/eureka or /eureka/v2)")
    elif resp.status == 401:
        hint = " (the server wants HTTP basic auth: check username and password)"
    elif resp.status == 403:
        hint = " (the credentials are not allowed to change instances)"
    raise EurekaError(f"{ep.where}: {what}: HTTP {resp.status} {resp.reason}{hint}".rstrip())


def _reason(exc: http.HttpError, method: str, url: str) -> str:
    """The HTTP client's message without its "METHOD URL: " prefix (the URL has a query)."""
    return exc.reason


def _sample(body: bytes, content_type: str) -> str:
    """What an unexpected body was, without quoting it: a server that echoes the request
    would otherwise put our query string (or worse) into the message."""
    kind = content_type.partition(";")[0].strip()[:40] or "no Content-Type"
    return f"{kind}, {len(body)} bytes"
