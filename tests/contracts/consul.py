"""A contract server for the Consul agent's HTTP API (Consul 1.15+), and a TTL heartbeat
loop like Spring Cloud Consul's.

Held to hashicorp/consul's agent code as of 1.15 (the same in later releases):

    agent/agent_endpoint.go  AgentRegisterService (400 "Request decode failed: ...",
                             "Missing service name", "Invalid service address",
                             "Invalid check: ..."), AgentDeregisterService,
                             AgentServiceMaintenance (400 "Missing value for enable",
                             "Invalid value for enable: ..."), agentCheckUpdate (pass),
                             AgentHealthServiceByID (200 passing / 429 warning / 503
                             critical or maintenance, 404 with {"AggregatedStatus":
                             "critical", "Checks": null, "Service": null})
    agent/acl.go             vetServiceRegisterWithAuthorizer, vetServiceUpdateWithAuthorizer
                             (404 "Unknown service ID %q. Ensure that the service ID is
                             passed, not the service name."), vetCheckUpdateWithAuthorizer
                             (404 "Unknown check ID %q. Ensure that the check ID is passed,
                             not the check name.")
    agent/agent.go           EnableServiceMaintenance: a critical check
                             "_service_maintenance:<id>", "Service Maintenance Mode", its
                             notes the reason or the default text; a second enable is a
                             no-op; RemoveService drops the service's checks with it;
                             addServiceInternal: check IDs "service:<id>" ("service:<id>:N"
                             for several), new checks critical unless Status says otherwise
    agent/http.go            200 with an empty body when a handler returns nothing; 403 with
                             the ACL error's text; 405 "method X not allowed"; the token from
                             ?token=, X-Consul-Token or "Authorization: Bearer"; 404 "Invalid
                             URL path: not a recognized HTTP API endpoint" for other /v1/ paths
    acl/errors.go            "ACL not found" (a token that does not exist), "Permission
                             denied: token with AccessorID '...' lacks permission
                             'service:write' on \\"web\\""
    api/health.go            AggregatedStatus: "maintenance" wins, then critical, warning,
                             passing
    GET /v1/health/service/:name?passing   entries {Node, Service, Checks}, only those whose
                             checks all pass (the node's serfHealth included)

ACLs are off unless `tokens` is given (secret -> Token); then default-deny, and a request
without a token acts as the anonymous token.  Not modelled: running HTTP checks (an HTTP
check stays at its initial status), node checks in the agent's health-by-ID answer (node
maintenance, serfHealth: the real agent includes them), catalog replication to servers
(the agent's view and the health endpoint are the same state here; a real agent syncs
before answering a write), namespaces and partitions, blocking queries.

TtlHeartbeatLoop is Spring Cloud Consul's side (TtlScheduler, ReregistrationPredicate,
HeartbeatProperties on spring-cloud-consul main): it registers the service with a TTL check
(30 s by default), then PUTs /v1/agent/check/pass/service:<id> every `interval` (2/3 of the
TTL in the real client) with X-Consul-Token, and, when re-registration on failure is on
(spring.cloud.consul.discovery.heartbeat.reregister-service-on-failure, off by default),
registers the service again when the agent answers 404 or 5xx.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from contracts.recording import ContractServer, Loop, Reply, Request, http_call

ANONYMOUS = "00000000-0000-0000-0000-000000000002"
MAINT_PREFIX = "_service_maintenance:"
DEFAULT_MAINT_REASON = ("Maintenance mode is enabled for this service, but no reason was "
                        "provided. This is a default message.")
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("PUT", re.compile(r"^/v1/agent/service/register$"), "register"),
    ("PUT", re.compile(r"^/v1/agent/service/deregister/(?P<id>.+)$"), "deregister"),
    ("PUT", re.compile(r"^/v1/agent/service/maintenance/(?P<id>.*)$"), "maintenance"),
    ("PUT", re.compile(r"^/v1/agent/check/pass/(?P<id>.+)$"), "pass"),
    ("GET", re.compile(r"^/v1/agent/health/service/id/(?P<id>.*)$"), "health_id"),
    ("GET", re.compile(r"^/v1/health/service/(?P<name>.+)$"), "health_name"),
]


@dataclass(frozen=True)
class Token:
    accessor: str
    write: frozenset[str] = frozenset()  # service names with service:write ("*": all)
    read: frozenset[str] = frozenset()  # service:read (write implies read)

    def can_write(self, name: str) -> bool:
        return "*" in self.write or name in self.write

    def can_read(self, name: str) -> bool:
        return self.can_write(name) or "*" in self.read or name in self.read


@dataclass
class Check:
    check_id: str
    name: str
    service_id: str
    service_name: str
    status: str = "critical"
    notes: str = ""
    output: str = ""
    type: str = ""
    ttl: float = 0.0
    interval: str = ""
    expires: float = 0.0  # monotonic time a TTL check turns critical

    def current(self) -> str:
        if self.ttl and self.status != "critical" and time.monotonic() > self.expires:
            self.status, self.output = "critical", "TTL expired"
        return self.status

    def json(self, node: str, tags: list[str]) -> dict[str, Any]:
        return {"Node": node, "CheckID": self.check_id, "Name": self.name,
                "Status": self.current(), "Notes": self.notes, "Output": self.output,
                "ServiceID": self.service_id, "ServiceName": self.service_name,
                "ServiceTags": tags, "Type": self.type, "Interval": self.interval,
                "Timeout": "", "ExposedPort": 0, "Definition": {}, "CreateIndex": 0,
                "ModifyIndex": 0}


@dataclass
class Service:
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {"Kind": "", "ID": self.id, "Service": self.name, "Tags": self.tags,
                "Meta": self.meta, "Port": self.port, "Address": self.address,
                "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": False,
                "Datacenter": "dc1"}


class ConsulAgent(ContractServer):
    """One Consul agent (node "node-1", datacenter "dc1") and its local services."""

    node = "node-1"

    def __init__(self, tokens: dict[str, Token] | None = None) -> None:
        super().__init__()
        self.tokens = tokens
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -------------------------------------------------------- test helpers

    def passing(self, name: str) -> set[str]:
        """The IDs GET /v1/health/service/<name>?passing lists (what discovery sees)."""
        with self.lock:
            return {s.id for s in self.services.values()
                    if s.name == name and self._all_passing(s.id)}

    def check_ids(self, service_id: str) -> dict[str, str]:
        with self.lock:
            return {c.check_id: c.current() for c in self.checks.values()
                    if c.service_id == service_id}

    # -------------------------------------------------------------- routes

    def route(self, req: Request) -> Reply:
        allowed: list[str] = []
        for method, pattern, name in _ROUTES:
            m = pattern.match(req.path)
            if m is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            token = self._token(req)
            if isinstance(token, Reply):
                return token
            with self.lock:
                handler = getattr(self, f"_{name}")
                reply: Reply = handler(req, token, **m.groupdict())
                return reply
        if allowed:
            return _text(405, f"method {req.method} not allowed",
                         {"Allow": ",".join(["OPTIONS", *allowed])})
        if "/v1/" in req.path:
            return _text(404, "Invalid URL path: not a recognized HTTP API endpoint\n")
        return _text(404, "Invalid URL path: if attempting to use the HTTP API, ensure the "
                          "path starts with '/v1/'\n")

    def _token(self, req: Request) -> Token | Reply | None:
        """The request's token (parseTokenInternal); None when ACLs are off."""
        if self.tokens is None:
            return None
        secret = req.arg("token") or req.headers.get("x-consul-token", "")
        if not secret and req.headers.get("authorization", "").startswith("Bearer "):
            secret = req.headers["authorization"][7:].strip()
        if not secret:
            return Token(ANONYMOUS)
        token = self.tokens.get(secret)
        if token is None:
            return _text(403, "ACL not found")
        return token

    def _denied(self, token: Token | None, name: str, write: bool = True) -> Reply | None:
        if token is None or (token.can_write(name) if write else token.can_read(name)):
            return None
        access = "write" if write else "read"
        return _text(403, f"Permission denied: token with AccessorID '{token.accessor}' "
                          f"lacks permission 'service:{access}' on \"{name}\"")

    def _unknown_service(self, service_id: str) -> Reply:
        return _text(404, f'Unknown service ID "{service_id}". Ensure that the service ID is '
                          "passed, not the service name.")

    def _register(self, req: Request, token: Token | None) -> Reply:
        try:
            doc = json.loads(req.body or b"null")
            if not isinstance(doc, dict):
                raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
        except ValueError as exc:
            return _text(400, f"Request decode failed: {exc}")
        args = {k.lower(): v for k, v in doc.items()}
        name = str(args.get("name") or "")
        if not name:
            return _text(400, "Missing service name")
        address = str(args.get("address") or "")
        if address in ("0.0.0.0", "::", "[::]"):
            return _text(400, "Invalid service address")
        sid = str(args.get("id") or name)
        raw_checks: list[Any] = []
        if isinstance(args.get("check"), dict):
            raw_checks.append(args["check"])
        if isinstance(args.get("checks"), list):
            raw_checks += [c for c in args["checks"] if isinstance(c, dict)]
        checks: list[dict[str, Any]] = []
        for raw in raw_checks:
            chk = {k.lower().replace("_", ""): v for k, v in raw.items()}
            problem = _check_problem(chk)
            if problem:
                return _text(400, f"Invalid check: {problem}")
            checks.append(chk)
        denied = self._denied(token, name)
        existing = self.services.get(sid)
        if denied is None and existing is not None:
            denied = self._denied(token, existing.name)
        if denied is not None:
            return denied
        self.services[sid] = Service(sid, name, [str(t) for t in args.get("tags") or []],
                                     address, int(args.get("port") or 0),
                                     dict(args.get("meta") or {}))
        kept = {cid for cid, c in self.checks.items() if c.service_id == sid}
        for i, chk in enumerate(checks):
            cid = str(chk.get("checkid") or (f"service:{sid}" if len(checks) == 1
                                             else f"service:{sid}:{i + 1}"))
            ttl = _seconds(chk.get("ttl"))
            self.checks[cid] = Check(
                check_id=cid, name=str(chk.get("name") or f"Service '{name}' check"),
                service_id=sid, service_name=name, status=str(chk.get("status") or "critical"),
                type="ttl" if ttl else "http", ttl=ttl, interval=str(chk.get("interval") or ""),
                expires=time.monotonic() + ttl)
            kept.discard(cid)
        if req.arg("replace-existing-checks") in ("", "true"):
            for cid in kept:
                del self.checks[cid]
        return Reply(200)

    def _deregister(self, req: Request, token: Token | None, id: str) -> Reply:
        service = self.services.get(id)
        if service is None:
            return self._unknown_service(id)
        denied = self._denied(token, service.name)
        if denied is not None:
            return denied
        del self.services[id]
        for cid in [cid for cid, c in self.checks.items() if c.service_id == id]:
            del self.checks[cid]
        return Reply(200)

    def _maintenance(self, req: Request, token: Token | None, id: str) -> Reply:
        if not id:
            return _text(400, "Missing service ID")
        if "enable" not in req.query:
            return _text(400, "Missing value for enable")
        raw = req.arg("enable") or ""
        enable = _parse_bool(raw)
        if enable is None:
            return _text(400, f'Invalid value for enable: "{raw}"')
        service = self.services.get(id)
        if service is None:
            return self._unknown_service(id)
        denied = self._denied(token, service.name)
        if denied is not None:
            return denied
        cid = MAINT_PREFIX + id
        if enable:
            if cid not in self.checks:
                self.checks[cid] = Check(cid, "Service Maintenance Mode", id, service.name,
                                         "critical", req.arg("reason") or DEFAULT_MAINT_REASON,
                                         type="maintenance")
        else:
            self.checks.pop(cid, None)
        return Reply(200)

    def _pass(self, req: Request, token: Token | None, id: str) -> Reply:
        check = self.checks.get(id)
        if check is None:
            return _text(404, f'Unknown check ID "{id}". Ensure that the check ID is passed, '
                              "not the check name.")
        denied = self._denied(token, check.service_name)
        if denied is not None:
            return denied
        if not check.ttl:
            return _text(500, f'CheckID "{id}" does not have associated TTL')
        check.status, check.output = "passing", req.arg("note") or ""
        check.expires = time.monotonic() + check.ttl
        return Reply(200)

    def _health_id(self, req: Request, token: Token | None, id: str) -> Reply:
        if not id:
            return _text(400, "Missing serviceID")
        service = self.services.get(id)
        if service is None:
            return _json(404, {"AggregatedStatus": "critical", "Checks": None, "Service": None})
        denied = self._denied(token, service.name, write=False)
        if denied is not None:
            return denied
        checks = [c.json(self.node, service.tags) for c in self.checks.values()
                  if c.service_id == id]
        status = _aggregated(checks)
        code = {"passing": 200, "warning": 429}.get(status, 503)
        return _json(code, {"AggregatedStatus": status, "Service": service.json(),
                            "Checks": checks})

    def _health_name(self, req: Request, token: Token | None, name: str) -> Reply:
        if token is not None and not token.can_read(name):
            return _json(200, [], {"X-Consul-Results-Filtered-By-ACLs": "true"})
        entries = []
        for service in self.services.values():
            if service.name != name:
                continue
            if "passing" in req.query and not self._all_passing(service.id):
                continue
            checks = [self._serf_health()] + [c.json(self.node, service.tags)
                                               for c in self.checks.values()
                                               if c.service_id == service.id]
            entries.append({"Node": {"ID": "0b7c6f1e-0000-0000-0000-000000000001",
                                     "Node": self.node, "Address": "127.0.0.1",
                                     "Datacenter": "dc1"},
                            "Service": service.json(), "Checks": checks})
        return _json(200, entries, {"X-Consul-Index": "1"})

    def _all_passing(self, service_id: str) -> bool:
        return all(c.current() == "passing" for c in self.checks.values()
                   if c.service_id == service_id)

    def _serf_health(self) -> dict[str, Any]:
        return {"Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": ""}


def _check_problem(chk: dict[str, Any]) -> str:
    """CheckType.Validate for the check kinds the contract knows (TTL, HTTP, TCP)."""
    ttl = _seconds(chk.get("ttl"))
    interval = _seconds(chk.get("interval"))
    interval_check = any(chk.get(k) for k in ("http", "tcp", "udp", "grpc", "args"))
    if interval > 0 and ttl > 0:
        return "Interval and TTL cannot both be specified"
    if interval_check and interval <= 0:
        return "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks"
    if not interval_check and ttl <= 0:
        return "TTL must be > 0 for TTL checks"
    return ""


def _seconds(value: Any) -> float:
    """A Go duration ("10s", "1500ms", "1m") or nanoseconds as a number, in seconds."""
    if isinstance(value, int | float):
        return float(value) / 1e9
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", str(value or "").strip())
    if m is None:
        return 0.0
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return float(m[1]) * scale[m[2]]


def _parse_bool(raw: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if raw in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if raw in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    return None


def _aggregated(checks: list[dict[str, Any]]) -> str:
    statuses = set()
    for c in checks:
        if c["CheckID"].startswith(MAINT_PREFIX) or c["CheckID"] == "_node_maintenance":
            return "maintenance"
        statuses.add(c["Status"])
    for status in ("critical", "warning"):
        if status in statuses:
            return status
    return "passing"


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, text.encode(), "text/plain; charset=utf-8", headers or {})


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(doc).encode(), "application/json", headers or {})


class TtlHeartbeatLoop(Loop):
    """Spring Cloud Consul's registration and TTL heartbeat (TtlScheduler)."""

    def __init__(self, address: str, service_id: str, name: str, *, token: str = "",
                 interval: float = 0.05, ttl: str = "30s", port: int = 8080,
                 reregister_on_failure: bool = False) -> None:
        super().__init__(interval, self.heartbeat)
        self.address = address.rstrip("/")
        self.service_id = service_id
        self.name = name
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["X-Consul-Token"] = token
        self.ttl = ttl
        self.port = port
        self.reregister_on_failure = reregister_on_failure
        self.passes: list[int] = []  # the status of each heartbeat
        self.reregistrations = 0

    def new_service(self) -> dict[str, Any]:
        """What ConsulAutoRegistration builds (NewService) with heartbeat enabled."""
        return {"ID": self.service_id, "Name": self.name, "Tags": ["secure=false"],
                "Address": "127.0.0.1", "Port": self.port, "Meta": {"secure": "false"},
                "Check": {"TTL": self.ttl}}

    def register(self) -> int:
        status, _ = http_call("PUT", f"{self.address}/v1/agent/service/register",
                              body=json.dumps(self.new_service()).encode(),
                              headers=self.headers)
        return status

    def heartbeat(self) -> None:
        status, _ = http_call("PUT", f"{self.address}/v1/agent/check/pass/service:"
                              f"{self.service_id}", headers=self.headers)
        self.passes.append(status)
        # ReregistrationPredicate.DEFAULT: 404 or any 5xx
        if self.reregister_on_failure and (status == 404 or status >= 500):
            self.reregistrations += 1
            self.register()

    def start(self) -> None:
        """Register, pass the check once (the first heartbeat), then beat in the background."""
        assert self.register() == 200, "the contract agent refused the registration"
        self.heartbeat()
        super().start()
