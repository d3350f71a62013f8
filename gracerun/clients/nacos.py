"""A client for the Nacos naming open API (v1, and v2 of Nacos 2.2+), for the nacos hook.

What it calls, under the server's context path (``/nacos`` unless the server URL has a
path of its own):

    POST   /v1/auth/users/login      username + password (form body) -> {"accessToken": ...}
    GET    /v1/ns/instance/list      the instances discovery hands out (enabled ones only)
    GET    /v1/ns/instance           one instance, enabled or not (404 when not registered)
    PUT    /v1/ns/instance           update: enabled, weight, metadata
    POST   /v1/ns/instance           register
    DELETE /v1/ns/instance           deregister

and the same under ``/v2/ns/instance`` with ``api="v2"``, whose answers are wrapped in
``{"code": 0, "message": "success", "data": ...}``.  Parameters go in the query string, as
the Nacos Java client sends them.  The access token goes in an ``Authorization: Bearer``
header, which Nacos 1.2+ reads before the ``accessToken`` parameter (NacosAuthManager.
resolveToken in 1.x, NacosAuthPluginService.resolveToken in 2.x): a query parameter would
land in Nacos's access log, whose pattern logs the request line.  The password goes in the
login request's form body for the same reason.

Several servers (a Nacos cluster) may be given: a request goes to the one that answered
last, and moves on to the next when a server cannot be reached, times out, or answers
502/503/504; any node serves any request (Nacos forwards writes to the node responsible).
Every call takes ``timeout``, the seconds left, and never runs past it.  Failures raise
NacosError with one line naming the server and path, never the query string, the token or
the password.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from gracerun.clients import http
from gracerun.core.log import WARNING, event
from gracerun.errors import GracerunError

API_VERSIONS = ("v1", "v2")
DEFAULT_CONTEXT_PATH = "/nacos"
MAX_LIST_BODY = 8 * 1024 * 1024  # a service with thousands of instances lists a few MB
_FAILOVER_STATUSES = frozenset({502, 503, 504})
# v2's ErrorCode values that mean "no such instance" (api/model/v2/ErrorCode.java)
_V2_NOT_FOUND = frozenset({20004, 21003})


class NacosError(GracerunError):
    """A Nacos request failed; one line starting "nacos <server>/<path>: "."""


class NacosTimeout(NacosError):
    """The request did not complete in the time it was given."""


class NacosAuthError(NacosError):
    """Login was refused, or the server refused the request (HTTP 403)."""


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """Which instance: Nacos names one by namespace, group, service, cluster, ip and port."""

    service: str
    ip: str
    port: int
    group: str = "DEFAULT_GROUP"
    namespace: str = "public"
    cluster: str = "DEFAULT"

    def __str__(self) -> str:
        where = "" if self.namespace in ("", "public") else f" namespace {self.namespace}"
        return f"{self.group}@@{self.service} {self.ip}:{self.port} cluster {self.cluster}{where}"


@dataclass(frozen=True, slots=True)
class Instance:
    """An instance as Nacos reports it.  ``enabled`` and ``ephemeral`` are None when the
    answer did not say (the detail API of 1.4 and 2.2 omits both)."""

    ip: str
    port: int
    cluster: str
    weight: float = 1.0
    healthy: bool = True
    enabled: bool | None = None
    ephemeral: bool | None = None
    metadata: dict[str, str] = field(default_factory=dict)


def server_urls(servers: str) -> tuple[str, ...]:
    """The base URLs (context path included) of a comma-separated server list.

    "http://10.0.0.5:8848" means "http://10.0.0.5:8848/nacos"; a URL with a path keeps it
    ("http://lb/registry" for a server run with another context path).  Raises NacosError
    for an empty list or a URL that could not be requested (see http.parse_url).
    """
    urls = []
    for raw in servers.split(","):
        url = raw.strip().rstrip("/")
        if not url:
            continue
        try:
            http.parse_url(url)
        except http.HttpError as exc:
            raise NacosError(f"nacos: {exc}") from None
        if "?" in url or "#" in url:
            raise NacosError(f"nacos: bad server URL {_public(url)!r}: no query or fragment")
        if not urllib.parse.urlsplit(url).path:
            url += DEFAULT_CONTEXT_PATH
        urls.append(url)
    if not urls:
        raise NacosError("nacos: no server URL")
    return tuple(urls)


class Client:
    """One hook run's conversation with Nacos: the servers, the API version, and the
    access token once logged in (login happens before the first call when a username is
    set; with none, requests go without a token, as they must when auth is off)."""

    def __init__(self, servers: str, api: str = "v1", *, username: str | None = None,
                 password: str | None = None) -> None:
        if api not in API_VERSIONS:
            raise NacosError(f"nacos: bad api_version {api!r}, expected v1 or v2")
        self.servers = server_urls(servers)
        self.api = api
        self._username = username or None
        self._password = password or ""
        self._token: str | None = None
        self._current = 0  # index of the server that answered last

    # ------------------------------------------------------------------ reads

    async def listed(self, key: InstanceKey, timeout: float) -> Instance | None:
        """The instance as discovery hands it out, or None when discovery leaves it out.

        ``instance/list`` with healthyOnly=false: Nacos drops disabled instances from it
        (Service.srvIPs filtering in 1.4, ServiceUtil.selectInstances in 2.x), so absence
        means out of discovery whether the instance is disabled or gone.
        """
        params = self._names(key)
        params["clusters" if self.api == "v1" else "clusterName"] = key.cluster
        params["healthyOnly"] = "false"
        answer = await self._json("GET", "/ns/instance/list", params, timeout,
                                  max_body=MAX_LIST_BODY)
        hosts = answer.get("hosts") if isinstance(answer, dict) else None
        if not isinstance(hosts, list):
            raise NacosError(f"{self._where('/ns/instance/list')}: bad answer: no hosts list")
        for host in hosts:
            if isinstance(host, dict) and host.get("ip") == key.ip \
                    and host.get("port") == key.port \
                    and host.get("clusterName", key.cluster) == key.cluster:
                return _instance(host, key, self._where("/ns/instance/list"))
        return None

    async def detail(self, key: InstanceKey, timeout: float) -> Instance | None:
        """The registered instance, enabled or not; None when Nacos has no such instance."""
        params = self._names(key)
        params.update(clusterName=key.cluster, ip=key.ip, port=str(key.port))
        answer = await self._json("GET", "/ns/instance", params, timeout, not_found=True)
        if answer is None:
            return None
        if not isinstance(answer, dict):
            raise NacosError(f"{self._where('/ns/instance')}: bad answer: not an object")
        return _instance(answer, key, self._where("/ns/instance"))

    # ----------------------------------------------------------------- writes

    async def update(self, key: InstanceKey, *, enabled: bool, weight: float,
                     metadata: dict[str, str], ephemeral: bool, timeout: float) -> None:
        """PUT the instance with `enabled`, sending its weight and metadata back as they were.

        This is what the Nacos console's online/offline button sends (InstanceTable.js
        switchState).  The weight and metadata must be sent: Nacos 1.x treats an update from
        a non-Java client as a registration and replaces the instance with what it is
        given; 2.x stores them as the instance's metadata override.
        """
        params = self._instance_params(key, ephemeral)
        params.update(weight=_number(weight), enabled=_bool(enabled),
                      metadata=json.dumps(metadata, separators=(",", ":")))
        await self._write("PUT", params, timeout)

    async def register(self, key: InstanceKey, *, weight: float, metadata: dict[str, str],
                       ephemeral: bool, timeout: float) -> None:
        params = self._instance_params(key, ephemeral)
        params.update(weight=_number(weight), enabled="true", healthy="true",
                      metadata=json.dumps(metadata, separators=(",", ":")))
        await self._write("POST", params, timeout)

    async def deregister(self, key: InstanceKey, *, ephemeral: bool, timeout: float) -> None:
        """DELETE the instance.  Nacos answers "ok" for an instance it does not have."""
        await self._write("DELETE", self._instance_params(key, ephemeral), timeout)

    # -------------------------------------------------------------- internals

    def _names(self, key: InstanceKey) -> dict[str, str]:
        return {"serviceName": key.service, "groupName": key.group,
                "namespaceId": key.namespace or "public"}

    def _instance_params(self, key: InstanceKey, ephemeral: bool) -> dict[str, str]:
        params = self._names(key)
        params.update(clusterName=key.cluster, ip=key.ip, port=str(key.port),
                      ephemeral=_bool(ephemeral))
        return params

    def _path(self, path: str) -> str:
        return f"/{self.api}{path}"

    def _where(self, path: str) -> str:
        return f"nacos {_public(self.servers[self._current])}{self._path(path)}"

    async def _write(self, method: str, params: dict[str, str], timeout: float) -> None:
        answer = await self._call(method, "/ns/instance", params, timeout)
        where = self._where("/ns/instance")
        if self.api == "v1":
            if answer.body.strip() != b"ok":
                raise NacosError(f"{where}: {method} answered {_text(answer.body)!r}, "
                                 f"expected 'ok'")
            return
        data = _v2_data(answer.body, where)
        if data != "ok":
            raise NacosError(f"{where}: {method} answered {str(data)[:100]!r}, expected 'ok'")

    async def _json(self, method: str, path: str, params: dict[str, str], timeout: float, *,
                    not_found: bool = False, max_body: int = http.MAX_BODY) -> Any:
        """The answer's JSON (v2: its data).  With `not_found`, None for Nacos's own 404."""
        answer = await self._call(method, path, params, timeout, not_found=not_found,
                                  max_body=max_body)
        if answer.status == 404:
            return None
        where = self._where(path)
        if self.api == "v2":
            return _v2_data(answer.body, where)
        try:
            return json.loads(answer.body)
        except ValueError:
            raise NacosError(f"{where}: bad answer: not JSON: {_text(answer.body)!r}") from None

    async def _call(self, method: str, path: str, params: dict[str, str], timeout: float, *,
                    not_found: bool = False, max_body: int = http.MAX_BODY) -> http.Response:
        """One API request, logged in first if need be; a 2xx answer, or Nacos's own 404
        when `not_found` allows it; anything else raises NacosError."""
        deadline = time.monotonic() + timeout
        if self._username is not None and self._token is None:
            await self._login(deadline)
        answer = await self._send(method, self._path(path), params, deadline,
                                  max_body=max_body)
        if answer.status == 403 and self._username is not None \
                and _message(answer.body) in ("token expired!", "token invalid!"):
            await self._login(deadline)  # a token can expire between calls: once more
            answer = await self._send(method, self._path(path), params, deadline,
                                      max_body=max_body)
        where = self._where(path)
        if 200 <= answer.status < 300:
            return answer
        if answer.status == 404 and not _is_nacos_not_found(answer.body, self.api):
            hint = (' (api_version "v2" needs Nacos 2.2 or later)' if self.api == "v2"
                    else " (check the server URL and its context path)")
            raise NacosError(f"{where}: HTTP 404, no such API on this server{hint}")
        if answer.status == 404 and not_found:
            return answer
        detail = self._scrub(_message(answer.body))
        if answer.status == 403:
            hint = ("" if self._username is not None
                    else " (auth is on: set username and password)")
            raise NacosAuthError(f"{where}: HTTP 403 forbidden: {detail}{hint}")
        raise NacosError(f"{where}: HTTP {answer.status}: {detail}")

    async def _login(self, deadline: float) -> None:
        # Without the old token: Nacos's login reads a token before username and password.
        self._token = None
        form = urllib.parse.urlencode({"username": self._username or "",
                                       "password": self._password}).encode()
        answer = await self._send("POST", "/v1/auth/users/login", {}, deadline, body=form)
        where = f"nacos {_public(self.servers[self._current])}/v1/auth/users/login"
        if answer.status != 200:
            detail = self._scrub(_message(answer.body))
            error = NacosAuthError if answer.status in (401, 403) else NacosError
            raise error(f"{where}: login as {self._username!r} refused: "
                        f"HTTP {answer.status}: {detail}")
        try:
            token = json.loads(answer.body).get("accessToken")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise NacosError(f"{where}: bad login answer: no accessToken")
        self._token = token

    async def _send(self, method: str, path: str, params: dict[str, str], deadline: float, *,
                    body: bytes | None = None, max_body: int = http.MAX_BODY) -> http.Response:
        """Send to the current server, moving on to the next ones when one cannot answer.

        With servers still untried, each attempt gets an equal share of the time left, so
        that one server that hangs cannot spend it all.
        """
        headers = {"Accept": "application/json, text/plain"}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        count = len(self.servers)
        failures: list[str] = []
        timed_out = False
        for attempt in range(count):
            index = (self._current + attempt) % count
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            share = left / (count - attempt)
            base = self.servers[index]
            url = f"{base}{path}{query}"
            try:
                answer = await http.request(method, url, headers=headers, body=body,
                                            timeout=share, max_body=max_body)
            except http.HttpTimeout:
                timed_out = True
                failures.append(f"{_public(base)}: timed out after {share:.3g}s")
                continue
            except http.HttpError as exc:
                # http's message is "METHOD URL: reason"; the URL carries the query string
                reason = exc.reason
                failures.append(f"{_public(base)}: {reason}")
                continue
            if answer.status in _FAILOVER_STATUSES and attempt + 1 < count:
                failures.append(f"{_public(base)}: HTTP {answer.status}")
                continue
            if failures:
                event(WARNING, "nacos: server(s) failed, another answered",
                      failed="; ".join(failures), answered=_public(base))
            self._current = index
            return answer
        # A timeout means the time is spent: the last attempt had all that was left.
        error = NacosTimeout if timed_out else NacosError
        raise error(f"nacos {method} {path}: " + ("; ".join(failures) or "no time left"))

    def _scrub(self, text: str) -> str:
        """Server messages may echo what they were sent: never let a secret through."""
        for secret in (self._token, self._password):
            if secret:
                text = text.replace(secret, "***")
        return text


# ------------------------------------------------------------------ answers


def _instance(host: dict[str, Any], key: InstanceKey, where: str) -> Instance:
    """An Instance from a list host or a detail answer; NacosError for wrong types."""
    try:
        weight = float(host.get("weight", 1.0))
        metadata = host.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ValueError("metadata")
        enabled, ephemeral, healthy = (host.get(k) for k in ("enabled", "ephemeral", "healthy"))
        if any(v is not None and not isinstance(v, bool) for v in (enabled, ephemeral, healthy)):
            raise ValueError("flags")
        return Instance(ip=key.ip, port=key.port,
                        cluster=str(host.get("clusterName") or key.cluster), weight=weight,
                        healthy=healthy is not False, enabled=enabled, ephemeral=ephemeral,
                        metadata={str(k): str(v) for k, v in metadata.items()})
    except (TypeError, ValueError):
        raise NacosError(f"{where}: bad answer: malformed instance") from None


def _v2_data(body: bytes, where: str) -> Any:
    """The `data` of a v2 Result ({"code": 0, "message": "success", "data": ...})."""
    try:
        result = json.loads(body)
    except ValueError:
        raise NacosError(f"{where}: bad answer: not JSON: {_text(body)!r}") from None
    if not isinstance(result, dict) or "code" not in result:
        raise NacosError(f"{where}: bad answer: not a v2 result")
    if result["code"] != 0:
        raise NacosError(f"{where}: error {result['code']}: {result.get('message')}: "
                         f"{str(result.get('data'))[:200]}")
    return result.get("data")


def _is_nacos_not_found(body: bytes, api: str) -> bool:
    """Is this 404 Nacos saying "no such instance" (rather than "no such API")?

    v1 says it in plain text ("no matched ip found!", "no ips found for cluster ...",
    "no service ... found!"); v2 in a Result with code 20004.  A 404 for a path Nacos does
    not serve is Spring Boot's error JSON, {"timestamp": ..., "status": 404, ...}, and a
    proxy's is a page: neither may pass for "not registered".
    """
    if api == "v1":
        text = body.decode("utf-8", "replace").strip()
        return text.startswith("no ") and "found" in text
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("code") in _V2_NOT_FOUND


def _message(body: bytes) -> str:
    """The server's error message: Spring's error JSON "message", a v2 Result's message
    and data, or the plain-text body; one line, at most 200 characters."""
    text = body.decode("utf-8", "replace").strip()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    if isinstance(answer, dict):
        if "code" in answer and "data" in answer:
            text = f"{answer.get('message')}: {answer.get('data')}"
        elif answer.get("message"):
            text = str(answer["message"])
        elif answer.get("error"):
            text = str(answer["error"])
    line = " ".join(text.split())
    return line[:200] or "empty answer"


def _text(body: bytes) -> str:
    return " ".join(body.decode("utf-8", "replace").split())[:100]


def _public(url: str) -> str:
    """scheme://host:port/path: no credentials, query or fragment."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _number(value: float) -> str:
    return repr(float(value))
