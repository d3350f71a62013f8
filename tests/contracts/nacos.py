"""A contract server for the Nacos naming open API as Nacos 1.4.8 and 2.2.3 implement it,
and the Nacos 1.x Java client's registration and heartbeat loop (BeatClient).

Nacos needs a JVM and a database and cannot run here, so the tests run against this.
Read from alibaba/nacos at tags 1.4.8 and 2.2.3 (paths under the repository root):

    naming/src/main/java/com/alibaba/nacos/naming/controllers/InstanceController.java
        v1 register (POST), deregister (DELETE), update (PUT), detail (GET), list
        (GET /list), beat (PUT /beat); their parameters, defaults and "ok" answers
    naming/.../controllers/v2/InstanceControllerV2.java (2.2.3)
        v2 under /nacos/v2/ns/instance: InstanceForm parameters, Result envelope
        {"code": 0, "message": "success", "data": ...}
    naming/.../core/ServiceManager.java (1.4.8)
        an update from anything but a Java client >= 1.0.0 is a registration: the
        instance is replaced by the one in the request (metadata included)
    naming/.../core/InstanceOperatorClientImpl.java (2.2.3)
        removeInstance only removes what an HTTP client (IpPortBasedClient ip:port#eph)
        published, else logs and answers "ok"; updateInstance writes a metadata
        override (enabled, weight, extendData) keyed by service and ip:port:cluster and
        needs only the service to exist; getInstance / handleBeat
    naming/.../utils/ServiceUtil.java, InstanceUtil.java (2.2.3), Service.srvIPs (1.4.8)
        the list leaves out disabled instances; the override is applied over the
        published instance; (1.4.8) with no healthy instance the protect threshold
        hands out all
    naming/.../core/v2/metadata/NamingMetadataManager.java, GlobalConfig.java (2.2.3)
        the override outlives its instance for 60 s (expired-metadata), and a
        registration within that time cancels its expiry
    naming/.../exception/ResponseExceptionHandler.java
        v1 errors: NacosException -> its code and message as text,
        IllegalArgumentException -> 400, anything else -> 500
    console/.../exception/NacosApiExceptionHandler.java (2.2.3)
        v2 errors: HTTP status of the NacosApiException, Result {code, message, data}
    core/.../auth/AuthFilter.java; console/.../security/nacos/NacosAuthManager.java
    (1.4.8); plugin-default-impl/.../NacosAuthPluginService.java and
    authenticate/AbstractAuthenticationManager.java (2.2.3)
        the token is read from "Authorization: Bearer", then accessToken, then
        username/password; refusals are 403 through sendError ("token invalid!",
        "token expired!", "unknown user!" (1.4.8) / "user not found!" (2.2.3))
    console/.../controller/UserController.java (1.4.8), plugin-default-impl/.../
    controller/UserController.java (2.2.3)
        POST /v1/auth/login and /v1/auth/users/login -> {"accessToken", "tokenTtl",
        "globalAdmin", "username"}; a refusal is 403 with the text alone
    client/.../naming/beat/BeatReactor.java, naming/net/NamingProxy.java (1.4.8)
        the client's beat loop: PUT /nacos/v1/ns/instance/beat every period (the
        instance's preserved.heart.beat.interval, else 5 s; then the server's
        clientBeatInterval), the first with a "beat" body, later ones light when
        the server says lightBeatEnabled; on code 20404 it registers again
    distribution/conf/application.properties
        context path /nacos; server.error.include-message=ALWAYS, so Spring's error
        JSON {"timestamp", "status", "error", "message", "path"} carries the message

Ephemeral instances registered over HTTP expire as in the server's beat check: unhealthy
after preserved.heart.beat.timeout (15 s), deleted after preserved.ip.delete.timeout
(30 s) without a beat, checked at each request.  A 2.x client's gRPC registration is
modelled by grpc_register() (gRPC itself is not): such an instance has no HTTP client.

Not modelled: clusters of servers, Distro/Raft replication delays, UDP push, the
server's own TCP health checks of persistent instances, permissions other than "every
user may do everything", service-level metadata and selectors, and an ephemeral and a
persistent instance at one ip:port:cluster at once (Nacos 1.x keeps them apart).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

VERSIONS = ("1.4.8", "2.2.3")
CONTEXT = "/nacos"
OK = 10200  # ResponseCode.OK
RESOURCE_NOT_FOUND = 20404  # NamingResponseCode.RESOURCE_NOT_FOUND
DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_NAMESPACE = "public"
DEFAULT_CLUSTER = "DEFAULT"
BEAT_INTERVAL_KEY = "preserved.heart.beat.interval"  # PreservedMetadataKeys, in ms
BEAT_TIMEOUT_KEY = "preserved.heart.beat.timeout"
DELETE_TIMEOUT_KEY = "preserved.ip.delete.timeout"
EXPIRED_METADATA_TIME = 60.0  # nacos.naming.clean.expired-metadata.expired-time, 2.2.3


@dataclass
class Instance:
    ip: str
    port: int
    cluster: str
    ephemeral: bool
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    service: str = ""  # group@@name
    last_beat: float = field(default_factory=time.monotonic)
    via: str = "http"  # "http": the open API or a 1.x client; "grpc": a 2.x client

    @property
    def instance_id(self) -> str:  # the "simple" instance id generator
        return f"{self.ip}#{self.port}#{self.cluster}#{self.service}"

    def millis(self, key: str, default: int) -> int:
        try:
            return int(self.metadata.get(key, default))
        except ValueError:
            return default


@dataclass
class Override:
    """2.x instance metadata (InstanceMetadata): what the update API writes."""

    enabled: bool
    weight: float
    extend: dict[str, str]
    expires: float | None = None  # monotonic time; None while its instance exists


@dataclass(frozen=True)
class Request:
    """A request as the server saw it, for tests to check what a client sent."""

    method: str
    path: str
    query: str
    params: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes


class _Answer(Exception):
    """A reply: status and a text or JSON body (raised for errors, returned for success)."""

    def __init__(self, status: int, body: str | dict[str, Any] | list[Any],
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _spring_error(status: int, message: str, path: str) -> _Answer:
    """What Spring Boot answers for response.sendError() and for unmapped paths."""
    reasons = {400: "Bad Request", 403: "Forbidden", 404: "Not Found",
               405: "Method Not Allowed", 500: "Internal Server Error"}
    return _Answer(status, {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00"),
                            "status": status, "error": reasons.get(status, ""),
                            "message": message, "path": path})


def _result(data: Any, code: int = 0, message: str = "success", status: int = 200) -> _Answer:
    return _Answer(status, {"code": code, "message": message, "data": data})


class NacosServer:
    """Nacos `version` ("1.4.8" or "2.2.3") on 127.0.0.1, port chosen by the kernel.

    auth=True turns on nacos.core.auth.enabled with `users` (name -> password).
    client_beat_interval is the server's switch (seconds); lightBeatEnabled is on.
    Faults for failure tests: `fault` = "hang" (never answer), "500" or "garbage"
    (a 200 whose body is not what the API promises), applied to every request.
    """

    def __init__(self, version: str = "2.2.3", *, auth: bool = False,
                 users: dict[str, str] | None = None, client_beat_interval: float = 5.0,
                 token_ttl: float = 18000.0) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}")
        self.version = version
        self.auth = auth
        self.users = dict(users or {"nacos": "nacos"})
        self.client_beat_interval = client_beat_interval
        self.token_ttl = token_ttl
        self.fault: str | None = None
        self.requests: list[Request] = []
        self._tokens: dict[str, tuple[str, float]] = {}
        # (namespace, group@@service) -> {(ip, port, cluster): Instance}
        self._services: dict[tuple[str, str], dict[tuple[str, int, str], Instance]] = {}
        self._service_ephemeral: dict[tuple[str, str], bool] = {}  # 2.x: fixed at creation
        self._overrides: dict[tuple[str, str, str], Override] = {}  # 2.x
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server._serve(self)

            do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()  # hanging handlers return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> NacosServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ test views

    def instance(self, service: str, ip: str, port: int, *, group: str = DEFAULT_GROUP,
                 namespace: str = DEFAULT_NAMESPACE, cluster: str = DEFAULT_CLUSTER
                 ) -> Instance | None:
        """The instance as the server holds it (2.x: with its override applied)."""
        with self._lock:
            self._sweep()
            found = self._services.get((namespace, f"{group}@@{service}"), {}) \
                .get((ip, port, cluster))
            return self._effective(namespace, found) if found else None

    def discoverable(self, service: str, ip: str, port: int, **where: str) -> bool:
        """Would a client's discovery hand this instance out (registered and enabled)?"""
        found = self.instance(service, ip, port, **where)
        return found is not None and found.enabled

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens = {t: (user, 0.0) for t, (user, _) in self._tokens.items()}

    def grpc_register(self, service: str, ip: str, port: int, *, group: str = DEFAULT_GROUP,
                      namespace: str = DEFAULT_NAMESPACE, cluster: str = DEFAULT_CLUSTER,
                      weight: float = 1.0, metadata: dict[str, str] | None = None) -> None:
        """What a 2.x client's registration over gRPC leaves in a 2.2.3 server."""
        assert self.version == "2.2.3", "gRPC registration is Nacos 2.x"
        with self._lock:
            self._add(namespace, f"{group}@@{service}",
                      Instance(ip, port, cluster, True, weight=weight,
                               metadata=dict(metadata or {}), via="grpc"))

    def grpc_deregister(self, service: str, ip: str, port: int, *, group: str = DEFAULT_GROUP,
                        namespace: str = DEFAULT_NAMESPACE) -> None:
        """The 2.x client deregistered, or its connection closed."""
        with self._lock:
            svc = f"{group}@@{service}"
            for key, inst in list(self._services.get((namespace, svc), {}).items()):
                if inst.via == "grpc" and (inst.ip, inst.port) == (ip, port):
                    self._remove(namespace, svc, key)

    # ---------------------------------------------------------------- serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        params: dict[str, str] = {}
        # Tomcat (and Spring's FormContentFilter for PUT/PATCH/DELETE): query first, then form
        sources = [split.query]
        if "application/x-www-form-urlencoded" in handler.headers.get("Content-Type", ""):
            sources.append(body.decode("utf-8", "replace"))
        for source in sources:
            for name, value in urllib.parse.parse_qsl(source, keep_blank_values=True):
                params.setdefault(name, value)
        request = Request(handler.command, split.path, split.query, params,
                          {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(request)
        fault = self.fault
        if fault == "hang":
            self._closing.wait()
            handler.close_connection = True
            return
        if fault == "500":
            answer = _Answer(500, "Server failed,java.lang.NullPointerException")
        elif fault == "garbage":
            answer = _Answer(200, "\x00<html>definitely not what Nacos says{")
        else:
            try:
                with self._lock:
                    self._sweep()
                    answer = self._route(request)
            except _Answer as raised:
                answer = raised
            except Exception as exc:  # ResponseExceptionHandler.handleException
                answer = _Answer(500, f"caused: {type(exc).__name__}: {exc};")
        if isinstance(answer.body, str):
            payload, ctype = answer.body.encode(), "text/plain;charset=UTF-8"
        else:
            payload, ctype = json.dumps(answer.body).encode(), "application/json"
        handler.send_response(answer.status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

    def _route(self, req: Request) -> _Answer:
        path = req.path
        if not path.startswith(CONTEXT + "/"):
            raise _spring_error(404, "No message available", path)
        api = path[len(CONTEXT):]
        routes: dict[str, dict[str, Callable[[Request], _Answer]]] = {
            "/v1/auth/login": {"POST": self._login},
            "/v1/auth/users/login": {"POST": self._login},
            "/v1/ns/instance": {"POST": self._v1_register, "DELETE": self._v1_deregister,
                                "PUT": self._v1_update, "GET": self._v1_detail},
            "/v1/ns/instance/list": {"GET": self._v1_list},
            "/v1/ns/instance/beat": {"PUT": self._beat},
        }
        if self.version == "2.2.3":
            routes.update({
                "/v2/ns/instance": {"POST": self._v2_register, "DELETE": self._v2_deregister,
                                    "PUT": self._v2_update, "GET": self._v2_detail},
                "/v2/ns/instance/list": {"GET": self._v2_list},
            })
        methods = routes.get(api)
        if methods is None:
            raise _spring_error(404, "No message available", path)
        if req.method not in methods:
            raise _spring_error(405, f"Request method '{req.method}' not supported", path)
        if api.startswith("/v1/ns/") or api.startswith("/v2/ns/"):
            self._check_auth(req)  # every naming endpoint here is @Secured
        return methods[req.method](req)

    # ------------------------------------------------------------------ auth

    def _check_auth(self, req: Request) -> None:
        """AuthFilter: only when nacos.core.auth.enabled; refusals are sendError(403)."""
        if not self.auth:
            return
        user = self._identify(req)
        if user is None:
            raise _spring_error(403, self._unknown_user, req.path)

    @property
    def _unknown_user(self) -> str:
        return "unknown user!" if self.version == "1.4.8" else "user not found!"

    def _identify(self, req: Request) -> str | None:
        """The user a request authenticates as; a bad token raises 403."""
        token = ""
        bearer = req.headers.get("authorization", "")
        if bearer.startswith("Bearer "):
            token = bearer[len("Bearer "):]
        elif self.version == "2.2.3" and req.headers.get("accesstoken"):
            token = req.headers["accesstoken"]  # 2.x reads each identity as header, then param
        else:
            token = req.params.get("accessToken", "")
        if token:
            known = self._tokens.get(token)
            if known is None:
                raise _spring_error(403, "token invalid!", req.path)
            if known[1] <= time.monotonic():
                raise _spring_error(403, "token expired!", req.path)
            return known[0]
        name, password = req.params.get("username", ""), req.params.get("password", "")
        if name and password and self.users.get(name) == password:
            return name
        return None

    def _login(self, req: Request) -> _Answer:
        for name in ("username", "password"):
            if name not in req.params:
                raise _spring_error(400, f"Required request parameter '{name}' for method "
                                         f"parameter type String is not present", req.path)
        try:
            user = self._identify(req)
        except _Answer as refused:  # the console's handler: 403 with the text alone
            message = refused.body.get("message") if isinstance(refused.body, dict) else ""
            raise _Answer(403, str(message)) from None
        if user is None:
            raise _Answer(403, self._unknown_user)
        token = secrets.token_hex(24)
        self._tokens[token] = (user, time.monotonic() + self.token_ttl)
        return _Answer(200, {"accessToken": token, "tokenTtl": int(self.token_ttl),
                             "globalAdmin": True, "username": user},
                       {"Authorization": f"Bearer {token}"})

    # ------------------------------------------------------------ parameters

    @staticmethod
    def _required(req: Request, name: str) -> str:
        value = req.params.get(name, "")
        if not value.strip():
            raise _Answer(400, f"Param '{name}' is required.")
        return value

    def _grouped(self, req: Request) -> tuple[str, str]:
        """(namespace, group@@service), as DistroFilter (1.4) / ServiceNameFilter (2.2)
        combine serviceName and groupName."""
        name = self._required(req, "serviceName").strip()
        group = req.params.get("groupName", "").strip() or DEFAULT_GROUP
        grouped = name if "@@" in name else f"{group}@@{name}"
        parts = grouped.split("@@")
        if len(parts) != 2 or not all(parts):
            raise _Answer(400, "Param 'serviceName' is illegal, it should be format as "
                               "'groupName@@serviceName'")
        return req.params.get("namespaceId", "").strip() or DEFAULT_NAMESPACE, grouped

    @staticmethod
    def _cluster(req: Request) -> str:
        return (req.params.get("clusterName", "").strip() or req.params.get("cluster", "")
                .strip() or DEFAULT_CLUSTER)

    @staticmethod
    def _flag(value: str) -> bool:
        return value.strip().lower() in ("true", "on", "yes", "y", "t")  # BooleanUtils

    def _parse_instance(self, req: Request, svc: str) -> Instance:
        """InstanceController.parseInstance (1.4) / HttpRequestInstanceBuilder (2.2)."""
        ip = self._required(req, "ip")
        try:
            port = int(self._required(req, "port"))
            weight = float(req.params.get("weight", "") or "1")
        except ValueError as exc:  # NumberFormatException is an IllegalArgumentException
            raise _Answer(400, f"For input string: {exc}") from None
        enabled_text = req.params.get("enabled", "")
        enabled = self._flag(enabled_text) if enabled_text.strip() else \
            self._flag(req.params.get("enable", "true"))
        if not 0.0 <= weight <= 10000.0:
            raise _Answer(400, "instance format invalid: The weights range from 0.0 to 10000.0")
        return Instance(ip=ip, port=port, cluster=self._cluster(req),
                        ephemeral=self._flag(req.params.get("ephemeral", "true")),
                        weight=weight, healthy=self._flag(req.params.get("healthy", "true")),
                        enabled=enabled, metadata=_parse_metadata(req.params.get("metadata", "")),
                        service=svc)

    # ------------------------------------------------------------ the model

    def _sweep(self) -> None:
        """The beat check task and the expired-metadata cleaner, run lazily."""
        now = time.monotonic()
        for (ns, svc), instances in list(self._services.items()):
            for key, inst in list(instances.items()):
                if not inst.ephemeral or inst.via != "http":
                    continue
                idle = (now - inst.last_beat) * 1000
                if idle > inst.millis(DELETE_TIMEOUT_KEY, 30000):
                    self._remove(ns, svc, key)
                elif idle > inst.millis(BEAT_TIMEOUT_KEY, 15000):
                    inst.healthy = False
        for mkey, override in list(self._overrides.items()):
            if override.expires is not None and override.expires <= now:
                del self._overrides[mkey]

    def _add(self, ns: str, svc: str, inst: Instance) -> None:
        inst.service = svc
        instances = self._services.setdefault((ns, svc), {})
        if self.version == "2.2.3":
            first = self._service_ephemeral.setdefault((ns, svc), inst.ephemeral)
            if first != inst.ephemeral:
                kind = "ephemeral" if first else "persistent"
                other = "persistent" if first else "ephemeral"
                raise _Answer(500, f"caused: errCode: 400, errMsg: Current service {svc} is "
                                   f"{kind} service, can't register {other} instance. ;")
            # one client publishes one instance per service, whatever its cluster
            for key, old in list(instances.items()):
                if (old.ip, old.port, old.via) == (inst.ip, inst.port, inst.via):
                    del instances[key]
            override = self._overrides.get((ns, svc, _metadata_id(inst)))
            if override is not None:
                override.expires = None  # InstanceMetadataEvent(expired=false)
        instances[(inst.ip, inst.port, inst.cluster)] = inst

    def _remove(self, ns: str, svc: str, key: tuple[str, int, str]) -> None:
        inst = self._services[(ns, svc)].pop(key)
        override = self._overrides.get((ns, svc, _metadata_id(inst)))
        if override is not None:
            override.expires = time.monotonic() + EXPIRED_METADATA_TIME

    def _effective(self, ns: str, inst: Instance) -> Instance:
        override = self._overrides.get((ns, inst.service, _metadata_id(inst)))
        if self.version == "1.4.8" or override is None:
            return replace(inst, metadata=dict(inst.metadata))
        return replace(inst, enabled=override.enabled, weight=override.weight,
                       metadata={**inst.metadata, **override.extend})

    def _all(self, ns: str, svc: str) -> list[Instance]:
        return [self._effective(ns, i) for i in self._services.get((ns, svc), {}).values()]

    def _register(self, req: Request) -> None:
        ns, svc = self._grouped(req)
        self._add(ns, svc, self._parse_instance(req, svc))

    def _deregister(self, req: Request) -> None:
        ns, svc = self._grouped(req)
        ip = self._required(req, "ip")
        port = int(self._required(req, "port"))
        ephemeral = self._flag(req.params.get("ephemeral", "true"))
        instances = self._services.get((ns, svc))
        if self.version == "1.4.8":
            if instances is None:
                return  # "remove instance from non-exist service": ok
            key = (ip, port, self._cluster(req))
            if key in instances and instances[key].ephemeral == ephemeral:
                self._remove(ns, svc, key)
            return
        # 2.2.3: only an HTTP client at ip:port#ephemeral can be removed over HTTP
        has_client = any(i.via == "http" and (i.ip, i.port, i.ephemeral) == (ip, port, ephemeral)
                         for group in self._services.values() for i in group.values())
        if not has_client or instances is None:
            return  # "remove instance from non-exist client": ok, and nothing happens
        for key, inst in list(instances.items()):
            if inst.via == "http" and (inst.ip, inst.port, inst.ephemeral) == (ip, port,
                                                                               ephemeral):
                self._remove(ns, svc, key)

    def _update(self, req: Request, v2: bool = False) -> None:
        ns, svc = self._grouped(req)
        inst = self._parse_instance(req, svc)
        if self.version == "1.4.8":
            agent = req.headers.get("user-agent", "")
            if _java_client_at_least_1(agent):  # ServiceManager.updateInstance
                instances = self._services.get((ns, svc))
                if instances is None:
                    raise _Answer(400, f"service not found, namespace: {ns}, service: {svc}")
                if (inst.ip, inst.port, inst.cluster) not in instances:
                    raise _Answer(400, f"instance not exist: {inst.ip}:{inst.port}")
            self._add(ns, svc, inst)  # any other agent: registerInstance
            return
        if (ns, svc) not in self._services:
            message = (f"service not found, namespace: {ns}, service: Service{{namespace='{ns}',"
                       f" group='{svc.split('@@')[0]}', name='{svc.split('@@')[1]}', "
                       f"ephemeral={str(inst.ephemeral).lower()}, revision=0}}")
            raise (_result(message, 21004, "instance error", 400) if v2 else _Answer(400, message))
        # The override stands on its own: it needs no instance, and applies to one a 2.x
        # client registered over gRPC as well.
        self._overrides[(ns, svc, _metadata_id(inst))] = Override(
            inst.enabled, inst.weight, dict(inst.metadata))

    def _find(self, req: Request) -> tuple[str, Instance]:
        """InstanceController.detail's lookup; 404 NacosException as in each version."""
        ns, svc = self._grouped(req)
        cluster = req.params.get("clusterName", "").strip() or DEFAULT_CLUSTER
        ip = self._required(req, "ip")
        port = int(self._required(req, "port"))
        if self.version == "1.4.8" and (ns, svc) not in self._services:
            raise _Answer(404, f"no service {svc} found!")
        hosts = self._all(ns, svc)
        if self.version == "1.4.8":
            hosts = [h for h in hosts if h.cluster == cluster]
        if not hosts:
            raise _Answer(404, f"no ips found for cluster {cluster} in service {svc}")
        for host in hosts:
            if (host.cluster, host.ip, host.port) == (cluster, ip, port):
                return svc, host
        raise _Answer(404, "no matched ip found!")

    def _hosts(self, ns: str, svc: str, clusters: str, healthy_only: bool) -> list[Instance]:
        """What discovery hands out: enabled instances of the clusters (all when none)."""
        wanted = {c for c in clusters.split(",") if c}
        hosts = [h for h in self._all(ns, svc) if not wanted or h.cluster in wanted]
        # 1.4.8: protect threshold 0, so with no healthy instance all count as healthy.
        # 2.2.3 applies it only to a service with service metadata, which registering
        # instances does not create.
        if self.version == "1.4.8" and hosts and not any(h.healthy for h in hosts):
            hosts = [replace(h, healthy=True) for h in hosts]
        return [h for h in hosts if h.enabled and (h.healthy or not healthy_only)]

    # --------------------------------------------------------------- v1

    def _v1_register(self, req: Request) -> _Answer:
        self._register(req)
        return _Answer(200, "ok")

    def _v1_deregister(self, req: Request) -> _Answer:
        self._deregister(req)
        return _Answer(200, "ok")

    def _v1_update(self, req: Request) -> _Answer:
        self._update(req)
        return _Answer(200, "ok")

    def _v1_detail(self, req: Request) -> _Answer:
        svc, host = self._find(req)
        return _Answer(200, {"service": svc, "ip": host.ip, "port": host.port,
                             "clusterName": host.cluster, "weight": host.weight,
                             "healthy": host.healthy, "instanceId": host.instance_id,
                             "metadata": host.metadata})

    def _v1_list(self, req: Request) -> _Answer:
        ns, svc = self._grouped(req)
        clusters = req.params.get("clusters", "")
        healthy_only = self._flag(req.params.get("healthyOnly", "false"))
        hosts = self._hosts(ns, svc, clusters, healthy_only)
        now_ms = int(time.time() * 1000)
        if self.version == "1.4.8":
            if (ns, svc) not in self._services:
                return _Answer(200, {"name": svc, "clusters": clusters, "cacheMillis": 3000,
                                     "hosts": []})
            return _Answer(200, {
                "hosts": [{"ip": h.ip, "port": h.port, "valid": h.healthy, "healthy": h.healthy,
                           "marked": False, "instanceId": h.instance_id,
                           "metadata": h.metadata, "enabled": h.enabled, "weight": h.weight,
                           "clusterName": h.cluster, "serviceName": svc,
                           "ephemeral": h.ephemeral} for h in hosts],
                "dom": svc, "name": svc, "cacheMillis": 3000, "lastRefTime": now_ms,
                "checksum": secrets.token_hex(16), "useSpecifiedURL": False,
                "clusters": clusters, "env": "", "metadata": {}})
        return _Answer(200, self._service_info(svc, clusters, hosts))

    def _service_info(self, svc: str, clusters: str, hosts: list[Instance]) -> dict[str, Any]:
        """2.2.3's ServiceInfo, as listInstance returns it (name grouped for 1.x SDKs)."""
        return {"name": svc, "groupName": svc.split("@@")[0], "clusters": clusters,
                "cacheMillis": 10000, "hosts": [_pojo(h) for h in hosts],
                "lastRefTime": int(time.time() * 1000), "checksum": "", "allIPs": False,
                "reachProtectionThreshold": False, "valid": True}

    def _beat(self, req: Request) -> _Answer:
        """InstanceController.beat / InstanceOperatorClientImpl.handleBeat."""
        beat_text = req.params.get("beat", "")
        beat: dict[str, Any] | None = json.loads(beat_text) if beat_text.strip() else None
        cluster = req.params.get("clusterName", "").strip() or DEFAULT_CLUSTER
        ip = req.params.get("ip", "")
        port = int(req.params.get("port", "0") or 0)
        if beat is not None:
            cluster = beat.get("cluster") or cluster
            ip, port = beat["ip"], int(beat["port"])
        ns, svc = self._grouped(req)
        instances = self._services.get((ns, svc), {})
        found = [i for i in instances.values() if (i.ip, i.port) == (ip, port)
                 and i.via == "http" and (self.version == "2.2.3" or i.cluster == cluster)]
        interval = int(self.client_beat_interval * 1000)
        if not found:
            if beat is None:
                return _Answer(200, {"clientBeatInterval": interval, "code": RESOURCE_NOT_FOUND})
            # "The instance has been removed for health mechanism, perform data compensation"
            inst = Instance(ip=ip, port=port, cluster=cluster,
                            ephemeral=bool(beat.get("ephemeral", True)),
                            weight=float(beat.get("weight", 1.0)),
                            metadata=dict(beat.get("metadata") or {}))
            self._add(ns, svc, inst)
            found = [inst]
        for inst in found:  # ClientBeatProcessor: last beat and health, nothing else
            inst.last_beat = time.monotonic()
            inst.healthy = True
        own = self._effective(ns, found[0]).millis(BEAT_INTERVAL_KEY, 0)
        return _Answer(200, {"clientBeatInterval": own or interval, "code": OK,
                             "lightBeatEnabled": True})

    # --------------------------------------------------------------- v2

    def _v2(self, req: Request, action: Callable[[Request], Any]) -> _Answer:
        """InstanceForm.validate, then NacosApiExceptionHandler's way with errors."""
        for name, kind in (("serviceName", "String"), ("ip", "String"), ("port", "Integer")):
            if not req.params.get(name, "").strip():
                raise _result(f"Required parameter '{name}' type {kind} is not present",
                              10000, "parameter missing", 400)
        try:
            return _result(action(req))
        except _Answer as error:
            if isinstance(error.body, dict) and "code" in error.body:
                raise
            status = error.status
            code, abstract = {404: (20004, "resource not found")}.get(
                status, (21004, "instance error") if status == 400 else (30000, "server error"))
            raise _result(error.body, code, abstract, status) from None

    def _v2_register(self, req: Request) -> _Answer:
        return self._v2(req, _then_ok(self._register))

    def _v2_deregister(self, req: Request) -> _Answer:
        return self._v2(req, _then_ok(self._deregister))

    def _v2_update(self, req: Request) -> _Answer:
        return self._v2(req, _then_ok(lambda r: self._update(r, v2=True)))

    def _v2_detail(self, req: Request) -> _Answer:
        def detail(r: Request) -> dict[str, Any]:
            svc, host = self._find(r)
            return {"serviceName": svc, "ip": host.ip, "port": host.port,
                    "clusterName": host.cluster, "weight": host.weight,
                    "healthy": host.healthy, "instanceId": host.instance_id,
                    "metadata": host.metadata}
        return self._v2(req, detail)

    def _v2_list(self, req: Request) -> _Answer:
        if not req.params.get("serviceName", "").strip():
            raise _result("Required request parameter 'serviceName' for method parameter "
                          "type String is not present", 10000, "parameter missing", 400)
        ns, svc = self._grouped(req)
        clusters = req.params.get("clusterName", "")
        healthy_only = self._flag(req.params.get("healthyOnly", "false"))
        return _result(self._service_info(svc, clusters,
                                          self._hosts(ns, svc, clusters, healthy_only)))


def _then_ok(action: Callable[[Request], None]) -> Callable[[Request], str]:
    def act(req: Request) -> str:
        action(req)
        return "ok"
    return act


def _metadata_id(inst: Instance) -> str:
    return f"{inst.ip}:{inst.port}:{inst.cluster}"  # InstancePublishInfo.genMetadataId


def _pojo(h: Instance) -> dict[str, Any]:
    """com.alibaba.nacos.api.naming.pojo.Instance as Jackson writes it."""
    return {"instanceId": h.instance_id, "ip": h.ip, "port": h.port, "weight": h.weight,
            "healthy": h.healthy, "enabled": h.enabled, "ephemeral": h.ephemeral,
            "clusterName": h.cluster, "serviceName": h.service, "metadata": h.metadata,
            "instanceHeartBeatInterval": h.millis(BEAT_INTERVAL_KEY, 5000),
            "instanceHeartBeatTimeOut": h.millis(BEAT_TIMEOUT_KEY, 15000),
            "ipDeleteTimeout": h.millis(DELETE_TIMEOUT_KEY, 30000),
            "instanceIdGenerator": "simple"}


def _parse_metadata(text: str) -> dict[str, str]:
    """UtilsAndCommons.parseMetadata: a JSON object, or the old "k=v,k=v" form."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            return {str(k): str(v) for k, v in value.items()}
    except ValueError:
        pass
    pairs = {}
    for item in text.split(","):
        key, eq, val = item.partition("=")
        if not eq:
            raise _Answer(400, f"metadata format incorrect:{text}")
        pairs[key] = val
    return pairs


def _java_client_at_least_1(agent: str) -> bool:
    """ClientInfo: "Nacos-Java-Client:v1.4.8" is a Java client of version 1.4.8."""
    prefix = "Nacos-Java-Client:v"
    if not agent.startswith(prefix):
        return False
    major = agent[len(prefix):].split(".")[0]
    return major.isdigit() and int(major) >= 1


# ----------------------------------------------------------------- the client


class BeatClient:
    """A Nacos 1.x Java client (1.4.8) keeping one instance registered, in a thread.

    start() registers the instance (NamingProxy.registerService: POST
    /nacos/v1/ns/instance, parameters in the query string, "enable" for enabled), then
    the BeatReactor loop runs: after the instance's period (metadata
    preserved.heart.beat.interval in ms, else 5 s) it sends PUT
    /nacos/v1/ns/instance/beat, the first time with a "beat" form field (the BeatInfo
    JSON), then light (no body) once the server answers lightBeatEnabled=true; the next
    beat comes after the answer's clientBeatInterval.  An answer with code 20404 makes it
    register the instance again, with the weight and metadata it was started with.  With
    a username it logs in first and sends accessToken as a query parameter, as
    NamingProxy.injectSecurityInfo does.
    """

    USER_AGENT = "Nacos-Java-Client:v1.4.8"

    def __init__(self, server: str, service: str, ip: str, port: int, *,
                 group: str = DEFAULT_GROUP, namespace: str = DEFAULT_NAMESPACE,
                 cluster: str = DEFAULT_CLUSTER, weight: float = 1.0,
                 metadata: dict[str, str] | None = None, username: str | None = None,
                 password: str | None = None) -> None:
        self.server = server.rstrip("/")
        self.grouped = f"{group}@@{service}"
        self.group, self.namespace, self.cluster = group, namespace, cluster
        self.ip, self.port, self.weight = ip, port, weight
        self.metadata = dict(metadata or {})
        self.username, self.password = username, password
        self.token: str | None = None
        self.beats = 0  # beats answered
        self.codes: list[int] = []  # each beat answer's code
        self.reregistrations = 0  # registrations after a 20404
        self.errors: list[str] = []
        self._light = False
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> BeatClient:
        if self.username:
            self._login()
        self._register()
        self._thread.start()
        return self

    def stop(self, *, deregister: bool = False) -> None:
        self._stop.set()
        self._thread.join(5)
        if deregister:
            self._call("DELETE", "/v1/ns/instance", {
                "namespaceId": self.namespace, "serviceName": self.grouped,
                "clusterName": self.cluster, "ip": self.ip, "port": str(self.port),
                "ephemeral": "true"})

    def wait_beats(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` more beats were answered."""
        deadline = time.monotonic() + timeout
        with self._changed:
            target = self.beats + count
            while self.beats < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.beats} beats, wanted {target} "
                                         f"(errors: {self.errors[-3:]})")
                self._changed.wait(left)

    def _period(self) -> float:
        try:
            return int(self.metadata.get(BEAT_INTERVAL_KEY, 5000)) / 1000
        except ValueError:
            return 5.0

    def _loop(self) -> None:
        delay = self._period()
        while not self._stop.wait(delay):
            delay = self._period()
            try:
                answer = self._beat()
            except (OSError, ValueError) as exc:  # logged by the real client; next beat
                self.errors.append(str(exc))
                continue
            interval = int(answer.get("clientBeatInterval", 0))
            self._light = bool(answer.get("lightBeatEnabled", False))
            if interval > 0:
                delay = interval / 1000
            code = int(answer.get("code", OK))
            with self._changed:
                self.beats += 1
                self.codes.append(code)
                self._changed.notify_all()
            if code == RESOURCE_NOT_FOUND:
                try:
                    self._register()
                    self.reregistrations += 1
                except (OSError, ValueError) as exc:
                    self.errors.append(str(exc))

    def _beat(self) -> dict[str, Any]:
        params = {"namespaceId": self.namespace, "serviceName": self.grouped,
                  "clusterName": self.cluster, "ip": self.ip, "port": str(self.port)}
        form = None
        if not self._light:
            info = {"port": self.port, "ip": self.ip, "weight": self.weight,
                    "serviceName": self.grouped, "cluster": self.cluster,
                    "metadata": self.metadata, "scheduled": False,
                    "period": int(self._period() * 1000), "stopped": False}
            form = {"beat": json.dumps(info)}
        answer: dict[str, Any] = json.loads(self._call("PUT", "/v1/ns/instance/beat", params,
                                                       form))
        return answer

    def _register(self) -> None:
        body = self._call("POST", "/v1/ns/instance", {
            "namespaceId": self.namespace, "serviceName": self.grouped,
            "groupName": self.group, "clusterName": self.cluster, "ip": self.ip,
            "port": str(self.port), "weight": str(self.weight), "enable": "true",
            "healthy": "true", "ephemeral": "true", "metadata": json.dumps(self.metadata)})
        if body != "ok":
            raise ValueError(f"register answered {body!r}")

    def _login(self) -> None:
        body = self._call("POST", "/v1/auth/users/login", {"username": self.username or ""},
                          {"password": self.password or ""}, auth=False)
        self.token = json.loads(body)["accessToken"]

    def _call(self, method: str, path: str, params: dict[str, str],
              form: dict[str, str] | None = None, *, auth: bool = True) -> str:
        if auth and self.token:
            params = {**params, "accessToken": self.token}
        url = f"{self.server}{CONTEXT}{path}?{urllib.parse.urlencode(params)}"
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "User-Agent": self.USER_AGENT, "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return str(reply.read().decode())
        except urllib.error.HTTPError as exc:
            raise ValueError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:200]!r}") from None
