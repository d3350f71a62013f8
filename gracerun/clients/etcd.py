"""A small client for etcd v3 through its JSON gateway (grpc-gateway over HTTP), for the etcd hook.

etcd serves every v3 RPC as `POST <endpoint>/<gateway>/<service>/<method>` with the request
message as JSON: bytes fields (keys, values) in base64, 64-bit integers (lease IDs, revisions,
TTLs) as decimal strings, fields at their zero value left out of answers.  The gateway prefix
depends on the version: "v3" from etcd 3.4 on (3.4 also keeps "v3beta"), "v3beta" on 3.3,
"v3alpha" on 3.2 and 3.3.  So no gRPC dependency: gracerun's own HTTP client does it all, one
request per connection, each bounded by the `timeout` the caller has left.

What etcd answers, as read from etcd 3.4.23 (Debian 12's etcd-server) and its gateway:

    lease/grant {"TTL": n}            -> {"ID": "694...", "TTL": "10"}  (TTL raised to etcd's
                                         minimum, 2 s by default)
    lease/keepalive {"ID": id}        -> {"result": {"ID": id, "TTL": "10"}}  (one message of the
                                         stream; no "TTL" when the lease is gone)
    lease/revoke {"ID": id}           -> {}, or 404 {"code": 5, "message": "etcdserver:
                                         requested lease not found"}
    kv/put, kv/range, kv/deleterange  -> {"header": {"revision": "7"}, "kvs": [...], "deleted": "1"}
    auth/authenticate {"name", "password"} -> {"token": "..."}; 400 {"code": 3} when wrong
    errors                            -> {"error": msg, "message": msg, "code": grpc code} with
                                         the HTTP status of that code (401 for code 16, a bad
                                         or expired token)

With auth on, the token goes in the `Authorization` header as is (etcd reads the gateway's
"authorization" metadata as the token).  Simple tokens expire after 5 minutes unused (etcd's
--auth-token-ttl) and on a leader change, so a request answered "invalid auth token" logs in
again once and is retried.

Errors are one line, never with the password or token in it:

    etcd http://127.0.0.1:2379: kv/put: etcdserver: permission denied (HTTP 403)
    etcd http://127.0.0.1:2379: authentication failed: wrong user name or password
    etcd http://127.0.0.1:2379: kv/range: timed out after 2s
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from gracerun.clients import http
from gracerun.errors import GracerunError

GATEWAYS = ("v3", "v3beta", "v3alpha")

_NOT_FOUND = 5  # gRPC codes etcd uses
_UNAUTHENTICATED = 16


class EtcdError(GracerunError):
    """A request to etcd failed; one line starting "etcd <endpoint>: "."""


class EtcdTimeout(EtcdError):
    """A request did not complete within its timeout."""


class EtcdAuthError(EtcdError):
    """etcd refused the user name and password, or wants them and none were given."""


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    lease: int  # 0: the key is not attached to a lease
    mod_revision: int


def display(endpoint: str) -> str:
    """`endpoint` as scheme://host:port/path: no credentials, query or fragment."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(endpoint)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<bad endpoint>"
    if ":" in host:
        host = f"[{host}]"
    where = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{where}{parts.path.rstrip('/')}"


class Etcd:
    """One etcd endpoint, with the credentials and the auth token it was given.

    Holds no connection: each call is one request.  `username`/`password` empty: no auth.
    """

    def __init__(self, endpoint: str, *, gateway: str = "v3", username: str = "",
                 password: str = "") -> None:
        if gateway not in GATEWAYS:
            raise EtcdError(f"etcd {display(endpoint)}: bad gateway {gateway!r}, expected one "
                            f"of {', '.join(GATEWAYS)}")
        self.endpoint = endpoint.rstrip("/")
        self.where = f"etcd {display(endpoint)}"
        self._base = f"{self.endpoint}/{gateway}/"
        self._username = username
        self._password = password
        self._token: str | None = None
        try:
            http.parse_url(self._base)
        except http.HttpError:
            raise EtcdError(f"{self.where}: bad endpoint, expected an http(s) URL such as "
                            f'"http://127.0.0.1:2379" (credentials go in username/password)') \
                from None

    # ------------------------------------------------------------------ the calls

    async def authenticate(self, timeout: float) -> None:
        """Log in with the user name and password; the token is kept for later calls."""
        answer = await self._post("auth/authenticate",
                                  {"name": self._username, "password": self._password},
                                  timeout, auth=False)
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise EtcdError(f"{self.where}: auth/authenticate: no token in the answer")
        self._token = token

    async def grant(self, ttl: int, timeout: float) -> tuple[int, int]:
        """A new lease of `ttl` seconds: (lease ID, the TTL etcd granted)."""
        answer = await self.call("lease/grant", {"TTL": ttl}, timeout)
        where = f"{self.where}: lease/grant"
        lease, granted = _int(answer.get("ID"), where), _int(answer.get("TTL"), where)
        if lease <= 0 or granted <= 0:
            raise EtcdError(f"{self.where}: lease/grant: no lease ID and TTL in the answer")
        return lease, granted

    async def keepalive(self, lease: int, timeout: float) -> int:
        """Renew `lease` once; the TTL it now has, 0 when the lease is gone (expired or revoked).

        LeaseKeepAlive is a stream; through the gateway a request body of one message gets
        one answer message, and the answer ends when the request does.
        """
        answer = await self.call("lease/keepalive", {"ID": str(lease)}, timeout)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise EtcdError(f"{self.where}: lease/keepalive: no result in the answer")
        return max(0, _int(result.get("TTL"), f"{self.where}: lease/keepalive"))

    async def revoke(self, lease: int, timeout: float) -> bool:
        """Revoke `lease`, which deletes its keys; False when it was already gone."""
        try:
            await self.call("lease/revoke", {"ID": str(lease)}, timeout)
        except _CallError as exc:
            if exc.code == _NOT_FOUND:
                return False
            raise
        return True

    async def put(self, key: str, value: bytes, lease: int, timeout: float) -> int:
        """Put `key` (attached to `lease`, or to none when 0); the new revision."""
        message: dict[str, Any] = {"key": _b64(key.encode()), "value": _b64(value)}
        if lease:
            message["lease"] = str(lease)
        answer = await self.call("kv/put", message, timeout)
        return _int(_header(answer).get("revision"), f"{self.where}: kv/put")

    async def get(self, key: str, timeout: float) -> KeyValue | None:
        """`key` as etcd has it now (a linearizable read), or None."""
        answer = await self.call("kv/range", {"key": _b64(key.encode())}, timeout)
        where = f"{self.where}: kv/range"
        kvs = answer.get("kvs") or []
        if not isinstance(kvs, list):
            raise EtcdError(f"{where}: bad kvs in the answer")
        for kv in kvs:
            if isinstance(kv, dict) and _unb64(kv.get("key"), where) == key.encode():
                return KeyValue(key=key, value=_unb64(kv.get("value"), where),
                                lease=_int(kv.get("lease"), where),
                                mod_revision=_int(kv.get("mod_revision"), where))
        return None

    async def delete(self, key: str, timeout: float) -> int:
        """Delete `key`; how many keys were deleted (0: it was already gone)."""
        answer = await self.call("kv/deleterange", {"key": _b64(key.encode())}, timeout)
        return _int(answer.get("deleted"), f"{self.where}: kv/deleterange")

    async def call(self, method: str, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """POST `message` to `method` ("kv/put"), logging in first when credentials are set.

        A token etcd no longer accepts (expired, or lost on a leader change) is renewed once.
        """
        import time

        deadline = time.monotonic() + timeout
        if self._username and self._token is None:
            await self.authenticate(timeout)
        try:
            return await self._post(method, message, max(0.0, deadline - time.monotonic()))
        except _CallError as exc:
            if exc.code != _UNAUTHENTICATED or not self._username:
                raise
        self._token = None
        await self.authenticate(max(0.0, deadline - time.monotonic()))
        return await self._post(method, message, max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ internals

    async def _post(self, method: str, message: dict[str, Any], timeout: float, *,
                    auth: bool = True) -> dict[str, Any]:
        where = f"{self.where}: {method}"
        if timeout <= 0:
            raise EtcdTimeout(f"{where}: no time left")
        headers = {"Content-Type": "application/json"}
        if auth and self._token:
            headers["Authorization"] = self._token
        try:
            response = await http.request("POST", self._base + method, headers=headers,
                                          body=json.dumps(message).encode(), timeout=timeout)
        except http.HttpTimeout:
            raise EtcdTimeout(f"{where}: timed out after {timeout:.3g}s") from None
        except http.HttpError as exc:
            # http's message starts with the method and URL; keep what follows it.
            reason = str(exc).removeprefix(f"POST {self._base + method}: ")
            raise EtcdError(f"{where}: {reason}") from None
        try:
            answer = json.loads(response.body) if response.body.strip() else {}
        except (ValueError, UnicodeDecodeError):
            answer = None
        if response.status != 200:
            code, text = _error(answer)
            if method == "auth/authenticate" and code == 3 and "authentication failed" in text:
                raise EtcdAuthError(f"{self.where}: authentication failed: wrong user name or "
                                    f"password")
            if code == 3 and "user name is empty" in text:
                raise EtcdAuthError(f"{where}: etcd has auth enabled and no username/password "
                                    f"was configured")
            if text:
                detail = f"{text} (HTTP {response.status})"
            else:
                detail = f"HTTP {response.status} {response.reason}".strip()
                if response.status == 404:
                    detail += " (is the gateway prefix right? v3 from etcd 3.4, v3beta on 3.3)"
            raise _CallError(f"{where}: {detail}", code)
        if not isinstance(answer, dict):
            raise EtcdError(f"{where}: garbage in the answer (HTTP 200, not a JSON object)")
        return answer


class _CallError(EtcdError):
    """etcd answered with an error status; `code` is its gRPC code (-1 if none was given)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _error(answer: Any) -> tuple[int, str]:
    """(gRPC code, message) of an error answer, (-1, "") when it has none."""
    if not isinstance(answer, dict):
        return -1, ""
    code = answer.get("code")
    text = str(answer.get("message") or answer.get("error") or "").strip()
    return (code if isinstance(code, int) else -1), text.partition("\n")[0][:200]


def _header(answer: dict[str, Any]) -> dict[str, Any]:
    header = answer.get("header")
    return header if isinstance(header, dict) else {}


def _int(value: Any, where: str) -> int:
    """An int64 as the gateway writes it (a decimal string, or absent for 0)."""
    if value is None:
        return 0
    if not isinstance(value, bool):
        try:
            return int(value)
        except (TypeError, ValueError):
            pass
    raise EtcdError(f"{where}: expected a number in the answer, got {str(value)[:40]!r}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, where: str) -> bytes:
    if not value:
        return b""
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise EtcdError(f"{where}: bad base64 in the answer") from None
