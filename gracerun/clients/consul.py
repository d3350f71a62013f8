"""The Consul agent's HTTP API (Consul 1.15 and later), as the consul hook uses it.

    PUT /v1/agent/service/maintenance/:id?enable=true&reason=R   maintenance on
    PUT /v1/agent/service/maintenance/:id?enable=false           maintenance off
    PUT /v1/agent/service/deregister/:id                         remove the service
    PUT /v1/agent/service/register                               add it (JSON body)
    GET /v1/agent/health/service/id/:id                          its checks, read back

All of them go to the local agent, which owns the service's registration and syncs it to
the catalog before it answers a write.  The ACL token travels in the X-Consul-Token header,
never in the URL (Consul also reads ?token=, which would put it into access logs).

The agent answers a write with 200 and an empty body; 404 "Unknown service ID ..." for a
service it does not know, which the write calls return as False ("already gone"); 403
"Permission denied: ..." when the token lacks service:write, or "ACL not found" when the
token does not exist.  Errors are one line, "consul http://127.0.0.1:8500 web-1: <what>",
the URL reduced to scheme://host:port, the token never in them (nor a query string).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from gracerun.clients import http
from gracerun.clients.http import display_url
from gracerun.errors import GracerunError

MAINTENANCE_PREFIX = "_service_maintenance:"  # structs.ServiceMaintPrefix
_MAX_BODY = 1024 * 1024
# The starts of the agent's 404 texts that mean "no such service on this agent"
# (vetServiceUpdateWithAuthorizer, EnableServiceMaintenance); any other 404 (a proxy, a
# wrong address: "Invalid URL path") is an error, not "already gone".
_UNKNOWN_SERVICE = ("Unknown service ID", "Unknown service", "No service registered")
_QUERY = re.compile(r"\?\S+")


class ConsulError(GracerunError):
    """A request to the Consul agent failed: connection, HTTP status, or a bad answer."""


class ConsulTimeout(ConsulError):
    """The request did not complete within its timeout."""


@dataclass(frozen=True)
class Agent:
    """A Consul agent's HTTP API and the ACL token to use with it."""

    address: str  # "http://127.0.0.1:8500"
    token: str = field(default="", repr=False)

    @property
    def where(self) -> str:
        return f"consul {display_url(self.address)}"


@dataclass(frozen=True, slots=True)
class Check:
    check_id: str
    status: str  # passing, warning or critical
    name: str = ""


@dataclass(frozen=True, slots=True)
class ServiceHealth:
    """One service instance as the agent reports it."""

    service_id: str
    name: str
    # "maintenance" while in maintenance, else the worst of its checks: passing, warning
    # or critical (api.HealthChecks.AggregatedStatus)
    aggregated: str
    checks: tuple[Check, ...]

    @property
    def service_maintenance(self) -> bool:
        """The service's own maintenance check is there."""
        return any(c.check_id == MAINTENANCE_PREFIX + self.service_id for c in self.checks)

    @property
    def in_maintenance(self) -> bool:
        """The service's or its node's maintenance takes it out of queries."""
        return self.aggregated == "maintenance" or self.service_maintenance


async def maintenance(agent: Agent, service_id: str, enable: bool, reason: str,
                      timeout: float) -> bool:
    """Turn the service's maintenance mode on or off; False when the agent does not know it.

    On: the agent adds a critical check "_service_maintenance:<id>", which takes the
    instance out of health queries and DNS and which its own checks passing cannot clear.
    Turning it on twice, or off when it is off, is not an error.
    """
    if enable:
        query = "enable=true"
        if reason:
            query += "&reason=" + urllib.parse.quote(reason, safe="")
    else:
        query = "enable=false"
    return await _write(agent, service_id, "maintenance",
                        f"/v1/agent/service/maintenance/{_seg(service_id)}?{query}", None,
                        timeout)


async def deregister(agent: Agent, service_id: str, timeout: float) -> bool:
    """Remove the service and its checks from the agent; False when it does not know it."""
    return await _write(agent, service_id, "deregister",
                        f"/v1/agent/service/deregister/{_seg(service_id)}", None, timeout)


async def register(agent: Agent, registration: dict[str, Any], timeout: float) -> None:
    """Add (or replace) a service on the agent: `registration` is the JSON body."""
    import json

    body = json.dumps(registration).encode()
    await _write(agent, str(registration.get("ID", "")), "register",
                 "/v1/agent/service/register", body, timeout)


async def service_health(agent: Agent, service_id: str, timeout: float) -> ServiceHealth | None:
    """The service's checks on the agent; None when the agent does not know the service.

    The agent answers 200 (passing), 429 (warning) or 503 (critical) with the same JSON,
    and 404 for an unknown service.
    """
    path = f"/v1/agent/health/service/id/{_seg(service_id)}"
    resp = await _call(agent, "GET", path, None, timeout, service_id)
    if resp.status == 404 and _is_unknown_health(resp.body):
        return None
    if resp.status not in (200, 429, 503):
        raise _status_error(agent, service_id, "GET health", resp)
    return parse_health(agent, service_id, resp.body, resp.headers.get("content-type", ""))


def parse_health(agent: Agent, service_id: str, body: bytes,
                 content_type: str = "") -> ServiceHealth:
    """The agent's AgentServiceChecksInfo: {"AggregatedStatus", "Service", "Checks"}."""
    import json

    try:
        doc: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    service = doc.get("Service") if isinstance(doc, dict) else None
    raw_checks = doc.get("Checks") if isinstance(doc, dict) else None
    aggregated = doc.get("AggregatedStatus") if isinstance(doc, dict) else None
    if not isinstance(service, dict) or not isinstance(aggregated, str) \
            or not isinstance(raw_checks, list | None):
        raise ConsulError(f"{agent.where} {service_id}: GET health: the answer is not the "
                          f"agent's service health JSON ({_sample(body, content_type)})")
    checks = tuple(Check(check_id=str(c.get("CheckID", "")), status=str(c.get("Status", "")),
                         name=str(c.get("Name", "")))
                   for c in raw_checks or () if isinstance(c, dict))
    return ServiceHealth(service_id=str(service.get("ID", service_id)),
                         name=str(service.get("Service", "")), aggregated=aggregated,
                         checks=checks)



# ---------------------------------------------------------------- internals


async def _write(agent: Agent, service_id: str, what: str, path: str, body: bytes | None,
                 timeout: float) -> bool:
    resp = await _call(agent, "PUT", path, body, timeout, service_id)
    if resp.status == 200:
        return True
    if resp.status == 404 and _said(resp.body).startswith(_UNKNOWN_SERVICE):
        return False
    raise _status_error(agent, service_id, f"PUT {what}", resp)


async def _call(agent: Agent, method: str, path: str, body: bytes | None, timeout: float,
                service_id: str) -> http.Response:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if agent.token:
        headers["X-Consul-Token"] = agent.token
    url = agent.address.rstrip("/") + path
    where = f"{agent.where} {service_id}".rstrip()
    try:
        return await http.request(method, url, headers=headers, body=body,
                                  timeout=max(timeout, 0.0), max_body=_MAX_BODY)
    except http.HttpTimeout:
        raise ConsulTimeout(f"{where}: {method} {_path(path)}: timed out after "
                            f"{timeout:.3g}s") from None
    except http.HttpError as exc:
        reason = _reason(exc, method, url)
        raise ConsulError(f"{where}: {method} {_path(path)}: {_scrub(reason, agent)}") from None


def _status_error(agent: Agent, service_id: str, what: str, resp: http.Response) -> ConsulError:
    said = _scrub(_said(resp.body), agent)
    hint = ""
    if resp.status == 403:
        hint = " (check the ACL token: the hook needs service:write on the service)" \
            if not said.startswith("ACL not found") else " (the ACL token does not exist)"
    text = f": {said}" if said else ""
    return ConsulError(f"{agent.where} {service_id}: {what}: HTTP {resp.status}{text}{hint}")


def _is_unknown_health(body: bytes) -> bool:
    """The agent's 404 for an unknown ID carries {"Service": null, ...}; a 404 from
    something else (a proxy, a wrong path) does not."""
    import json

    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and "AggregatedStatus" in doc and doc.get("Service") is None


def _said(body: bytes) -> str:
    """The first line of a plain-text error body, trimmed for a message."""
    text = body[:400].decode("utf-8", "replace").strip().splitlines()
    line = text[0] if text else ""
    return "".join(c if c.isprintable() else "?" for c in line)[:200]


def _scrub(text: str, agent: Agent) -> str:
    """Whatever a server or proxy says (one that echoes the request, say), neither the
    token nor a query string reaches a message."""
    if agent.token:
        text = text.replace(agent.token, "***")
    return _QUERY.sub("", text)


def _seg(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _path(path: str) -> str:
    return path.split("?", 1)[0]


def _reason(exc: http.HttpError, method: str, url: str) -> str:
    """The HTTP client's message without its "METHOD URL: " prefix (the URL has a query)."""
    return exc.reason


def _sample(body: bytes, content_type: str) -> str:
    kind = content_type.partition(";")[0].strip()[:40] or "no Content-Type"
    return f"{kind}, {len(body)} bytes"
